"""The least a DeepLIFT program computes, written by hand for the MNIST CNN: the first-call
floors of ``benchmarks/bench_compile.py`` (its ``hand_rescale`` and ``hand_reveal_cancel``
rows; RevealCancel's at the end of this file).

For a network of dense layers, convolutions and ReLUs, Rescale's scores are the gradient of the
network in which each ReLU's derivative is replaced by its secant ``m = Δy/Δx`` between input and
reference (``relu'(x)`` where ``Δx = 0``), times ``Δx``: one forward pass on the references, one
on the inputs, one backward pass per pair. Here that is a ``custom_vjp`` ReLU, ``jax.grad``,
two ``vmap``s and a mean over references — no guard for small ``Δx`` (docs/design.md §9.1), no
finite flag, no certificate, no batch-independence proof: what jaxlift's own program adds to
this is what keeps its scores exact or refused. The scores equal jaxlift's to float rounding
on the benchmark's inputs (checked by :func:`check`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _conv(h, layer):
    return jax.lax.conv_general_dilated(h, layer["kernel"], (2, 2), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + layer["bias"]


def _net(p, image, relu, target: int):
    """The MNIST CNN's logit ``target`` for one (28, 28, 1) image, ``relu(i, z)`` its i-th ReLU."""
    h = relu(0, _conv(image[None], p["conv2d"]))
    h = relu(1, _conv(h, p["conv2d_1"])).reshape(1, -1)
    h = relu(2, h @ p["dense"]["kernel"] + p["dense"]["bias"])
    return (h @ p["dense_1"]["kernel"] + p["dense_1"]["bias"])[0, target]


@jax.custom_vjp
def _secant_relu(z, z0):
    return jax.nn.relu(z)


def _secant_fwd(z, z0):
    dz = z - z0
    moved = dz != 0
    m = jnp.where(moved, (jax.nn.relu(z) - jax.nn.relu(z0)) / jnp.where(moved, dz, 1),
                  (z > 0).astype(z.dtype))
    return jax.nn.relu(z), m


def _secant_bwd(m, g):
    return g * m, None


_secant_relu.defvjp(_secant_fwd, _secant_bwd)


def hand_rescale(target: int):
    """``f(params, x, refs) -> (scores (N, 28, 28, 1), Δt (N,))``, averaged over references."""
    def reference_side(p, r):
        pre: list = []
        out = _net(p, r, lambda i, z: pre.append(z) or jax.nn.relu(z), target)
        return out, pre

    def pair(p, image, r, r_out, pre):
        t = lambda v: _net(p, v, lambda i, z: _secant_relu(z, pre[i]), target)  # noqa: E731
        value, grad = jax.value_and_grad(t)(image)
        return grad * (image - r), value - r_out

    return _over_pairs(reference_side, pair)


def _over_pairs(reference_side, pair):
    """``f(params, x, refs) -> (scores, Δt)``: ``reference_side(p, r) -> (t(r), its values)``
    once per reference, ``pair(p, x, r, t(r), values) -> (scores, Δt)`` per pair (a ``vmap``
    over references inside one over inputs), averaged over references."""
    def per_input(p, refs, image):
        r_out, values = jax.vmap(reference_side, in_axes=(None, 0))(p, refs)
        scores, delta = jax.vmap(pair, in_axes=(None, None, 0, 0, 0))(p, image, refs, r_out,
                                                                       values)
        return scores.mean(0), delta.mean(0)

    def f(params, x, refs):
        return jax.vmap(per_input, in_axes=(None, None, 0))(params["params"], refs, x)
    return f


def check(fn, params, x, refs, target: int, mode: str = "rescale") -> float:
    """The largest difference between the hand-written scores of ``mode`` and jaxlift's (``fn``
    the model's apply), over the largest score."""
    import jaxlift
    by_hand = {"rescale": hand_rescale, "reveal_cancel": hand_reveal_cancel}[mode]
    mine, _ = jax.jit(by_hand(target))(params, x, refs)
    theirs = jaxlift.attribute(fn, params, x, refs, target=target, mode=mode)
    return float(jnp.abs(mine - theirs).max() / jnp.abs(theirs).max())


