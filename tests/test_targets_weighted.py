"""Per-input targets are data (one-hot weight rows): an output the target does not read — a
−inf logit masked out — cannot make the target, Δt or the certificate NaN."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift

W = jax.random.normal(jax.random.key(0), (6, 5))
V = jax.random.normal(jax.random.key(1), (5, 4))
X = jax.random.normal(jax.random.key(2), (3, 6))
R = jnp.zeros((2, 6))


@pytest.mark.parametrize("target", [[2, 2, 2], 2])  # per input, and one class (run as data)
def test_a_minus_inf_output_the_target_does_not_read_leaves_it_finite(target):
    def fn(p, xb):  # class 0 masked out (−inf) for every example: Σ seed·o would be NaN
        logits = jnp.tanh(xb @ p[0]) @ p[1]
        return jnp.concatenate([jnp.full_like(logits[:, :1], -jnp.inf), logits[:, 1:]], axis=1)
    scores, delta = jaxlift.attribute(fn, (W, V), X, R, target=target, return_delta=True)
    assert np.isfinite(np.asarray(scores)).all()
    want = jnp.tanh(X @ W) @ V[:, 2] - jnp.tanh(R[:1] @ W) @ V[:, 2]
    np.testing.assert_allclose(np.asarray(delta), np.asarray(want), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(scores).sum(-1), np.asarray(delta), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("target", [[1, 7, 1], 7])
def test_an_out_of_range_class_is_refused_by_name(target):
    with pytest.raises(ValueError, match="out of range"):
        jaxlift.attribute(lambda p, xb: xb @ p[0], (W,), X, R, target=target)


@pytest.mark.parametrize("mode", ["integrated_gradients", "occlusion"])
def test_the_kernel_methods_weigh_per_input_targets_the_same_way(mode):
    """The kernel methods' per-input targets (their Δt, the batch-of-two check) read the same
    NaN-free weighting: a −inf class the target does not read leaves every score finite."""
    def fn(p, xb):
        logits = jnp.tanh(xb @ p[0]) @ p[1]
        return jnp.concatenate([jnp.full_like(logits[:, :1], -jnp.inf), logits[:, 1:]], axis=1)
    scores, delta = jaxlift.attribute(fn, (W, V), X, R, target=[2, 1, 2], mode=mode,
                                      return_delta=True)
    assert np.isfinite(np.asarray(scores)).all()
    want = [float((jnp.tanh(X[i] @ W) - jnp.tanh(R[0] @ W)) @ V[:, c]) for i, c in
            enumerate([2, 1, 2])]
    np.testing.assert_allclose(np.asarray(delta), want, rtol=1e-5, atol=1e-6)
