"""The gradient and perturbation modes of jaxlift.baselines, through jaxlift.attribute, and
hypothetical contributions."""
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.methods.integrated_gradients import IG_METHODS, quadrature


pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)


def relu_mlp(p, x):
    h = jax.nn.relu(x @ p["w1"] + p["b1"])
    h = jax.nn.relu(h @ p["w2"] + p["b2"])
    return h @ p["w3"]


def smooth_mlp(p, x):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    h = jax.nn.softplus(h @ p["w2"] + p["b2"])
    return h @ p["w3"]


def linear(p, x):
    return x @ p["w3"][:5] + 0.5


def _params(seed=0):
    rng = np.random.default_rng(seed)
    n = lambda *s: jnp.asarray(rng.normal(size=s))  # noqa: E731
    return {"w1": n(5, 8), "b1": n(8), "w2": n(8, 6), "b2": n(6), "w3": n(6, 3)}


def _data(seed=1, n=3, k=2):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.normal(size=(n, 5))), jnp.asarray(rng.normal(size=(k, 5)))


def _jax_grad(fn, p, x, i):
    return jax.vmap(jax.grad(lambda xe: fn(p, xe[None])[0, i]))(x)


# ---------------------------------------------------------------------------------------------
# gradient, grad_times_input

def test_gradient_and_grad_times_input_equal_jax_grad():
    p, (x, refs) = _params(), _data()
    g = _jax_grad(relu_mlp, p, x, 1)
    got = jaxlift.attribute(relu_mlp, p, x, None, target=1, mode="gradient")
    np.testing.assert_allclose(got, g, rtol=1e-13, atol=1e-15)
    got = jaxlift.attribute(relu_mlp, p, x, refs, target=1, mode="grad_times_input")
    np.testing.assert_allclose(got, g * x, rtol=1e-13, atol=1e-15)
    m = jaxlift.multipliers(relu_mlp, p, x, refs, target=1, mode="grad_times_input")
    np.testing.assert_allclose(m, g, rtol=1e-13, atol=1e-15)


def test_gradient_shapes_all_targets_and_refs():
    p, (x, refs) = _params(), _data()
    allg = jaxlift.attribute(relu_mlp, p, x, refs, target="all", mode="gradient",
                             average_refs=False)
    assert allg.shape == (3, 2, 3, 5)
    for i in range(3):
        np.testing.assert_allclose(allg[:, 0, i], _jax_grad(relu_mlp, p, x, i), rtol=1e-13)
        np.testing.assert_allclose(allg[:, 1, i], allg[:, 0, i])   # refs only shape it
    _, delta = jaxlift.attribute(relu_mlp, p, x, refs, target=0, mode="gradient",
                                 return_delta=True)
    expected = relu_mlp(p, x)[:, 0] - relu_mlp(p, refs)[:, 0].mean()
    np.testing.assert_allclose(delta, expected, rtol=1e-12)


def test_gradient_pytree_inputs():
    def two(p, x):
        return (x["a"] ** 2).sum(-1, keepdims=True) + 3 * x["b"][:, :1]
    x = {"a": jnp.array([[1.0, 2.0]]), "b": jnp.array([[5.0, 6.0, 7.0]])}
    g = jaxlift.attribute(two, None, x, None, mode="gradient")
    np.testing.assert_allclose(g["a"], [[2.0, 4.0]])
    np.testing.assert_allclose(g["b"], [[3.0, 0.0, 0.0]])


# ---------------------------------------------------------------------------------------------
# guided backprop

@jax.custom_vjp
def _guided_relu(v):
    return jnp.maximum(v, 0)


_guided_relu.defvjp(lambda v: (jnp.maximum(v, 0), v),
                    lambda v, g: (jnp.where(v > 0, jnp.maximum(g, 0), 0.0),))


def test_guided_backprop_matches_hand_written_guided_relu():
    p, (x, _) = _params(), _data()

    def guided_model(p, x):
        h = _guided_relu(x @ p["w1"] + p["b1"])
        h = _guided_relu(h @ p["w2"] + p["b2"])
        return h @ p["w3"]
    for i in range(3):
        want = _jax_grad(guided_model, p, x, i)
        got = jaxlift.attribute(relu_mlp, p, x, None, target=i, mode="guided_backprop")
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    # a smooth network has no relu: guided backprop is the gradient
    got = jaxlift.attribute(smooth_mlp, p, x, None, target=0, mode="guided_backprop")
    np.testing.assert_allclose(got, _jax_grad(smooth_mlp, p, x, 0), rtol=1e-12)


