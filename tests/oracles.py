"""Independent references for the tests: the README's summation bound, and DeepLIFT's rules for
dense networks written out in NumPy from their formulas (docs/design.md §8, the paper's linear rule and
RevealCancel), sharing no code with jaxlift's interpreter or rules.

The NumPy networks are ``h_{l+1} = f_l(h_l·W_l + b_l)`` with elementwise ``f_l`` (``None``:
identity), explained at ``t = h_L·v`` for one (input, reference) pair.
"""
from __future__ import annotations

import numpy as np

# README "Exact or refused": |ΣC − Δt| ≤ rtol·max(Σ|C|, |Δt|) + 64·eps·κ
RTOL = {"float64": 1e-10, "float32": 1e-5}
EPS = {"float64": float(np.finfo(np.float64).eps), "float32": float(np.finfo(np.float32).eps)}


def assert_sums_to_delta(c, delta, dtype: str = "float64", batch_dims: int | None = None,
                         kappa=0.0) -> None:
    """``Σ C = Δt`` within the README's bound, per pair: ``c`` has ``batch_dims`` leading axes
    (default: those of ``delta``) and ``delta`` their shape. ``kappa`` (per pair, or a scalar,
    or a function returning it, called only where the bound without it is missed): the
    forward-rounding scale ``κ`` of the README (:func:`forward_rounding_scale`)."""
    c = np.asarray(c, np.float64)
    delta = np.asarray(delta, np.float64)
    nb = delta.ndim if batch_dims is None else batch_dims
    flat = c.reshape(c.shape[:nb] + (-1,))
    total, size = flat.sum(-1), np.abs(flat).sum(-1)
    assert np.all(np.isfinite(total)), "non-finite scores"
    tol = RTOL[dtype] * np.maximum(size, np.abs(delta))
    gap = np.abs(total - delta)
    if np.any(gap > tol):
        k = kappa() if callable(kappa) else kappa
        tol = tol + 64 * EPS[dtype] * np.broadcast_to(np.asarray(k, np.float64), tol.shape)
    assert np.all(gap <= tol), (f"|ΣC − Δt| = {gap.max():.3e} above the README's {dtype} bound "
                                f"(tol {tol.ravel()[np.argmax(gap)]:.3e}; Δt {delta.ravel()[:4]})")


# --------------------------------------------------------------------------- activations

def relu(v):
    return np.maximum(v, 0.0)


def d_relu(v):
    return (np.asarray(v) > 0).astype(np.float64)


def d_tanh(v):
    return 1.0 - np.tanh(v) ** 2


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def d_sigmoid(v):
    s = sigmoid(v)
    return s * (1 - s)


def softplus(v):
    return np.logaddexp(0.0, v)


ACTS = {"relu": (relu, d_relu), "tanh": (np.tanh, d_tanh), "sigmoid": (sigmoid, d_sigmoid),
        "softplus": (softplus, sigmoid)}


def secant(f, df, z, z0):
    """Rescale's ``Δy/Δz``, the derivative where ``Δz = 0``."""
    dz = z - z0
    safe = np.where(dz == 0, 1.0, dz)
    return np.where(dz == 0, df(z), (f(z) - f(z0)) / safe)


def reveal_cancel_parts(f, df, z0, zp, zn):
    """The paper's RevealCancel on ``z = z0 + Δz⁺ + Δz⁻``:
    ``Δy⁺ = ½[f(z0+Δz⁺) − f(z0)] + ½[f(z0+Δz⁻+Δz⁺) − f(z0+Δz⁻)]`` (and ``Δy⁻`` alike),
    ``m± = Δy±/Δz±``, or where ``Δz± = 0`` its limit ``½[f'(z0) + f'(z0 + Δz∓)]``."""
    z = z0 + zp + zn
    yp = 0.5 * (f(z0 + zp) - f(z0)) + 0.5 * (f(z) - f(z0 + zn))
    yn = 0.5 * (f(z0 + zn) - f(z0)) + 0.5 * (f(z) - f(z0 + zp))
    mp = np.where(zp != 0, yp / np.where(zp != 0, zp, 1.0), 0.5 * (df(z0) + df(z0 + zn)))
    mn = np.where(zn != 0, yn / np.where(zn != 0, zn, 1.0), 0.5 * (df(z0) + df(z0 + zp)))
    return yp, yn, mp, mn


