"""benchmarks/hand_rescale.py, the first-call benchmark's floor, computes jaxlift's Rescale
scores: the benchmark compares programs that compute the same thing."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.hand_rescale import check, hand_rescale, hand_reveal_cancel
from jaxlift.models.mnist import MnistCNN


def _sums_to_delta(by_hand, mode):
    """``by_hand(3)``'s scores on a seeded MNIST CNN: jaxlift's ``mode`` to 1e-5 of the
    largest, and summing to the targets' differences."""
    model = MnistCNN()
    params = model.init(jax.random.PRNGKey(3), jnp.zeros((1, 28, 28, 1)))
    x = jax.random.uniform(jax.random.PRNGKey(4), (3, 28, 28, 1))
    refs = jnp.zeros((2, 28, 28, 1)) + jnp.array([0.0, 0.2])[:, None, None, None]
    fn = functools.partial(model.apply, logits=True)
    assert check(fn, params, x, refs, target=3, mode=mode) < 1e-5
    scores, delta = by_hand(3)(params, x, refs)
    out = fn(params, x)[:, 3][:, None] - fn(params, refs)[:, 3][None, :]
    np.testing.assert_allclose(delta, out.mean(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.reshape(3, -1).sum(1), delta, rtol=1e-4, atol=1e-5)
    return scores, (params, x, refs)


def test_the_hand_written_rescale_gives_jaxlifts_scores():
    _sums_to_delta(hand_rescale, "rescale")


def test_the_hand_written_reveal_cancel_gives_jaxlifts_scores():
    """The reveal_cancel floor (`hand_reveal_cancel`: the sign split of each layer's terms,
    RevealCancel's ReLU, the transposed products) computes jaxlift's RevealCancel scores."""
    scores, (params, x, refs) = _sums_to_delta(hand_reveal_cancel, "reveal_cancel")
    rescale, _ = hand_rescale(3)(params, x, refs)  # the two modes differ here
    assert not np.allclose(np.asarray(scores), np.asarray(rescale), rtol=1e-3, atol=1e-6)
