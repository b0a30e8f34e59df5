"""Structural operations that select or repeat elements: ``unstack`` (``jnp.unstack``,
Haiku's ``static_unroll``), ``tile`` and ``scatter`` with fixed indices (``x.at[i].set(v)``,
and ``dynamic_update_slice`` under ``vmap``, as ``from_equinox`` makes of it).

Each is linear (every output element is one input element), so its scores must be those of
the same function written with operations jaxlift already had (slices, concatenations,
selects), in every mode: the same split, not only the same sum.
"""
from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift

RNG = np.random.default_rng(0)
W = jnp.asarray(RNG.normal(size=(5, 5)), jnp.float32)
X = jnp.asarray(RNG.normal(size=(3, 4, 5)), jnp.float32)
REFS = jnp.asarray(RNG.normal(size=(2, 4, 5)), jnp.float32)


def _unstacked(p, xb):
    return sum(jnp.tanh(v @ W) * (k + 1) for k, v in enumerate(jnp.unstack(xb, axis=1))).sum(1)


def _sliced(p, xb):
    return sum(jnp.tanh(xb[:, k] @ W) * (k + 1) for k in range(xb.shape[1])).sum(1)


def _tiled(p, xb):
    return jnp.tanh(jnp.tile(xb, (1, 2, 1)) @ W)[:, 3:6].sum((1, 2))


def _concatenated(p, xb):
    return jnp.tanh(jnp.concatenate([xb, xb], axis=1) @ W)[:, 3:6].sum((1, 2))


def _set_at(p, xb):
    h = xb.at[:, 1].set(jnp.tanh(xb[:, 0]))
    return jax.nn.relu(h @ W).sum((1, 2))


def _selected(p, xb):
    row = (jnp.arange(xb.shape[1]) == 1)[None, :, None]
    h = jnp.where(row, jnp.tanh(xb[:, :1]), xb)
    return jax.nn.relu(h @ W).sum((1, 2))


def _updated_under_vmap(p, xb):
    h = jax.vmap(lambda v: jax.lax.dynamic_update_slice(v, jnp.tanh(v[:2]), (2, 0)))(xb)
    return jax.nn.relu(h @ W).sum((1, 2))


def _concatenated_update(p, xb):
    h = jnp.concatenate([xb[:, :2], jnp.tanh(xb[:, :2])], axis=1)
    return jax.nn.relu(h @ W).sum((1, 2))


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
@pytest.mark.parametrize("new, known", [(_unstacked, _sliced), (_tiled, _concatenated),
                                        (_set_at, _selected),
                                        (_updated_under_vmap, _concatenated_update)],
                         ids=["unstack", "tile", "scatter", "dynamic_update_slice-vmapped"])
def test_a_selection_scores_as_the_same_function_written_with_slices(new, known, mode):
    np.testing.assert_allclose(new(None, X), known(None, X), rtol=1e-6)
    got, delta = jaxlift.attribute(new, None, X, REFS, mode=mode, average_refs=False,
                                   return_delta=True)
    want = jaxlift.attribute(known, None, X, REFS, mode=mode, average_refs=False)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.reshape(got.shape[:2] + (-1,)).sum(-1), delta,
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_haiku_static_unroll_scores_as_dynamic_unroll(mode):
    """``hk.static_unroll`` unstacks the sequence; ``hk.dynamic_unroll`` scans it."""
    def net(unroll):
        def f(s):
            core = hk.LSTM(4)
            out, _ = unroll(core, jnp.swapaxes(s, 0, 1), core.initial_state(s.shape[0]))
            return hk.Linear(1)(out[-1])[:, 0]
        return hk.without_apply_rng(hk.transform(f))

    static, dynamic = net(hk.static_unroll), net(hk.dynamic_unroll)
    params = static.init(jax.random.key(0), X)
    got, delta = jaxlift.attribute(static.apply, params, X, REFS, mode=mode, return_delta=True)
    want = jaxlift.attribute(dynamic.apply, params, X, REFS, mode=mode)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.sum((1, 2)), delta, rtol=1e-4, atol=1e-5)
