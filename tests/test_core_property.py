"""Summation-to-delta on random networks (hypothesis): Σ contributions = f(x) − f(r)."""
import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings, strategies as st

import jaxlift
from zoo import (build_cnn, build_mlp, build_rnn, cnn_specs, inputs_and_refs, mlp_specs,
                 rnn_specs)

MODES = ["rescale", "reveal_cancel", "genomics_default"]
# A few draws each: tests/test_fuzz_exact.py runs ~2,300 random programs of every kind per run.
SETTINGS = settings(max_examples=2, deadline=None, derandomize=True)


def _target(kind, n_out):
    if kind == "softmax" and n_out > 1:
        return lambda o: jax.nn.softmax(o)[n_out - 1]
    return n_out - 1


def _check(fn, params, x_shape, seed, mode, target_kind, n_out, dtype, tol):
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    x, refs = inputs_and_refs(seed, x_shape, dtype=dtype)
    contribs, delta = jaxlift.attribute(fn, params, x, refs, target=_target(target_kind, n_out),
                                        mode=mode, average_refs=False, return_delta=True)
    assert contribs.shape == (x.shape[0], refs.shape[0]) + x_shape
    total = contribs.reshape(contribs.shape[:2] + (-1,)).sum(-1)
    scale = 1 + jnp.abs(delta)
    if dtype == jnp.float32:  # float32: rounding grows with the size of the terms that cancel
        scale = scale + jnp.abs(contribs).reshape(total.shape + (-1,)).sum(-1)
    err = jnp.abs(total - delta) / scale
    assert bool(jnp.all(jnp.isfinite(contribs)))
    assert float(err.max()) <= tol, (float(err.max()), mode)
    # the deltas are not trivially zero: the check has teeth
    assert float(jnp.abs(delta).max()) > 1e-6


@pytest.mark.parametrize("mode", ["rescale", pytest.param("reveal_cancel", marks=pytest.mark.slow),
                                  "genomics_default"])
@SETTINGS
@given(spec=mlp_specs(), target_kind=st.sampled_from(["index", "softmax"]))
def test_mlp_summation_to_delta_float64(mode, spec, target_kind):
    fn, params, x_shape = build_mlp(spec)
    with jax.enable_x64(True):
        _check(fn, params, x_shape, spec["seed"], mode, target_kind, spec["n_out"], jnp.float64, 1e-6)


@pytest.mark.parametrize("mode", ["rescale", pytest.param("reveal_cancel", marks=pytest.mark.slow),
                                  "genomics_default"])
@SETTINGS
@given(spec=cnn_specs(), target_kind=st.sampled_from(["index", "softmax"]))
def test_cnn_summation_to_delta_float64(mode, spec, target_kind):
    fn, params, x_shape = build_cnn(spec)
    with jax.enable_x64(True):
        _check(fn, params, x_shape, spec["seed"], mode, target_kind, spec["n_out"], jnp.float64, 1e-6)


@settings(max_examples=2, deadline=None, derandomize=True)
@given(spec=cnn_specs(), mode=st.sampled_from(MODES))
def test_cnn_summation_to_delta_float32(spec, mode):
    """float32 bound: |Σ C − Δf| ≤ 1e-4·(1 + |Δf| + Σ|C|)."""
    fn, params, x_shape = build_cnn(spec)
    _check(fn, params, x_shape, spec["seed"], mode, "index", spec["n_out"], jnp.float32, 1e-4)


def _rnn_case(spec, mode, target_kind):
    fn, params, x_shape = build_rnn(spec)
    with jax.enable_x64(True):
        _check(fn, params, x_shape, spec["seed"], mode, target_kind, spec["n_out"], jnp.float64,
               1e-10)


_RNN_DRAWS = dict(spec=rnn_specs(), mode=st.sampled_from(MODES),
                  target_kind=st.sampled_from(["index", "softmax"]))


@pytest.mark.slow  # test budget: loops stay in tests/test_loops.py
@settings(max_examples=2, deadline=None, derandomize=True)
@given(**_RNN_DRAWS)
def test_rnn_summation_to_delta_float64(spec, mode, target_kind):
    """Through ``scan`` (LSTM/GRU/gated cells, reversed, unrolled), ``fori_loop`` and a live
    ``lax.cond``: |ΣC − Δt| ≤ 1e-10·(1 + |Δt|) in float64. Each draw compiles a loop (seconds),
    so the default run takes two; the slow run forty."""
    _rnn_case(spec, mode, target_kind)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True)
@given(**_RNN_DRAWS)
def test_rnn_summation_to_delta_float64_many(spec, mode, target_kind):
    _rnn_case(spec, mode, target_kind)