def term_split(W, dx):
    """The paper's linear rule: ``Δz⁺_j = Σ_i [w_ijΔx_i]⁺``, ``Δz⁻_j = Σ_i [w_ijΔx_i]⁻``."""
    terms = W * dx[:, None]
    return np.where(terms > 0, terms, 0.0).sum(0), np.where(terms < 0, terms, 0.0).sum(0)


def dense_backward_rc(W, dx, mp, mn):
    """Multipliers of a dense layer's input from its output's ``(m⁺, m⁻)``: a term
    ``w_ijΔx_i`` takes the multiplier of its sign, so ``m_x = W⁺m⁺ + W⁻m⁻`` where ``Δx > 0``,
    ``W⁻m⁺ + W⁺m⁻`` where ``Δx < 0``, and ``W(m⁺ + m⁻)/2`` where ``Δx = 0`` (no term: the
    mean of the two)."""
    wp, wn = np.maximum(W, 0), np.minimum(W, 0)
    up = wp @ mp + wn @ mn
    down = wn @ mp + wp @ mn
    zero = W @ (mp + mn) / 2
    return np.where(dx > 0, up, np.where(dx < 0, down, zero))


def forward(layers, x):
    h = np.asarray(x, np.float64)
    for W, b, act in layers:
        z = h @ W + b
        h = z if act is None else ACTS[act][0](z)
    return h


def mlp_multipliers(layers, v, x, r, mode: str):
    """Input multipliers of ``t = h_L·v`` for one pair (``mode``: rescale | reveal_cancel),
    and the per-layer record ``[(Δz⁺, Δz⁻, Δh, Δh⁺, Δh⁻)]`` (RevealCancel)."""
    hs, h0s = [np.asarray(x, np.float64)], [np.asarray(r, np.float64)]
    for W, b, act in layers:
        hs.append(hs[-1] @ W + b)
        h0s.append(h0s[-1] @ W + b)
        if act is not None:
            hs[-1], h0s[-1] = ACTS[act][0](hs[-1]), ACTS[act][0](h0s[-1])
    m = np.asarray(v, np.float64)  # multiplier of h_L (one per unit, both signs)
    parts = []
    for li in reversed(range(len(layers))):
        W, b, act = layers[li]
        h, h0 = hs[li], h0s[li]
        dx = h - h0
        z, z0 = h @ W + b, h0 @ W + b
        if act is None:
            mz_p = mz_n = m
        elif mode == "rescale":
            f, df = ACTS[act]
            mz_p = mz_n = m * secant(f, df, z, z0)
        else:
            f, df = ACTS[act]
            zp, zn = term_split(W, dx)
            yp, yn, mp, mn = reveal_cancel_parts(f, df, z0, zp, zn)
            parts.insert(0, (zp, zn, hs[li + 1] - h0s[li + 1], yp, yn))
            mz_p, mz_n = m * mp, m * mn
        if mode == "rescale":
            m = W @ mz_p
        else:
            m = dense_backward_rc(W, dx, mz_p, mz_n)
    return m, parts


def mlp_contributions(layers, v, x, r, mode: str):
    m, _ = mlp_multipliers(layers, v, x, r, mode)
    return m * (np.asarray(x, np.float64) - np.asarray(r, np.float64))


def forward_rounding_scale(fn, params, x, r, target):
    """The README's ``κ = |t| + Σ|∂t/∂θ·θ| + Σ|∂t/∂x·x|`` at each input and reference
    (``(N, K)``, in the dtype of the arrays given): how far rounding the forward pass of ``t``
    can move it, up to a factor of eps (first-order forward error analysis; the parameters
    include every bias and offset). ``x``: ``(N, *S)``, ``r``: ``(K, *S)``."""
    import jax
    import jax.numpy as jnp

    def t(p, v):
        return fn(p, v[None])[0, target] if target is not None else fn(p, v[None])[0]

    def kappa(v):
        gp, gv = jax.grad(t, argnums=(0, 1))(params, v)
        terms = jax.tree_util.tree_map(lambda g, a: jnp.abs(g * a).sum(), gp, params)
        return jnp.abs(t(params, v)) + sum(jax.tree_util.tree_leaves(terms)) + jnp.abs(gv * v).sum()

    kx, kr = jax.vmap(kappa)(x), jax.vmap(kappa)(r)
    return kx[:, None] + kr[None, :]
