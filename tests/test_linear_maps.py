"""Primitives that are linear maps or the identity, and running maxima, as models meet them:
Fourier transforms (``jnp.fft``: FNet's token mixing, spectral layers), linear solves with a
fixed matrix (``jnp.linalg.solve``, ``solve_triangular``), placement hints
(``with_sharding_constraint``, Flax's logical constraints, ``device_put`` inside ``fn``) and
``cummax``/``cummin``. Each was refused for want of a rule.

Each function is checked against the same function written with operations jaxlift already
had (a product with the DFT matrix or the inverse, nothing, prefix maxima): the same scores
(the same transpose, the same routing), not only the same sum — in Rescale, and in
RevealCancel where the two split alike. The solve's RevealCancel split differs from a product
with ``A⁻¹``'s entries (the generic split, ``A⁻¹`` is not formed), so there its scores must sum.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import jaxlift

RNG = np.random.default_rng(4)
W = RNG.normal(size=(6, 8))
A = np.triu(RNG.normal(size=(8, 8))) + 6 * np.eye(8)  # well conditioned, upper triangular
DFT = np.exp(-2j * np.pi * np.outer(np.arange(8), np.arange(8)) / 8)  # fft(h) = h @ DFT


def _fourier(p, xb):
    h = jnp.tanh(xb @ W)
    mixed = jnp.fft.fft(h).real + jnp.fft.irfft(jnp.fft.rfft(h) * 0.5, n=8)
    return jax.nn.relu(mixed).sum(1, keepdims=True)


def _fourier_by_matrix(p, xb):
    h = jnp.tanh(xb @ W)
    z = h.astype(DFT.dtype)  # complex, as the transforms' values are: the same splits
    mixed = (z @ DFT).real + (z * 0.5).real
    return jax.nn.relu(mixed).sum(1, keepdims=True)


def _placed(p, xb):
    mesh = Mesh(np.array(jax.devices()[:1]), ("d",))
    h = jax.lax.with_sharding_constraint(jnp.tanh(xb @ W), NamedSharding(mesh, PartitionSpec()))
    return jax.nn.relu(jax.device_put(h) - 0.2).sum(1, keepdims=True)


def _unplaced(p, xb):
    return jax.nn.relu(jnp.tanh(xb @ W) - 0.2).sum(1, keepdims=True)


def _running_max(p, xb):
    h = jnp.tanh(xb @ W)
    return (jax.lax.cummax(h, axis=1) - 0.5 * jax.lax.cummin(h, axis=1)).sum(1, keepdims=True)


def _prefix_max(p, xb):
    h = jnp.tanh(xb @ W)
    n = h.shape[1]
    return sum(jnp.max(h[:, :j + 1], 1) - 0.5 * jnp.min(h[:, :j + 1], 1)
               for j in range(n))[:, None]


def _solved(p, xb):
    b = jnp.tanh(xb @ W)
    x1 = jax.scipy.linalg.solve_triangular(A, b.T).T
    x2 = jnp.linalg.solve(A + A.T, b.T).T
    return jax.nn.relu(x1 + x2).sum(1, keepdims=True)


def _by_inverse(p, xb):
    b = jnp.tanh(xb @ W)
    inverse = np.linalg.inv(A) + np.linalg.inv(A + A.T)
    return jax.nn.relu(b @ inverse.T).sum(1, keepdims=True)


CASES = {"fourier": (_fourier, _fourier_by_matrix, True),
         "placement": (_placed, _unplaced, True),
         "running_max": (_running_max, _prefix_max, True),
         "solve": (_solved, _by_inverse, False)}


def _side_by_side(which: int):
    """One function of every case, each reading its own 6 of the input's features (so each
    slice's scores are its case's): one program per mode instead of one per case."""
    def fn(p, xb):
        return sum(CASES[name][which](p, xb[:, 6 * k:6 * k + 6])
                   for k, name in enumerate(CASES))
    return fn


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_the_same_scores_as_the_same_map_written_out(x64, mode):
    new, written_out = _side_by_side(0), _side_by_side(1)
    x = jnp.asarray(RNG.normal(size=(4, 6 * len(CASES))))
    r = jnp.asarray(RNG.normal(size=(3, 6 * len(CASES))) * 0.5)
    c, d = jaxlift.attribute(new, None, x, r, mode=mode, average_refs=False, return_delta=True)
    c_out, d_out = jaxlift.attribute(written_out, None, x, r, mode=mode, average_refs=False,
                                     return_delta=True)
    np.testing.assert_allclose(d, new(None, x)[:, None, 0] - new(None, r)[None, :, 0],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(d_out, d, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c.sum(-1), d, rtol=1e-10, atol=1e-12)
    for k, (name, (_, _, same_split)) in enumerate(CASES.items()):
        part = slice(6 * k, 6 * k + 6)
        assert float(jnp.abs(c[..., part]).max()) > 1e-2, name  # each case has a share
        if mode == "rescale" or same_split:
            np.testing.assert_allclose(c[..., part], c_out[..., part], rtol=1e-8, atol=1e-10,
                                       err_msg=name)


def test_a_solve_whose_matrix_depends_on_the_input_is_refused():
    def fn(p, xb):
        m = jnp.eye(6) * (2.0 + jnp.tanh(xb[:, :1, None]))  # a matrix per example, from x
        return jax.vmap(jnp.linalg.solve)(m, xb).sum(1, keepdims=True)
    x = jnp.asarray(RNG.normal(size=(2, 6)), jnp.float32)
    with pytest.raises(jaxlift.UnsupportedPrimitiveError,
                       match=r"'custom_linear_solve' .*test_linear_maps\.py.*matrix"):
        jaxlift.attribute(fn, None, x, jnp.zeros((1, 6), jnp.float32))
