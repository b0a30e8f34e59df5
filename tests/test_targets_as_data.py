"""An int target of a vector output runs as data (one-hot weights, the per-input targets'
program): another class reuses the compiled program, with the same scores as the class picked
inside the program (an output the target does not read, and a class out of range:
tests/test_targets_weighted.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.methods import interpreted

W = jax.random.normal(jax.random.key(0), (6, 5))
V = jax.random.normal(jax.random.key(1), (5, 4))
X = jax.random.normal(jax.random.key(2), (3, 6))
R = jnp.zeros((2, 6))


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_another_class_compiles_nothing_and_scores_as_the_class_picked_inside(mode):
    seen = []

    def fn(p, xb):
        seen.append(xb.shape)
        return jnp.tanh(xb @ p[0]) @ p[1]
    first = jaxlift.attribute(fn, (W, V), X, R, target=1, mode=mode)
    misses = interpreted.compiled_program.cache_info().misses
    seen.clear()
    other, delta = jaxlift.attribute(fn, (W, V), X, R, target=3, mode=mode, return_delta=True)
    assert seen == [] and interpreted.compiled_program.cache_info().misses == misses
    picked = jaxlift.attribute(fn, (W, V), X, R, target=lambda o: o[3], mode=mode)
    np.testing.assert_allclose(np.asarray(other), np.asarray(picked), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(other).sum(-1), np.asarray(delta), rtol=1e-5,
                               atol=1e-6)
    assert not np.allclose(np.asarray(first), np.asarray(other))


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_pred_shares_the_program_of_a_class_and_scores_each_inputs_argmax(mode):
    """``target="pred"`` runs as data too (rows asking for the predicted class, resolved inside
    the program): after it, a class or per-input classes compile nothing, and back again; its
    scores are those of each input's argmax given as per-input classes."""
    seen = []

    def fn(p, xb):
        seen.append(xb.shape)
        return jnp.tanh(xb @ p[0]) @ p[1]
    x = jnp.concatenate([X, -X, 2 * X])  # inputs whose predicted classes differ
    argmax = np.asarray(fn((W, V), x)).argmax(-1)
    assert len(set(argmax.tolist())) > 1
    pred, delta = jaxlift.attribute(fn, (W, V), x, R, target="pred", mode=mode,
                                    return_delta=True)
    misses = interpreted.compiled_program.cache_info().misses
    seen.clear()
    one = jaxlift.attribute(fn, (W, V), x, R, target=1, mode=mode)
    given = jaxlift.attribute(fn, (W, V), x, R, target=list(argmax), mode=mode)
    again = jaxlift.attribute(fn, (W, V), x, R, target="pred", mode=mode)
    assert seen == [] and interpreted.compiled_program.cache_info().misses == misses
    np.testing.assert_array_equal(np.asarray(pred), np.asarray(given))
    np.testing.assert_array_equal(np.asarray(pred), np.asarray(again))
    assert not np.allclose(np.asarray(pred), np.asarray(one))
    out = np.asarray(fn((W, V), x))
    np.testing.assert_allclose(np.asarray(delta), out[np.arange(len(x)), argmax]
                               - np.asarray(fn((W, V), R[:1]))[0, argmax], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(pred).sum(-1), np.asarray(delta), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_pred_as_data_in_half_precision_scores_each_inputs_argmax(dtype):
    """The rows asking for the predicted class are float32 NaN; the argmax is taken of the
    half-precision outputs, as the class picked inside the program was."""
    def fn(p, xb):
        return jnp.tanh(xb @ p[0]) @ p[1]
    params = (W.astype(dtype), V.astype(dtype))
    x = jnp.concatenate([X, -X]).astype(dtype)
    r = R.astype(dtype)
    argmax = np.asarray(fn(params, x).astype(jnp.float32)).argmax(-1)
    pred, delta = jaxlift.attribute(fn, params, x, r, target="pred", mode="reveal_cancel",
                                    return_delta=True)
    given = jaxlift.attribute(fn, params, x, r, target=list(argmax), mode="reveal_cancel")
    np.testing.assert_array_equal(np.asarray(pred, np.float32), np.asarray(given, np.float32))
    np.testing.assert_allclose(np.asarray(pred, np.float32).sum(-1),
                               np.asarray(delta, np.float32), rtol=1e-4, atol=1e-5)
