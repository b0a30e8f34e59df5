"""An int target of a vector output runs as data (one-hot weights, the per-input targets'
program): another class reuses the compiled program, with the same scores as the class picked
inside the program, and an output the target does not read cannot make it NaN."""
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


def test_a_minus_inf_output_the_target_does_not_read_leaves_it_finite():
    def fn(p, xb):  # class 0 masked out (−inf) for every example: Σ seed·o would be NaN
        logits = jnp.tanh(xb @ p[0]) @ p[1]
        return jnp.concatenate([jnp.full_like(logits[:, :1], -jnp.inf), logits[:, 1:]], axis=1)
    scores, delta = jaxlift.attribute(fn, (W, V), X, R, target=2, return_delta=True)
    assert np.isfinite(np.asarray(scores)).all()
    want = jnp.tanh(X @ W) @ V[:, 2] - jnp.tanh(R[:1] @ W) @ V[:, 2]
    np.testing.assert_allclose(np.asarray(delta), np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(scores).sum(-1), np.asarray(delta), rtol=1e-5,
                               atol=1e-6)


def test_an_out_of_range_class_is_refused_by_name():
    with pytest.raises(ValueError, match="out of range"):
        jaxlift.attribute(lambda p, xb: xb @ p[0], (W,), X, R, target=7)
