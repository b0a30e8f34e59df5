"""Targets that differ per input (issue "For the people who use it, round three"): a list or
array of N class indices, ``"pred"`` and class differences per input — in ``attribute``,
``multipliers`` and ``attribute_dataset``, for DeepLIFT and for kernel methods."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.methods import interpreted

RNG = np.random.default_rng(0)
W1, W2 = RNG.normal(size=(5, 6)).astype(np.float32), RNG.normal(size=(6, 4)).astype(np.float32)
X = RNG.normal(size=(5, 5)).astype(np.float32)
REFS = (RNG.normal(size=(2, 5)) * 0.3).astype(np.float32)


def mlp(p, xb):
    return jnp.tanh(xb @ p[0]) @ p[1]


P = (W1, W2)


def one_at_a_time(targets, **kw):
    return np.stack([np.asarray(jaxlift.attribute(mlp, P, X[i:i + 1], REFS, target=int(t),
                                                  **kw))[0]
                     for i, t in enumerate(targets)])


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel", "gradient", "integrated_gradients"])
def test_one_class_per_input_equals_each_input_alone(mode):
    targets = [3, 0, 2, 2, 1]
    got = jaxlift.attribute(mlp, P, X, REFS, target=targets, mode=mode)
    np.testing.assert_allclose(got, one_at_a_time(targets, mode=mode), rtol=2e-5, atol=1e-6)
    arr = jaxlift.attribute(mlp, P, X, REFS, target=np.asarray(targets), mode=mode)
    np.testing.assert_array_equal(arr, got)


def test_pred_explains_each_inputs_own_argmax():
    pred = np.argmax(np.asarray(mlp(P, X)), axis=1)
    scores, delta = jaxlift.attribute(mlp, P, X, REFS, target="pred", return_delta=True)
    np.testing.assert_allclose(scores, one_at_a_time(pred), rtol=2e-5, atol=1e-6)
    out_x = np.asarray(mlp(P, X))[np.arange(5), pred]
    out_r = np.asarray(mlp(P, REFS))[:, pred].mean(0)
    np.testing.assert_allclose(delta, out_x - out_r, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.sum(1), delta, rtol=1e-4, atol=1e-5)
    grad = jaxlift.attribute(mlp, P, X, REFS, target="pred", mode="gradient")
    np.testing.assert_allclose(grad, one_at_a_time(pred, mode="gradient"), rtol=2e-5,
                               atol=1e-6)


def test_class_differences_per_input_and_a_0d_array_target():
    a, b = [3, 0, 2, 2, 1], [0, 1, 1, 3, 2]
    got = jaxlift.attribute(mlp, P, X, REFS, target=jaxlift.class_difference(a, b))
    want = one_at_a_time(a) - one_at_a_time(b)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(jaxlift.attribute(mlp, P, X, REFS, target=jnp.array(3)),
                                  jaxlift.attribute(mlp, P, X, REFS, target=3))


def test_multipliers_take_per_input_targets():
    targets = [1, 1, 0, 3, 2]
    got = jaxlift.multipliers(mlp, P, X, REFS, target=targets)
    want = np.stack([np.asarray(jaxlift.multipliers(mlp, P, X[i:i + 1], REFS, target=t))[0]
                     for i, t in enumerate(targets)])
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)


def test_other_targets_reuse_the_compiled_program():
    jaxlift.attribute(mlp, P, X, REFS, target=[0, 1, 2, 3, 0])
    before = interpreted.compiled_program.cache_info().misses
    jaxlift.attribute(mlp, P, X, REFS, target=[3, 3, 1, 0, 2])
    assert interpreted.compiled_program.cache_info().misses == before


def test_chunks_and_attribute_dataset_cut_the_targets_with_the_inputs(tmp_path):
    targets = [3, 0, 2, 2, 1]
    whole = jaxlift.attribute(mlp, P, X, REFS, target=targets)
    np.testing.assert_allclose(jaxlift.attribute(mlp, P, X, REFS, target=targets, batch_size=4),
                               whole, rtol=1e-6, atol=1e-7)
    out = jaxlift.attribute_dataset(mlp, P, X, REFS, target=targets, out=tmp_path / "s",
                                    chunk_size=2, quiet=True)
    np.testing.assert_allclose(jaxlift.open_scores(out)["scores"], whole, rtol=1e-6, atol=1e-7)


def test_bad_per_input_targets_are_named():
    with pytest.raises(ValueError, match="3 classes for 5 inputs"):
        jaxlift.attribute(mlp, P, X, REFS, target=[0, 1, 2])
    with pytest.raises(ValueError, match="target 7 of input 1 is out of range"):
        jaxlift.attribute(mlp, P, X, REFS, target=[0, 7, 1, 1, 1])
    with pytest.raises(TypeError, match="one int class index per input"):
        jaxlift.attribute(mlp, P, X, REFS, target=[0.5, 1.0, 1, 1, 1])
    with pytest.raises(ValueError, match="unknown target 'predicted'"):
        jaxlift.attribute(mlp, P, X, REFS, target="predicted")
