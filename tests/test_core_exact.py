"""Exact values worked by hand: the linear rule, relu networks, the seed's saturation and
thresholding examples, and the max / product / quotient rules."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift

MODES = ["rescale", "reveal_cancel", "genomics_default"]


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def contribs(fn, x, r, **kw):
    return np.asarray(jaxlift.attribute(fn, None, jnp.asarray([x], jnp.float64),
                                        jnp.asarray([r], jnp.float64), **kw)[0])


@pytest.mark.parametrize("mode", MODES)
def test_linear_function_gives_w_times_delta(mode):
    w = jnp.array([2.0, -3.0, 0.5])
    fn = lambda p, xb: xb @ w + 7.0  # noqa: E731
    x, r = [1.0, 2.0, -4.0], [0.5, -1.0, 2.0]
    np.testing.assert_allclose(contribs(fn, x, r, mode=mode), np.asarray(w) * (np.array(x) - r),
                               rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_single_relu_by_hand(mode):
    # y = relu(x1 + x2 − 1); x = (1, 2): pre = 2, y = 2; r = (0, 0): pre = −1, y0 = 0.
    # m = Δy/Δpre = 2/3 ⇒ C = (2/3·1, 2/3·2). Both terms are positive, so RevealCancel agrees.
    fn = lambda p, xb: jax.nn.relu(xb[:, 0] + xb[:, 1] - 1.0)  # noqa: E731
    np.testing.assert_allclose(contribs(fn, [1.0, 2.0], [0.0, 0.0], mode=mode), [2 / 3, 4 / 3],
                               rtol=1e-12)


def test_two_layer_relu_network_by_hand():
    # h1 = relu(x1 − x2), h2 = relu(x1 + x2 − 2), y = 2·h1 + h2; x = (3, 1), r = (0, 0).
    # h1: pre 2 vs 0 → Δh1 = 2, m = 1.   h2: pre 2 vs −2 → Δh2 = 2, m = 2/4 = 1/2.
    # Δy = (2·2 + 2) − 0 = 6. Multipliers of the inputs (Δx = (3, 1)):
    #   through h1: m(x1) = 2·1·(+1) = 2, m(x2) = 2·1·(−1) = −2
    #   through h2: m(x1) = m(x2) = 1·(1/2) = 1/2
    # C = ((2 + 1/2)·3, (−2 + 1/2)·1) = (7.5, −1.5), summing to 6.
    fn = lambda p, xb: (2 * jax.nn.relu(xb[:, 0] - xb[:, 1])  # noqa: E731
                        + jax.nn.relu(xb[:, 0] + xb[:, 1] - 2.0))
    np.testing.assert_allclose(contribs(fn, [3.0, 1.0], [0.0, 0.0]), [7.5, -1.5], rtol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_saturation_example(mode):
    # Seed 001, Fig. 1: y = 1 − relu(1 − x1 − x2). At x = (1, 1) the gradient is 0, yet Δy = 1
    # against r = (0, 0): h = 1 − x1 − x2 goes 1 → −1 (Δh = −2), relu(h) goes 1 → 0 (m = 1/2),
    # so each input gets (−1)·(1/2)·(−1)·1 = 1/2.
    fn = lambda p, xb: 1.0 - jax.nn.relu(1.0 - xb[:, 0] - xb[:, 1])  # noqa: E731
    c = contribs(fn, [1.0, 1.0], [0.0, 0.0], mode=mode)
    np.testing.assert_allclose(c, [0.5, 0.5], rtol=1e-12)
    grad = jax.grad(lambda v: fn(None, v[None])[0])(jnp.array([1.0, 1.0]))
    np.testing.assert_array_equal(np.asarray(grad), [0.0, 0.0])


@pytest.mark.parametrize("eps", [1e-9, 1e-6, 1e-3, 0.1])
def test_thresholding_example_is_continuous(eps):
    # Seed 001, Fig. 2: y = relu(x − 10). At x = 10 + ε against r = 0, DeepLIFT gives C = ε
    # (continuous in ε), while gradient×input gives 10 + ε (a jump from 0 at x = 10).
    fn = lambda p, xb: jax.nn.relu(xb[:, 0] - 10.0)  # noqa: E731
    c = contribs(fn, [10.0 + eps], [0.0])
    np.testing.assert_allclose(c, [eps], rtol=1e-6)
    below = contribs(fn, [10.0 - eps], [0.0])
    np.testing.assert_array_equal(below, [0.0])
    gxi = jax.grad(lambda v: fn(None, v[None])[0])(jnp.array([10.0 + eps])) * (10.0 + eps)
    assert float(gxi[0]) > 10.0


def test_max_preserving_credits_input_argmax_when_delta_positive():
    # y = max(x1, x2): x = (3, 1) → 3; r = (0, 2) → 2; Δy = 1 goes to x1 (argmax of x): C = (1, 0).
    fn = lambda p, xb: jnp.maximum(xb[:, 0], xb[:, 1])  # noqa: E731
    np.testing.assert_allclose(contribs(fn, [3.0, 1.0], [0.0, 2.0]), [1.0, 0.0], rtol=1e-12)
    m = jaxlift.multipliers(fn, None, jnp.array([[3.0, 1.0]]), jnp.array([[0.0, 2.0]]))
    np.testing.assert_allclose(np.asarray(m[0]), [1 / 3, 0.0], rtol=1e-12)


def test_max_preserving_blames_reference_argmax_when_delta_negative():
    # x = (1, 1.5) → 1.5; r = (0, 2) → 2; Δy = −0.5 is blamed on x2 (argmax of r): C = (0, −0.5).
    fn = lambda p, xb: jnp.maximum(xb[:, 0], xb[:, 1])  # noqa: E731
    np.testing.assert_allclose(contribs(fn, [1.0, 1.5], [0.0, 2.0]), [0.0, -0.5], rtol=1e-12)


def test_max_gradient_mode_routes_to_input_argmax_and_breaks_summation():
    # gradient mode: m = 1 at the argmax of x: C = (Δx1, 0) = (3, 0) although Δy = 1
    # (documented: the reference's argmax differs from the input's).
    fn = lambda p, xb: jnp.maximum(xb[:, 0], xb[:, 1])  # noqa: E731
    c = contribs(fn, [3.0, 1.0], [0.0, 2.0], max_mode="gradient")
    np.testing.assert_allclose(c, [3.0, 0.0], rtol=1e-12)


def _pool(xb):
    return jax.lax.reduce_window(xb, -jnp.inf, jax.lax.max, (1, 2), (1, 2), "VALID")


def test_maxpool_ties_split_equally_and_sum_to_delta():
    # windows (2, 2) and (5, 1) against a zero reference: the tie shares Δy = 2 equally.
    fn = lambda p, xb: _pool(xb).sum(axis=1)  # noqa: E731
    np.testing.assert_allclose(contribs(fn, [2.0, 2.0, 5.0, 1.0], [0.0] * 4), [1.0, 1.0, 5.0, 0.0],
                               rtol=1e-12)


def test_maxpool_gradient_mode_equals_jax_gradient_times_delta():
    fn = lambda p, xb: _pool(xb).sum(axis=1)  # noqa: E731
    x, r = jnp.array([[3.0, 1.0, 0.5, 4.0]]), jnp.array([[0.0, 2.0, 1.0, 0.0]])
    m = jaxlift.multipliers(fn, None, x, r, max_mode="gradient")
    g = jax.grad(lambda v: fn(None, v[None])[0])(x[0])
    np.testing.assert_allclose(np.asarray(m[0]), np.asarray(g), rtol=1e-12)


def test_preserving_max_multipliers_lie_in_unit_interval():
    rng = np.random.default_rng(0)
    x, r = jnp.asarray(rng.normal(size=(4, 8))), jnp.asarray(rng.normal(size=(3, 8)))
    fn = lambda p, xb: _pool(xb).sum(axis=1)  # noqa: E731
    m = np.asarray(jaxlift.multipliers(fn, None, x, r, average_refs=False))
    assert m.min() >= 0.0 and m.max() <= 1.0 + 1e-12


def test_product_rule_is_the_shapley_split():
    # y = a·b, x = (2, 3), r = (1, 1): Δy = 5; m_a = (3 + 1)/2, m_b = (2 + 1)/2 ⇒ C = (2, 3).
    fn = lambda p, xb: xb[:, 0] * xb[:, 1]  # noqa: E731
    np.testing.assert_allclose(contribs(fn, [2.0, 3.0], [1.0, 1.0]), [2.0, 3.0], rtol=1e-12)


def test_quotient_rule_sums_to_delta():
    # y = a / b, x = (6, 3), r = (1, 2): Δy = 2 − 0.5 = 1.5;
    # m_a = ½(1/3 + 1/2) = 5/12 ⇒ C_a = 5·5/12 = 25/12; m_b = −(6 + 1)/(2·3·2) = −7/12 ⇒ C_b = −7/12.
    fn = lambda p, xb: xb[:, 0] / xb[:, 1]  # noqa: E731
    np.testing.assert_allclose(contribs(fn, [6.0, 3.0], [1.0, 2.0]), [25 / 12, -7 / 12], rtol=1e-12)


def test_stop_gradient_passes_multipliers_through():
    fn = lambda p, xb: 3.0 * jax.lax.stop_gradient(xb[:, 0]) + xb[:, 1]  # noqa: E731
    np.testing.assert_allclose(contribs(fn, [2.0, 1.0], [0.0, 0.0]), [6.0, 1.0], rtol=1e-12)


def test_batchnorm_like_negative_scale_keeps_summation_in_reveal_cancel():
    # a·x + b with a < 0 swaps the positive and negative parts before a relu.
    w = jnp.array([[1.0, -2.0], [0.5, 1.5]])
    fn = lambda p, xb: jax.nn.relu(-1.5 * (xb @ w) + 0.3).sum(axis=1)  # noqa: E731
    x, r = jnp.array([[1.0, -1.0]]), jnp.array([[0.2, 0.4]])
    c, d = jaxlift.attribute(fn, None, x, r, mode="reveal_cancel", return_delta=True)
    np.testing.assert_allclose(np.asarray(c.sum()), np.asarray(d.sum()), rtol=1e-12)
