"""The two gating rules for a gate·signal product (docs/design.md §11.3): the Shapley midpoint (exact,
the default) and gate-as-weight (Arras et al. 2017: ``m_s = g``, ``m_g = 0``), whose
completeness gap is exactly ``s0·Δg`` per product — so it is exact where the reference's
signal is zero, and not elsewhere."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from tests.test_loops import _params, gru, lstm

MODES = ["rescale", "reveal_cancel"]


def gated(p, xb):
    """y = σ(a·x₀) · tanh(b·x₁): a gate on x₀ times a signal on x₁."""
    return jax.nn.sigmoid(p["a"] * xb[:, 0]) * jnp.tanh(p["b"] * xb[:, 1])


def complement_gated(p, xb):
    """y = (1 − σ(a·x₀)) · tanh(b·x₁): the GRU's update form; the gate is ``1 − σ``."""
    return (1 - jax.nn.sigmoid(p["a"] * xb[:, 0])) * jnp.tanh(p["b"] * xb[:, 1])


def two_gates(p, xb):
    return jax.nn.sigmoid(p["a"] * xb[:, 0]) * jax.nn.sigmoid(p["b"] * xb[:, 1])


P = {"a": 1.3, "b": -0.7}
X = np.array([[0.5, 1.2], [-1.0, 0.3], [2.0, -0.4]])
R = np.array([[0.1, -0.6], [0.0, 0.0]])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fn,gate_fn", [
    (gated, lambda p, v: jax.nn.sigmoid(p["a"] * v)),
    (complement_gated, lambda p, v: 1 - jax.nn.sigmoid(p["a"] * v))])
def test_gate_as_weight_gap_is_reference_signal_times_gate_difference(x64, fn, gate_fn, mode):
    x, r = jnp.asarray(X), jnp.asarray(R)
    c, delta = jaxlift.attribute(fn, P, x, r, mode=mode, gating="gate_as_weight",
                                 average_refs=False, return_delta=True)
    assert c.shape == (3, 2, 2)
    # the gate's input gets nothing; the signal's input gets g·Δs
    np.testing.assert_array_equal(np.asarray(c[..., 0]), 0)
    g = gate_fn(P, x[:, None, 0])
    s, s0 = jnp.tanh(P["b"] * x[:, None, 1]), jnp.tanh(P["b"] * r[None, :, 1])
    np.testing.assert_allclose(c[..., 1], g * (s - s0), rtol=1e-12, atol=1e-14)
    gap = delta - c.sum(-1)
    np.testing.assert_allclose(gap, s0 * (g - gate_fn(P, r[None, :, 0])),
                               rtol=1e-10, atol=1e-14)
    assert np.abs(np.asarray(gap)).max() > 1e-3  # a reference with s0 ≠ 0 leaves a gap


@pytest.mark.parametrize("mode", MODES)
def test_shapley_gating_is_exact_and_the_default(x64, mode):
    x, r = jnp.asarray(X), jnp.asarray(R)
    c, delta = jaxlift.attribute(gated, P, x, r, mode=mode, average_refs=False,
                                 return_delta=True)
    np.testing.assert_allclose(c.sum(-1), delta, rtol=1e-12, atol=1e-14)
    c2 = jaxlift.attribute(gated, P, x, r, mode=mode, average_refs=False,
                           gating="shapley")
    np.testing.assert_array_equal(np.asarray(c), np.asarray(c2))
    assert np.abs(np.asarray(c[..., 0])).max() > 1e-3  # the gate gets its share


def test_a_product_of_two_gates_keeps_the_exact_rule(x64):
    c, delta = jaxlift.attribute(two_gates, P, jnp.asarray(X), jnp.asarray(R),
                                 gating="gate_as_weight", average_refs=False,
                                 return_delta=True)
    np.testing.assert_allclose(c.sum(-1), delta, rtol=1e-12, atol=1e-14)


def _zero_bias(p):
    return {**p, "b": jnp.zeros_like(p["b"])}