# ---------------------------------------------------------------------------------------------
# RevealCancel by hand: the floor of the first call's reveal_cancel row

def _linear_maps(p):
    """The MNIST CNN's linear layers without their biases, in order: ``W·a`` as functions of
    one example's activation (so that ``jax.vjp`` gives their transposes), with ``|W|``'s."""
    def conv(kernel):
        return lambda h: jax.lax.conv_general_dilated(h, kernel, (2, 2), "VALID",
                                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def dense(kernel):
        return lambda h: h.reshape(1, -1) @ kernel
    layers = []
    for name, make in (("conv2d", conv), ("conv2d_1", conv), ("dense", dense),
                       ("dense_1", dense)):
        w = p[name]["kernel"]
        layers.append((make(w), make(jnp.abs(w)), p[name]["bias"]))
    return layers


def _reveal_cancel_relu(z0, up, down):
    """RevealCancel's ReLU (DeepLIFT, its eq. of Δy⁺ and Δy⁻): the parts of the output's
    difference and their multipliers ``Δy±/Δz±`` (the limit ``(f'(z0) + f'(z0 + Δz∓))/2``
    where ``Δz± = 0``)."""
    f = jax.nn.relu
    y0 = f(z0)
    dy_up = 0.5 * (f(z0 + up) - y0) + 0.5 * (f(z0 + down + up) - f(z0 + down))
    dy_down = 0.5 * (f(z0 + down) - y0) + 0.5 * (f(z0 + up + down) - f(z0 + up))

    def slope(dy, dz, other):
        limit = 0.5 * ((z0 > 0).astype(z0.dtype) + (z0 + other > 0).astype(z0.dtype))
        return jnp.where(dz != 0, dy / jnp.where(dz != 0, dz, 1), limit)
    return dy_up, dy_down, slope(dy_up, up, down), slope(dy_down, down, up)


def hand_reveal_cancel(target: int):
    """``f(params, x, refs) -> (scores (N, 28, 28, 1), Δt (N,))`` of RevealCancel, averaged over
    references: each linear layer splits its output's difference by the sign of each term
    ``w·Δa`` (DeepLIFT's linear rule: ``Δz± = (W·Δa ± |W|·|Δa|)/2``, two products), RevealCancel's
    ReLU splits again, and the multipliers go back through the transposed products (``m_a =
    Wᵀ·(m⁺ + m⁻)/2 + sign(Δa)·|W|ᵀ·(m⁺ − m⁻)/2``) — without jaxlift's guards, checks or proof."""
    def reference_side(p, r):
        zs, h = [], r[None]
        for i, (w, _, b) in enumerate(_linear_maps(p)):
            z = w(h) + b
            zs.append(z)
            h = jax.nn.relu(z) if i < 3 else z
        return h[0, target], zs

    def pair(p, image, r, r_out, zs):
        layers = _linear_maps(p)
        dx = (image - r)[None]
        da, steps = dx, []
        for i, (w, w_abs, _) in enumerate(layers):
            (ws, pull_w), (wd, pull_abs) = jax.vjp(w, da), jax.vjp(w_abs, jnp.abs(da))
            up, down = 0.5 * (ws + wd), 0.5 * (ws - wd)
            slopes = None
            if i < 3:
                up, down, m_up, m_down = _reveal_cancel_relu(zs[i], up, down)
                slopes = (m_up, m_down)
            steps.append((pull_w, pull_abs, jnp.sign(da), slopes))
            da = up + down
        delta = da[0, target]
        m_up = m_down = jnp.zeros_like(da).at[0, target].set(1)
        for pull_w, pull_abs, sign, slopes in reversed(steps):
            if slopes is not None:
                m_up, m_down = m_up * slopes[0], m_down * slopes[1]
            (ms,), (md,) = pull_w(0.5 * (m_up + m_down)), pull_abs(0.5 * (m_up - m_down))
            m_up = m_down = ms + sign * md
        return (m_up * dx)[0], delta

    return _over_pairs(reference_side, pair)
