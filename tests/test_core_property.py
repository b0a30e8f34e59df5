"""Summation-to-delta on random networks (hypothesis): Σ contributions = f(x) − f(r)."""
import jax
import jax.numpy as jnp
import pytest
from hypothesis import given, settings, strategies as st

import jaxlift
from oracles import assert_sums_to_delta, forward_rounding_scale
from zoo import (build_cnn, build_mlp, build_rnn, cnn_specs, inputs_and_refs, mlp_specs,
                 rnn_specs)

MODES = ["rescale", "reveal_cancel", "genomics_default"]
# A few draws each: tests/test_fuzz_exact.py runs ~2,300 random programs of every kind per run.
SETTINGS = settings(max_examples=2, deadline=None, derandomize=True)


def _target(kind, n_out):
    if kind == "softmax" and n_out > 1:
        return lambda o: jax.nn.softmax(o)[n_out - 1]
    return n_out - 1


def _check(fn, params, x_shape, seed, mode, target_kind, n_out, dtype):
    """ΣC = Δt within the README's bound for ``dtype`` (|ΣC − Δt| ≤ rtol·max(Σ|C|, |Δt|)
    + 64·eps·κ; κ computed only where the bound without it is missed)."""
    params = jax.tree_util.tree_map(lambda a: a.astype(dtype), params)
    x, refs = inputs_and_refs(seed, x_shape, dtype=dtype)
    target = _target(target_kind, n_out)
    contribs, delta = jaxlift.attribute(fn, params, x, refs, target=target,
                                        mode=mode, average_refs=False, return_delta=True)
    assert contribs.shape == (x.shape[0], refs.shape[0]) + x_shape
    assert bool(jnp.all(jnp.isfinite(contribs)))
    scalar = (lambda p, xb: jax.vmap(target)(fn(p, xb))[:, None]) if callable(target) else \
        (lambda p, xb: fn(p, xb)[:, target:target + 1])
    assert_sums_to_delta(contribs, delta, jnp.dtype(dtype).name,
                         kappa=lambda: forward_rounding_scale(scalar, params, x, refs, 0))
    # the deltas are not trivially zero: the check has teeth
    assert float(jnp.abs(delta).max()) > 1e-6


# Test budget: summation on random programs in the default run is tests/test_fuzz_exact.py's
# (~1,500 programs of every block kind, dtype and mode) and values are the oracles'
# (tests/test_oracle_*.py); these float64 draws (softmax targets, Flax-free zoo nets) run in
# the slow step, the float32 CNN draws below in both.
@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@SETTINGS
@given(spec=mlp_specs(), target_kind=st.sampled_from(["index", "softmax"]))
def test_mlp_summation_to_delta_float64(mode, spec, target_kind):
    fn, params, x_shape = build_mlp(spec)
    with jax.enable_x64(True):
        _check(fn, params, x_shape, spec["seed"], mode, target_kind, spec["n_out"], jnp.float64)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@SETTINGS
@given(spec=cnn_specs(), target_kind=st.sampled_from(["index", "softmax"]))
def test_cnn_summation_to_delta_float64(mode, spec, target_kind):
    fn, params, x_shape = build_cnn(spec)
    with jax.enable_x64(True):
        _check(fn, params, x_shape, spec["seed"], mode, target_kind, spec["n_out"], jnp.float64)


@settings(max_examples=2, deadline=None, derandomize=True)
@given(spec=cnn_specs(), mode=st.sampled_from(MODES))
def test_cnn_summation_to_delta_float32(spec, mode):
    """The README's float32 bound."""
    fn, params, x_shape = build_cnn(spec)
    _check(fn, params, x_shape, spec["seed"], mode, "index", spec["n_out"], jnp.float32)


def _rnn_case(spec, mode, target_kind):
    fn, params, x_shape = build_rnn(spec)
    with jax.enable_x64(True):
        _check(fn, params, x_shape, spec["seed"], mode, target_kind, spec["n_out"], jnp.float64)


_RNN_DRAWS = dict(spec=rnn_specs(), mode=st.sampled_from(MODES),
                  target_kind=st.sampled_from(["index", "softmax"]))


@pytest.mark.slow  # test budget: loops stay in tests/test_loops.py
@settings(max_examples=2, deadline=None, derandomize=True)
@given(**_RNN_DRAWS)
def test_rnn_summation_to_delta_float64(spec, mode, target_kind):
    """Through ``scan`` (LSTM/GRU/gated cells, reversed, unrolled), ``fori_loop`` and a live
    ``lax.cond``: ΣC = Δt within the README's float64 bound. Each draw compiles a loop (seconds),
    so the default run takes two; the slow run forty."""
    _rnn_case(spec, mode, target_kind)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, derandomize=True)
@given(**_RNN_DRAWS)
def test_rnn_summation_to_delta_float64_many(spec, mode, target_kind):
    _rnn_case(spec, mode, target_kind)