@pytest.mark.parametrize("cell,mode", [
    (lstm, "rescale"),
    pytest.param(gru, "reveal_cancel", marks=pytest.mark.slow),
    pytest.param(lstm, "reveal_cancel", marks=pytest.mark.slow),
    pytest.param(gru, "rescale", marks=pytest.mark.slow)])
def test_gate_as_weight_through_a_scanned_cell(x64, cell, mode):
    """In an LSTM/GRU with no biases, a zero reference and zero initial state every signal of
    the reference is 0 (tanh(0), c₀ = 0, h₀ = 0), so gate-as-weight is exact; with biases it
    is not, and the gap shows. The Shapley rule is exact in both."""
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(3, 6, 3)))
    ref = jnp.zeros((1, 6, 3))
    p = _params(seed=2)
    target = 1
    c, delta = jaxlift.attribute(cell, _zero_bias(p), x, ref, mode=mode, target=target,
                                 gating="gate_as_weight", return_delta=True)
    np.testing.assert_allclose(c.sum((1, 2)), delta, rtol=1e-10, atol=1e-12)
    shapley = jaxlift.attribute(cell, _zero_bias(p), x, ref, mode=mode, target=target)
    assert np.abs(np.asarray(c - shapley)).max() > 1e-4  # a different rule, not a no-op
    p = {**p, "b": p["b"] + 0.5}
    c, delta = jaxlift.attribute(cell, p, x, ref, mode=mode, target=target,
                                 gating="gate_as_weight", return_delta=True)
    gap = np.abs(np.asarray(delta - c.sum((1, 2))))
    assert np.isfinite(np.asarray(c)).all() and gap.max() > 1e-4
    c, delta = jaxlift.attribute(cell, p, x, ref, mode=mode, target=target,
                                 return_delta=True)
    np.testing.assert_allclose(c.sum((1, 2)), delta, rtol=1e-10, atol=1e-12)


def test_gating_options_are_checked():
    x, r = jnp.asarray(X, jnp.float32), jnp.asarray(R, jnp.float32)
    with pytest.raises(ValueError, match="unknown gating 'gates'.*shapley, gate_as_weight"):
        jaxlift.attribute(gated, P, x, r, gating="gates")
    with pytest.raises(ValueError, match="mode 'integrated_gradients' has no gating rule"):
        jaxlift.attribute(gated, P, x, r, mode="integrated_gradients",
                          gating="gate_as_weight")


def test_token_scores_sum_the_embedding_axis():
    s = jnp.arange(24.0).reshape(2, 3, 4)
    t = jaxlift.token_scores({"a": s, "b": -s})
    np.testing.assert_array_equal(t["a"], s.sum(-1))
    assert t["b"].shape == (2, 3) and float(t["b"].sum()) == -float(s.sum())


def test_a_composite_of_ones_own_chooses_the_rules():
    """mode= takes a Composite: Rescale at every nonlinearity and the original's argmax route at
    max, spelled out, equals rescale with max_mode="gradient"."""
    from jaxlift.rules import maxrule, rescale
    from jaxlift.rules.composites import Composite, is_nonlinearity, primitive_in

    def pooled(p, xb):
        return jnp.max(jax.nn.relu(xb * p["a"]).reshape(xb.shape[0], 2, 1), axis=(1, 2))
    x = jnp.asarray([[1.0, 2.0], [3.0, -1.0]])
    r = jnp.asarray([[2.5, 0.5]])
    mine = Composite("rescale+argmax", ((primitive_in("reduce_max"), maxrule.MAX_GRADIENT),
                                        (is_nonlinearity, rescale.RESCALE)))
    ours = jaxlift.attribute(pooled, P, x, r, mode=mine)
    np.testing.assert_allclose(ours, jaxlift.attribute(pooled, P, x, r, max_mode="gradient"))
    assert not np.allclose(ours, jaxlift.attribute(pooled, P, x, r))  # argmax moved: differs