def test_guided_backprop_max_pool_routes_to_argmax():
    def pool(p, x):                         # (B, 4) → relu → max over pairs → weights
        h = jax.nn.relu(x)
        m = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2), (1, 2), "VALID")
        return m @ jnp.array([1.0, -1.0])
    x = jnp.array([[1.0, 3.0, 2.0, -1.0]])
    got = jaxlift.attribute(pool, None, x, None, mode="guided_backprop")
    # gradient (0, 1, −1, 0); guided clamps the negative multiplier at the relu
    np.testing.assert_allclose(got, [[0.0, 1.0, 0.0, 0.0]])


# ---------------------------------------------------------------------------------------------
# integrated gradients

def test_quadrature_rules():
    for method in IG_METHODS:
        a, w = quadrature(method, 8)
        assert a.shape == w.shape == (8,) and np.isclose(w.sum(), 1.0)
        if method not in ("riemann_left", "riemann_right"):   # exact for ∫α dα = ½
            assert np.isclose((w * a).sum(), 0.5)
    np.testing.assert_allclose(quadrature("riemann_left", 4)[0], [0, .25, .5, .75])
    np.testing.assert_allclose(quadrature("riemann_right", 4)[0], [.25, .5, .75, 1])


def test_integrated_gradients_converges():
    p, (x, refs) = _params(), _data()
    gaps = {}
    for steps in (4, 16, 64):
        c, d = jaxlift.attribute(smooth_mlp, p, x, refs, target=2, mode="integrated_gradients",
                                 mode_options={"steps": steps, "method": "riemann_middle"},
                                 return_delta=True)
        gaps[steps] = float(np.abs(jaxlift.completeness_gap(c, d)).max())
    # the midpoint rule is second order on a smooth network: ×4 steps → ≈ ×16 smaller gap
    assert gaps[16] < gaps[4] / 8 and gaps[64] < gaps[16] / 8, gaps
    c, d = jaxlift.attribute(smooth_mlp, p, x, refs, target=2, mode="integrated_gradients",
                             mode_options={"steps": 40}, return_delta=True)  # Gauss–Legendre
    assert np.abs(jaxlift.completeness_gap(c, d)).max() < 1e-9 * (1 + np.abs(d).max())
    # relu network: kinks make it first order, but it still closes
    c, d = jaxlift.attribute(relu_mlp, p, x, refs, target=2, mode="integrated_gradients",
                             mode_options={"steps": 2000, "method": "riemann_trapezoid"},
                             return_delta=True)
    assert np.abs(jaxlift.completeness_gap(c, d)).max() < 1e-2 * (1 + np.abs(d).max())


