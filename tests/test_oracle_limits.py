"""Oracles that do not go through DeepLIFT's own formulas: limits and definitions.

* As the reference approaches the input, Rescale's multipliers (secants Δy/Δx) approach the
  gradient at the midpoint, to second order (smooth functions), and the near-zero guard keeps
  them there when Δx is so small that the secant is rounding noise (float64 at 1e-8, float32
  at 1e-5); RevealCancel's approach it to first order.
* Hypothetical contributions equal their definition — what position l would contribute if it
  held letter a — computed by brute force: a fresh forward pass per one-hot substitution
  (where the model is affine over the one-hot inputs), or with the paper's multipliers in
  NumPy (tests/oracles.py), never with ``jaxlift.multipliers``.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from oracles import mlp_multipliers

MODES = ["rescale", "reveal_cancel"]


# ------------------------------------------------------------ multipliers → the gradient

def _smooth(p, xb):
    h = jnp.tanh(xb @ p[0] + 0.1)
    h = jax.nn.softplus(h @ p[1]) + jax.nn.sigmoid(xb @ p[0])[:, :1]
    return h[:, 0]


def _smooth_case(dtype):
    rng = np.random.default_rng(0)
    p = (jnp.asarray(rng.normal(size=(4, 6)) / 2, dtype),
         jnp.asarray(rng.normal(size=(6, 1)) / 2, dtype))
    x, u = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    grad = jax.vmap(jax.grad(lambda v: _smooth(p, v[None])[0]))
    return p, x, u, grad


def _relative_error(m, g):
    return float(jnp.abs(m - g).max() / jnp.abs(g).max())


@pytest.mark.parametrize("mode", MODES)
def test_multipliers_approach_the_gradient_float64(mode, x64):
    """r = x + ε·u: Rescale's multipliers equal ∇t((x + r)/2) up to O(ε²) (a secant of a
    smooth function is its midpoint slope to second order); RevealCancel's up to O(ε). At
    ε = 1e-8 the secant's own rounding (~1e-8 relative) would show: the near-zero guard takes
    the slope ½[f'(x) + f'(x0)] there."""
    p, x, u, grad = _smooth_case(jnp.float64)
    xx = jnp.asarray(x)
    refs = jnp.stack([jnp.asarray(x + eps * u) for eps in (1e-2, 1e-3, 1e-4, 1e-8)], axis=1)
    m = jaxlift.multipliers(_smooth, p, xx, refs, mode=mode, average_refs=False)
    for k, eps in enumerate((1e-2, 1e-3, 1e-4, 1e-8)):
        err = _relative_error(m[:, k], grad((xx + refs[:, k]) / 2))
        if mode == "rescale":
            assert err <= max(0.1 * eps ** 2, 1e-13), (eps, err)
        elif eps >= 1e-4:
            assert err <= 1e-2 * eps, (eps, err)
    # and the gradient at x itself, to first order
    assert _relative_error(m[:, 2], grad(xx)) <= 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_float32_multipliers_near_the_input_are_the_gradient(mode):
    """float32, references 1e-5 from the input: Δy/Δx would carry ~eps·|y|/|Δy| ≈ 1e-2 of
    rounding (more through cancelling layers); the near-zero guard takes the slope where the
    secant is only noise, and the multipliers stay within 1e-4 of ∇t."""
    p, x, u, grad = _smooth_case(jnp.float32)
    xx = jnp.asarray(x, jnp.float32)
    r = jnp.asarray(x + 1e-5 * u, jnp.float32)
    m = jaxlift.multipliers(_smooth, p, xx, r[:, None], mode=mode)
    assert _relative_error(m, grad(xx)) <= 1e-4, _relative_error(m, grad(xx))


# --------------------------------------------------- hypothetical contributions, by brute force

L, A, W, F = 8, 4, 3, 4


def _conv_params(rng, biases):
    k = rng.uniform(-1, 1, size=(W, A, F))
    return {"k": k, "c": np.asarray(biases, np.float64), "w": rng.normal(size=((L - W + 1) * F, 2))}


def seq_model(p, x):                                  # (B, L, A) → (B, 2)
    h = jax.lax.conv_general_dilated(x, p["k"], (1,), "VALID",
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    h = jax.nn.relu(h + p["c"]).reshape(x.shape[0], -1)
    return h @ p["w"]


def _np_model(p, x):
    """``seq_model`` in NumPy, for any leading axes of ``x`` (…, L, A)."""
    z = sum(np.einsum("...la,af->...lf", x[..., j:j + L - W + 1, :], p["k"][j]) for j in range(W))
    h = np.maximum(z + p["c"], 0)
    return h.reshape(h.shape[:-2] + (-1,)) @ p["w"]


def _conv_as_dense(p):
    """The convolution as a (L·A, (L − W + 1)·F) matrix (the NumPy oracle's dense layer)."""
    m = np.zeros((L, A, L - W + 1, F))
    for o in range(L - W + 1):
        for j in range(W):
            m[o + j, :, o, :] = p["k"][j]
    return m.reshape(L * A, -1)


def _sequences(rng, n=2, k=3, changed=2):
    """One-hot inputs and, per input, references equal to it but at ``changed`` positions:
    many windows (and their relu units) do not move, Δz = 0."""
    x = np.eye(A)[rng.integers(0, A, size=(n, L))]
    refs = np.repeat(x[:, None], k, axis=1)
    for i in range(n):
        for j in range(k):
            for pos in rng.choice(L, size=changed, replace=False):
                refs[i, j, pos] = np.eye(A)[(int(np.argmax(x[i, pos])) + 1 + j) % A]
    return x, refs


@pytest.mark.parametrize("mode", MODES)
def test_hypothetical_contributions_are_forward_differences_where_the_model_is_affine(mode, x64):
    """With half the filters always on (bias +5 > |Σ k|) and half always off, ``t`` is affine
    over one-hot inputs and DeepLIFT's multipliers are its gradient, Δz = 0 or not; the
    hypothetical contribution of letter a at position l is then exactly
    ``mean_k [t(x with l := a) − t(x with l := r_k[l])]``: two forward passes per
    substitution."""
    rng = np.random.default_rng(11)
    p = _conv_params(rng, [5.0, 5.0, -5.0, -5.0])
    x, refs = _sequences(rng)
    hyp = jaxlift.hypothetical_contributions(seq_model, jax.tree_util.tree_map(jnp.asarray, p),
                                             jnp.asarray(x), jnp.asarray(refs), target=1,
                                             mode=mode)
    want = np.zeros(x.shape)
    for i in range(x.shape[0]):
        for pos in range(L):
            for a in range(A):
                sub = np.repeat(x[i][None], refs.shape[1], axis=0)   # one per reference
                sub[:, pos] = np.eye(A)[a]
                ref_letter = np.repeat(x[i][None], refs.shape[1], axis=0)
                ref_letter[:, pos] = refs[i, :, pos]
                want[i, pos, a] = np.mean(_np_model(p, sub)[:, 1] - _np_model(p, ref_letter)[:, 1])
    np.testing.assert_allclose(hyp, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_hypothetical_contributions_match_their_definition_with_oracle_multipliers(mode, x64):
    """A model with kinks crossed and units that do not move: the definition
    ``hyp[l, a] = mean_k Σ_c (e_a[c] − r_k[l, c])·m_k[l, c]`` with the multipliers of the
    paper's rules computed in NumPy (tests/oracles.py)."""
    rng = np.random.default_rng(12)
    p = _conv_params(rng, rng.normal(size=F) * 0.5)
    x, refs = _sequences(rng, changed=3)
    hyp = jaxlift.hypothetical_contributions(seq_model, jax.tree_util.tree_map(jnp.asarray, p),
                                             jnp.asarray(x), jnp.asarray(refs), target=0,
                                             mode=mode)
    layers = [(_conv_as_dense(p), np.tile(p["c"], L - W + 1), "relu")]
    want = np.zeros(x.shape)
    for i in range(x.shape[0]):
        for k in range(refs.shape[1]):
            m, _ = mlp_multipliers(layers, p["w"][:, 0], x[i].ravel(), refs[i, k].ravel(), mode)
            m = m.reshape(L, A)
            want[i] += (m - (refs[i, k] * m).sum(-1, keepdims=True)) / refs.shape[1]
    np.testing.assert_allclose(hyp, want, rtol=1e-10, atol=1e-12)
    # the forward model of the oracle is the model
    np.testing.assert_allclose(_np_model(p, x), seq_model(p, jnp.asarray(x)), rtol=1e-12)
