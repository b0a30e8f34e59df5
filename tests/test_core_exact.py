"""Exact values worked by hand: the linear rule, relu networks, the seed's saturation and
thresholding examples, and the max rule (more of every rule family, products, quotients, pooling
ties, selects, steps and logic included: tests/test_oracle_rules.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift

MODES = ["rescale", "reveal_cancel", "genomics_default"]


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)


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
    np.testing.assert_allclose(c, [(10.0 + eps) - 10.0], rtol=1e-12)  # ε as float64 holds it
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


def test_stop_gradient_passes_multipliers_through():
    fn = lambda p, xb: 3.0 * jax.lax.stop_gradient(xb[:, 0]) + xb[:, 1]  # noqa: E731
    np.testing.assert_allclose(contribs(fn, [2.0, 1.0], [0.0, 0.0]), [6.0, 1.0], rtol=1e-12)


def _relu_slope(v):
    return (np.asarray(v) > 0).astype(np.float64)


def _rc_multipliers(z0, zp, zn, yp, yn):
    """m± = Δy±/Δz±; where a part is 0, its limit ½[f'(z0) + f'(z0 + other part)] (relu)."""
    lim_p = 0.5 * (_relu_slope(z0) + _relu_slope(z0 + zn))
    lim_n = 0.5 * (_relu_slope(z0) + _relu_slope(z0 + zp))
    mp = np.where(zp != 0, yp / np.where(zp != 0, zp, 1), lim_p)
    mn = np.where(zn != 0, yn / np.where(zn != 0, zn, 1), lim_n)
    return mp, mn


def _paper_reveal_cancel_dense_relu(W, b, x, r):
    """The paper's linear rule + RevealCancel for t = Σ_j relu(z_j), z = x·W + b, in numpy,
    term by term: Δz⁺_j = Σ_i 1{w_ijΔx_i > 0} w_ijΔx_i; C_i = Σ_j w_ijΔx_i·m±_j by the sign of
    the term."""
    W, b, x, r = (np.asarray(a, np.float64) for a in (W, b, x, r))
    dx = x - r
    terms = W * dx[:, None]  # (i, j)
    zp = np.where(terms > 0, terms, 0).sum(0)
    zn = np.where(terms < 0, terms, 0).sum(0)
    z0 = r @ W + b
    f = lambda v: np.maximum(v, 0)  # noqa: E731
    yp = 0.5 * (f(z0 + zp) - f(z0)) + 0.5 * (f(z0 + zn + zp) - f(z0 + zn))
    yn = 0.5 * (f(z0 + zn) - f(z0)) + 0.5 * (f(z0 + zp + zn) - f(z0 + zp))
    mp, mn = _rc_multipliers(z0, zp, zn, yp, yn)
    return (np.where(terms > 0, terms * mp, 0) + np.where(terms < 0, terms * mn, 0)).sum(1)


def test_reveal_cancel_matches_the_papers_rule_term_by_term():
    rng = np.random.default_rng(3)
    W, b = rng.normal(size=(5, 4)), rng.normal(size=4)
    x, r = rng.normal(size=5), rng.normal(size=5)
    fn = lambda p, xb: jax.nn.relu(xb @ p[0] + p[1]).sum(1)  # noqa: E731
    c = jaxlift.attribute(fn, (jnp.asarray(W), jnp.asarray(b)), jnp.asarray(x[None]),
                          jnp.asarray(r[None]), mode="reveal_cancel")
    np.testing.assert_allclose(np.asarray(c[0]), _paper_reveal_cancel_dense_relu(W, b, x, r),
                               rtol=1e-10, atol=1e-12)


def test_reveal_cancel_through_two_dense_layers_matches_the_papers_rule():
    # second layer: its multipliers m⁺ ≠ m⁻ reach the first layer's RevealCancel relu
    rng = np.random.default_rng(4)
    W1, b1, W2 = rng.normal(size=(4, 3)), rng.normal(size=3), rng.normal(size=(3, 2))
    x, r = rng.normal(size=4), rng.normal(size=4)
    fn = lambda p, xb: jax.nn.relu(jax.nn.relu(xb @ p[0] + p[1]) @ p[2]).sum(1)  # noqa: E731
    c, d = jaxlift.attribute(fn, tuple(map(jnp.asarray, (W1, b1, W2))), jnp.asarray(x[None]),
                             jnp.asarray(r[None]), mode="reveal_cancel", return_delta=True)
    # paper, by hand in numpy: layer-2 multipliers per hidden unit, then layer 1 term by term
    h, h0 = np.maximum(x @ W1 + b1, 0), np.maximum(r @ W1 + b1, 0)
    dh = h - h0
    t2 = W2 * dh[:, None]
    z0 = h0 @ W2
    zp, zn = np.where(t2 > 0, t2, 0).sum(0), np.where(t2 < 0, t2, 0).sum(0)
    f = lambda v: np.maximum(v, 0)  # noqa: E731
    yp = 0.5 * (f(z0 + zp) - f(z0)) + 0.5 * (f(z0 + zp + zn) - f(z0 + zn))
    yn = 0.5 * (f(z0 + zn) - f(z0)) + 0.5 * (f(z0 + zp + zn) - f(z0 + zp))
    m2p, m2n = _rc_multipliers(z0, zp, zn, yp, yn)
    up = (np.where(W2 > 0, W2 * m2p, 0) + np.where(W2 < 0, W2 * m2n, 0)).sum(1)  # Δh > 0
    down = (np.where(W2 < 0, W2 * m2p, 0) + np.where(W2 > 0, W2 * m2n, 0)).sum(1)  # Δh < 0
    m_h = np.where(dh > 0, up, np.where(dh < 0, down, (W2 * (m2p + m2n) / 2).sum(1)))
    t1 = W1 * (x - r)[:, None]
    z10 = r @ W1 + b1
    z1p, z1n = np.where(t1 > 0, t1, 0).sum(0), np.where(t1 < 0, t1, 0).sum(0)
    y1p = 0.5 * (f(z10 + z1p) - f(z10)) + 0.5 * (f(z10 + z1p + z1n) - f(z10 + z1n))
    y1n = 0.5 * (f(z10 + z1n) - f(z10)) + 0.5 * (f(z10 + z1p + z1n) - f(z10 + z1p))
    m1p, m1n = _rc_multipliers(z10, z1p, z1n, y1p, y1n)
    m1p, m1n = m1p * m_h, m1n * m_h
    expected = (np.where(t1 > 0, t1 * m1p, 0) + np.where(t1 < 0, t1 * m1n, 0)).sum(1)
    np.testing.assert_allclose(np.asarray(c[0]), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(c.sum()), float(d[0]), rtol=1e-10)