def test_integrated_gradients_linear_is_exact_and_multipliers():
    p, (x, refs) = _params(), _data()
    c = jaxlift.attribute(linear, p, x, refs, target=0, mode="integrated_gradients",
                          mode_options={"steps": 3, "method": "riemann_left"},
                          average_refs=False)
    w = p["w3"][:5, 0]
    np.testing.assert_allclose(c, w * (x[:, None] - refs[None]), rtol=1e-12)
    m = jaxlift.multipliers(relu_mlp, p, x, refs, target=0, mode="integrated_gradients",
                            mode_options={"steps": 8}, average_refs=False)
    c = jaxlift.attribute(relu_mlp, p, x, refs, target=0, mode="integrated_gradients",
                          mode_options={"steps": 8}, average_refs=False)
    np.testing.assert_allclose(c, m * (x[:, None] - refs[None]), rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# occlusion

def test_occlusion_by_hand():
    def f(p, x):                       # y = x0·x1 + x2
        return x[:, 0] * x[:, 1] + x[:, 2]
    x, r = jnp.array([[2.0, 3.0, 4.0]]), jnp.zeros((1, 3))
    # window 1: C_i = y(x) − y(x with i := 0) = (6, 6, 4)
    c = jaxlift.attribute(f, None, x, r, mode="occlusion", mode_options={"window": 1})
    np.testing.assert_allclose(c, [[6.0, 6.0, 4.0]])
    # window 2, stride 1: windows {0,1}: 10 − 4 = 6, {1,2}: 10 − 0 = 10;
    # feature 0 in one window (6), feature 1 in both ((6 + 10)/2 = 8), feature 2 in one (10)
    c = jaxlift.attribute(f, None, x, r, mode="occlusion", mode_options={"window": 2})
    np.testing.assert_allclose(c, [[6.0, 8.0, 10.0]])
    # window 2, stride 2 (Captum's count ⌈(3−2)/2⌉+1 = 2): {0,1} → 6, then {2} clipped → 4
    c = jaxlift.attribute(f, None, x, r, mode="occlusion",
                          mode_options={"window": 2, "stride": 2})
    np.testing.assert_allclose(c, [[6.0, 6.0, 4.0]])


def test_occlusion_images_and_all_targets():
    def img(p, x):                     # (B, 4, 5, 2) → 2 outputs
        return jnp.stack([jnp.tanh(x).sum((1, 2, 3)), (x[..., 0] ** 2).sum((1, 2))], -1)
    rng = np.random.default_rng(0)
    x, r = jnp.asarray(rng.normal(size=(2, 4, 5, 2))), jnp.asarray(rng.normal(size=(3, 4, 5, 2)))
    c = jaxlift.attribute(img, None, x, r, target="all", mode="occlusion",
                          mode_options={"window": (2, 2, 2), "stride": (1, 2, 2),
                                        "perturbations_per_eval": 4}, average_refs=False)
    assert c.shape == (2, 3, 2, 4, 5, 2)
    # windows of one feature on an additive model: occlusion is exact
    c1 = jaxlift.attribute(img, None, x, r, target=0, mode="occlusion",
                           mode_options={"window": 1}, average_refs=False)
    np.testing.assert_allclose(c1, jnp.tanh(x)[:, None] - jnp.tanh(r)[None], rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Shapley value sampling

def _exact_shapley(v, n):
    """Shapley values of the set function v(frozenset) on n players, by enumeration."""
    phi = np.zeros(n)
    for perm in itertools.permutations(range(n)):
        s = frozenset()
        for i in perm:
            phi[i] += v(s | {i}) - v(s)
            s = s | {i}
    return phi / math.factorial(n)


def test_shapley_sums_to_delta_and_is_seeded():
    p, (x, refs) = _params(), _data()
    c, d = jaxlift.attribute(relu_mlp, p, x, refs, target=1, mode="shapley_sampling",
                             mode_options={"num_permutations": 3}, average_refs=False,
                             return_delta=True)
    np.testing.assert_allclose(c.sum(-1), d, rtol=1e-10, atol=1e-12)
    again = jaxlift.attribute(relu_mlp, p, x, refs, target=1, mode="shapley_sampling",
                              mode_options={"num_permutations": 3}, average_refs=False)
    np.testing.assert_array_equal(c, again)
    other = jaxlift.attribute(relu_mlp, p, x, refs, target=1, mode="shapley_sampling",
                              mode_options={"num_permutations": 3}, average_refs=False,
                              key=jax.random.PRNGKey(7))
    assert not np.allclose(c, other)


def test_shapley_converges_to_exact_with_groups():
    def g(p, x):                        # interactions between features
        return (jnp.tanh(x[:, 0] * x[:, 1]) + x[:, 2] * x[:, 3] + jax.nn.relu(x[:, 4] - x[:, 0]))
    x, r = jnp.array([[1.0, 2.0, -1.0, 0.5, 3.0]]), jnp.array([[0.2, 0.0, 0.3, -0.5, 0.1]])
    mask = np.array([0, 0, 1, 2, 2])   # three groups
    c = jaxlift.attribute(g, None, x, r, mode="shapley_sampling",
                          mode_options={"num_permutations": 3000, "feature_mask": mask})

    def v(s):
        on = np.isin(mask, list(s))
        return float(g(None, jnp.where(on, x, r))[0])
    phi = _exact_shapley(v, 3)
    np.testing.assert_allclose(c[0], phi[mask], atol=0.03)
    # every feature of a group carries the group's value; the groups sum to Δt
    assert c[0, 0] == c[0, 1] and c[0, 3] == c[0, 4]
    np.testing.assert_allclose(c[0, [0, 2, 3]].sum(), v({0, 1, 2}) - v(set()), rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# multipliers for every mode, hypothetical contributions

@pytest.mark.parametrize("mode", ["gradient", "grad_times_input", "guided_backprop",
                                  "integrated_gradients", "occlusion", "shapley_sampling"])
def test_multipliers_every_mode(mode):
    p, (x, refs) = _params(), _data()
    opts = {"occlusion": {"window": 1}, "shapley_sampling": {"num_permutations": 2},
            "integrated_gradients": {"steps": 4}}.get(mode)
    m = jaxlift.multipliers(relu_mlp, p, x, refs, target=0, mode=mode, mode_options=opts,
                            average_refs=False)
    c = jaxlift.attribute(relu_mlp, p, x, refs, target=0, mode=mode, mode_options=opts,
                          average_refs=False)
    assert m.shape == c.shape == (3, 2, 5)
    if mode in ("integrated_gradients", "occlusion", "shapley_sampling"):
        np.testing.assert_allclose(m * (x[:, None] - refs[None]), c, rtol=1e-9, atol=1e-12)
    else:
        np.testing.assert_allclose(m[:, 0], jaxlift.attribute(
            relu_mlp, p, x, None, target=0,
            mode="guided_backprop" if mode == "guided_backprop" else "gradient"), rtol=1e-12)


def seq_model(p, x):                     # (B, L, 4) → (B, 2)
    h = jax.lax.conv_general_dilated(x, p["k"], (1,), "VALID",
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    h = jax.nn.relu(h + p["c"]).reshape(x.shape[0], -1)
    return h @ p["w"]


def test_hypothetical_contributions_match_deeplift_definition():
    rng = np.random.default_rng(3)
    L, A = 9, 4
    p = {"k": jnp.asarray(rng.normal(size=(3, A, 4))), "c": jnp.asarray(rng.normal(size=4)),
         "w": jnp.asarray(rng.normal(size=((L - 2) * 4, 2)))}
    x = jnp.asarray(np.eye(A)[rng.integers(0, A, size=(2, L))])
    refs = jnp.asarray(np.eye(A)[rng.integers(0, A, size=(2, 3, L))])   # per-input refs
    hyp = jaxlift.hypothetical_contributions(seq_model, p, x, refs, target=1,
                                             mode="genomics_default")
    # deeplift's loop: for each letter a, the hypothetical one-hot minus the reference,
    # times the multipliers, summed over the alphabet; then averaged over references
    m = jaxlift.multipliers(seq_model, p, x, refs, target=1, mode="genomics_default",
                            average_refs=False)
    want = np.zeros((2, L, A))
    for a in range(A):
        hyp_in = np.zeros((L, A))
        hyp_in[:, a] = 1
        want[:, :, a] = ((hyp_in[None, None] - np.asarray(refs)) * np.asarray(m)).sum(-1).mean(1)
    np.testing.assert_allclose(hyp, want, rtol=1e-12, atol=1e-12)
    # at the actual letters they are the actual contributions (summed over the alphabet)
    c = jaxlift.attribute(seq_model, p, x, refs, target=1, mode="genomics_default")
    np.testing.assert_allclose((hyp * x).sum(-1), c.sum(-1), rtol=1e-10, atol=1e-12)
    allt = jaxlift.hypothetical_contributions(seq_model, p, x, refs[0], target="all")
    assert allt.shape == (2, 2, L, A)
    with pytest.raises(ValueError, match="not one-hot"):
        jaxlift.hypothetical_contributions(seq_model, p, x * 0.5, refs, target=1)


# ---------------------------------------------------------------------------------------------
# errors

def test_bad_options_are_clear_errors():
    p, (x, refs) = _params(), _data()
    a = lambda **kw: jaxlift.attribute(relu_mlp, p, x, refs, target=0, **kw)  # noqa: E731
    with pytest.raises(ValueError, match="unknown mode_options .*'window'"):
        a(mode="integrated_gradients", mode_options={"window": 2})
    # occlusion without a window: the default one (one feature of a vector), not an error
    np.testing.assert_allclose(a(mode="occlusion"), a(mode="occlusion",
                                                      mode_options={"window": 1}))
    with pytest.raises(ValueError, match="larger than the example"):
        a(mode="occlusion", mode_options={"window": 6})
    with pytest.raises(ValueError, match="one entry per axis"):
        a(mode="occlusion", mode_options={"window": (1, 1)})
    with pytest.raises(ValueError, match="unknown integrated_gradients method"):
        a(mode="integrated_gradients", mode_options={"method": "simpson"})
    with pytest.raises(ValueError, match="positive int"):
        a(mode="integrated_gradients", mode_options={"steps": 0})
    with pytest.raises(ValueError, match="needs references"):
        jaxlift.attribute(relu_mlp, p, x, None, target=0, mode="integrated_gradients")
    with pytest.raises(ValueError, match="takes no mode_options"):
        a(mode="rescale", mode_options={"steps": 3})
    with pytest.raises(ValueError, match="layer= is supported by the DeepLIFT modes only"):
        a(mode="gradient", layer="h")
    with pytest.raises(ValueError, match="feature_mask of shape"):
        a(mode="shapley_sampling", mode_options={"feature_mask": np.zeros(3, int)})
    with pytest.raises(ValueError, match="unknown mode 'saliency'"):
        a(mode="saliency")
