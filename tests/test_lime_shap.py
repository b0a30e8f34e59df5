"""``lime`` and ``kernel_shap`` (issue 17): exactness where the answer is known, brute-force
Shapley values, Captum parity on the same coalitions, and option checks.

Known answers. On a model linear in the inputs, ``t(x_z) = t(r) + Σ_g z_g c_g`` with
``c_g = Σ_{i∈g} w_i Δx_i``: the coalition targets are exactly affine in ``z``, so any weighted
least-squares fit whose design ``[1, Z]`` has full column rank returns ``φ_g = c_g`` with zero
residual (weights do not matter). All ``2^G`` coalitions give full rank, so ``lime`` with
``alpha=0`` returns ``w·Δx`` (each feature its group's ``c_g``); KernelSHAP's constraints fix
``b`` and ``Σφ``, so it is exact on a linear model even from a few sampled coalitions.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlift.methods import kernel_shap, lime
from jaxlift.methods import linear_surrogate as ls


@pytest.fixture(autouse=True)
def _x64(x64):
    yield


def run(method, f, params, xs, rs, **options):
    """The method's kernel on pairs ``(xs[i], rs[i])``, vmapped, with one ``prepare``."""
    opts = method.check_options(options)
    arrays = method.prepare(opts, xs.shape[1:], jax.random.PRNGKey(3))
    keys = jax.random.split(jax.random.PRNGKey(4), xs.shape[0])

    @jax.jit
    def go(xs, rs, arrays, keys):
        return jax.vmap(lambda x, r, k: method.kernel(f, params, x, r, opts=opts, arrays=arrays,
                                                      key=k)[0])(xs, rs, keys)
    return np.asarray(go(jnp.asarray(xs), jnp.asarray(rs), arrays, keys))


RNG = np.random.default_rng(0)
W = RNG.normal(size=(7,))                   # float64; JAX sees them under the x64 fixture
W2 = RNG.normal(size=(7, 2))
XS = RNG.normal(size=(3, 7))
RS = RNG.normal(size=(3, 7))
MASK = np.array([3, 3, 0, 1, 1, 1, 7])             # 4 groups, values not 0..G−1
CMASK = np.array([2, 2, 0, 1, 1, 1, 3])            # the same groups, 0..G−1 (as Captum needs)


def linear(p, x):
    return x @ p + 0.7


def linear_all(p, x):                                   # target="all": (T,) per example
    return x @ p - 0.2


def nonlinear(p, x):
    return jnp.tanh(x @ p) * x[0] + x[1] * x[2] - jax.nn.relu(x[3] - x[4]) ** 2 + x[5] * x[6]


def group_sum(contrib, mask):
    """Each feature gets the sum of ``contrib`` over its group."""
    out = np.zeros_like(contrib)
    for g in np.unique(mask):
        out[..., mask == g] = contrib[..., mask == g].sum(-1, keepdims=True)
    return out


def brute_force_shapley(f, p, x, r, mask):
    """Exact Shapley values of the groups of ``mask`` (every feature its group's value), from
    ``t`` of all ``2^G`` coalitions (one vmapped call; subset ``s`` is the bit pattern of s)."""
    groups = np.unique(mask)
    g = len(groups)
    on = (np.arange(2 ** g)[:, None] >> np.arange(g)) & 1                 # (2^G, G)
    feats = on[:, np.searchsorted(groups, mask)].astype(bool)             # (2^G, F)
    t = np.asarray(jax.vmap(lambda m: f(p, jnp.where(m, x, r)))(feats))
    phi = np.zeros(g)
    for i in range(g):
        for s in range(2 ** g):
            if not s >> i & 1:
                k = bin(s).count("1")
                phi[i] += (math.factorial(k) * math.factorial(g - k - 1) / math.factorial(g)
                           * (t[s | 1 << i] - t[s]))
    return phi[np.searchsorted(groups, mask)]


def test_kernel_shap_exact_on_linear_model_from_few_samples():
    # 7 singleton groups, 20 sampled coalitions (of 126 proper ones): still exact
    got = run(kernel_shap.METHOD, linear, W, XS, RS, n_samples=20)
    np.testing.assert_allclose(got, W * (XS - RS), atol=1e-10)
    got = run(kernel_shap.METHOD, linear, W, XS, RS, n_samples=10, feature_mask=MASK)
    np.testing.assert_allclose(got, group_sum(np.asarray(W * (XS - RS)), MASK), atol=1e-10)
    # all targets at once: a leading T axis, each row that target's w_t·Δx
    got = run(kernel_shap.METHOD, linear_all, W2, XS, RS, n_samples=20)
    want = np.einsum("it,ni->nti", W2, XS - RS)
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_kernel_shap_enumerated_equals_brute_force_shapley():
    got = run(kernel_shap.METHOD, nonlinear, W, XS, RS, n_samples=200, feature_mask=MASK)
    for x, r, g in zip(XS, RS, got):
        np.testing.assert_allclose(g, brute_force_shapley(nonlinear, W, x, r, MASK), atol=1e-10)
    # singletons: all 2^7 − 2 = 126 proper coalitions once n_samples allows, else sampled
    for n, rows in [(126, 126), (125, 125)]:
        opts = kernel_shap.METHOD.check_options({"n_samples": n})
        z = np.asarray(kernel_shap.METHOD.prepare(opts, (7,), jax.random.PRNGKey(0))["z"])
        assert z.shape == (rows, 7)
        assert (len(np.unique(z, axis=0)) == 126) == (n == 126)


def test_kernel_shap_sampled_is_efficient_on_nonlinear_model():
    got = run(kernel_shap.METHOD, nonlinear, W, XS, RS, n_samples=15)
    dt = jax.vmap(lambda x: nonlinear(W, x))(XS) - jax.vmap(lambda r: nonlinear(W, r))(RS)
    np.testing.assert_allclose(got.sum(-1), dt, atol=1e-10)
    # and it is not the exact answer (15 of 126 coalitions): the test above is not vacuous
    exact = brute_force_shapley(nonlinear, W, XS[0], RS[0], np.arange(7))
    assert np.abs(got[0] - exact).max() > 1e-4


def test_kernel_shap_one_group_gets_delta():
    got = run(kernel_shap.METHOD, nonlinear, W, XS, RS, feature_mask=np.zeros(7, int))
    dt = jax.vmap(lambda x: nonlinear(W, x))(XS) - jax.vmap(lambda r: nonlinear(W, r))(RS)
    np.testing.assert_allclose(got, np.broadcast_to(np.asarray(dt)[:, None], (3, 7)),
                               atol=1e-12)


def test_lime_all_coalitions_least_squares_is_exact_on_linear_model():
    got = run(lime.METHOD, linear, W, XS, RS, n_samples=128, alpha=0.0)   # 2^7: enumerated
    np.testing.assert_allclose(got, W * (XS - RS), atol=1e-10)
    got = run(lime.METHOD, linear, W, XS, RS, n_samples=16, alpha=0.0, feature_mask=MASK)
    np.testing.assert_allclose(got, group_sum(np.asarray(W * (XS - RS)), MASK), atol=1e-10)
    # the ridge penalty shrinks the fit: with alpha=1 the answer is smaller, not exact
    ridge = run(lime.METHOD, linear, W, XS, RS, n_samples=128, alpha=1.0)
    assert np.all(np.linalg.norm(ridge, axis=1) < np.linalg.norm(W * (XS - RS), axis=1))


def test_lime_sampled_coalitions_are_bernoulli_and_shared():
    opts = lime.METHOD.check_options({"n_samples": 400})       # 400 < 2^12: sampled
    a = lime.METHOD.prepare(opts, (12,), jax.random.PRNGKey(0))
    z = np.asarray(a["z"])
    assert z.shape == (400, 12) and set(np.unique(z)) == {0.0, 1.0}
    assert abs(z.mean() - 0.5) < 0.03
    b = lime.METHOD.prepare(opts, (12,), jax.random.PRNGKey(0))
    np.testing.assert_array_equal(z, np.asarray(b["z"]))


def test_lime_cosine_kernel():
    z = np.array([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], float)
    d = np.array([0.0, 1 - np.sqrt(1 / 4), 1.0])
    np.testing.assert_allclose(lime.cosine_kernel(z, 0.25), np.exp(-d ** 2 / 0.25 ** 2))


def test_shapley_kernel_weights():
    z = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 1, 1]], float)
    # G = 3: |z| = 1 → 2/(3·1·2) = 1/3; |z| = 2 → 2/(3·2·1) = 1/3; ends weigh 0 (constraints)
    np.testing.assert_allclose(kernel_shap.shapley_kernel(z), [1 / 3, 1 / 3, 0, 0])
    z = kernel_shap.sample_coalitions(jax.random.PRNGKey(0), 10, 4000)
    sizes = np.bincount(z.sum(1).astype(int), minlength=10)[1:]
    ks = np.arange(1, 10)
    p = 1 / (ks * (10 - ks))
    np.testing.assert_allclose(sizes / 4000, p / p.sum(), atol=0.03)


def test_superpixels_make_a_mask_of_the_image_shape():
    img = np.zeros((12, 12, 3))
    img[:, 6:] = 1.0
    mask = lime.superpixels(img, n_segments=4)
    assert mask.shape == img.shape and mask.dtype == np.int32
    assert np.all(mask == mask[..., :1])                            # repeated over channels
    left, right = set(np.unique(mask[:, :6, 0])), set(np.unique(mask[:, 6:, 0]))
    assert left and right and not left & right                      # no segment crosses the edge
    assert set(np.unique(mask)) == set(range(len(left | right)))    # labels 0..G−1
    grey = lime.superpixels(img[..., 0], n_segments=2, channel_axis=None)
    assert grey.shape == (12, 12)
    with pytest.raises(ValueError, match="no channel axis"):
        lime.superpixels(img[..., 0])
    with pytest.raises(ValueError, match="one image"):
        lime.superpixels(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="unknown superpixels method"):
        lime.superpixels(img, method="felzen")


@pytest.mark.parametrize("method,options,match", [
    (lime.METHOD, {"n_samples": 0}, "n_samples must be a positive int"),
    (lime.METHOD, {"n_samples": 2.5}, "n_samples must be a positive int"),
    (lime.METHOD, {"kernel_width": 0.0}, "kernel_width must be a positive number"),
    (lime.METHOD, {"kernel_width": float("nan")}, "kernel_width"),
    (lime.METHOD, {"alpha": -1.0}, "alpha must be a finite non-negative number"),
    (lime.METHOD, {"perturbations_per_eval": 0}, "perturbations_per_eval must be a positive"),
    (lime.METHOD, {"feature_mask": 3}, "feature_mask must be None or an integer array"),
    (lime.METHOD, {"coalitions": "all"}, "coalitions must be None or an"),
    (lime.METHOD, {"width": 1.0}, "unknown mode_options"),
    (kernel_shap.METHOD, {"n_samples": -3}, "n_samples must be a positive int"),
    (kernel_shap.METHOD, {"alpha": 1.0}, "unknown mode_options"),
])
def test_bad_options_are_refused(method, options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        method.check_options(options)


@pytest.mark.parametrize("method", [lime.METHOD, kernel_shap.METHOD])
@pytest.mark.parametrize("options,match", [
    ({"feature_mask": np.zeros(6, int)}, "must have the example's shape"),
    ({"feature_mask": np.zeros(7)}, "must hold integers"),
    ({"coalitions": np.ones((4, 6))}, r"shape \(S, G\)"),
    ({"coalitions": np.full((4, 7), 0.5)}, "only 0 and 1"),
])
def test_bad_arrays_are_refused_in_prepare(method, options, match):
    opts = method.check_options(options)
    with pytest.raises((ValueError, TypeError), match=match):
        method.prepare(opts, (7,), jax.random.PRNGKey(0))


def test_kernel_shap_refuses_coalitions_of_only_ends():
    opts = kernel_shap.METHOD.check_options({"coalitions": np.array([[0] * 7, [1] * 7])})
    with pytest.raises(ValueError, match="at least one with 0 < "):
        kernel_shap.METHOD.prepare(opts, (7,), jax.random.PRNGKey(0))


def test_rank_deficient_least_squares_is_finite():
    # two identical coalitions and alpha=0: the fit is undetermined; min-norm, never NaN
    z = np.array([[1, 0, 1], [1, 0, 1]], float)
    p = ls.ridge_projection(z, np.ones(2), 0.0)
    assert np.all(np.isfinite(p))
    got = run(lime.METHOD, linear, W[:3], XS[:, :3], RS[:, :3], coalitions=z, alpha=0.0)
    assert np.all(np.isfinite(got))


# ---------------------------------------------------------------------------------------------
# Captum parity: the same coalitions given to both sides

torch = pytest.importorskip("torch")
captum_attr = pytest.importorskip("captum.attr")
captum_lin = pytest.importorskip("captum._utils.models.linear_model")


def torch_nonlinear(x):
    w = torch.tensor(np.asarray(W))
    return (torch.tanh(x @ w) * x[:, 0] + x[:, 1] * x[:, 2] - torch.relu(x[:, 3] - x[:, 4]) ** 2
            + x[:, 5] * x[:, 6])[:, None]


def _generator(rows):
    def perturb(original_inp, **kwargs):
        for z in rows:
            yield torch.tensor(z[None], dtype=torch.long)
    return perturb


def test_lime_matches_captum_lime_on_the_same_coalitions():
    torch.set_default_dtype(torch.float64)
    try:
        z = np.asarray(jax.random.bernoulli(jax.random.PRNGKey(5), 0.5, (40, 4)), float)
        width, alpha = 0.25, 0.3

        def similarity(orig, pert, interp, **kwargs):        # ours: cosine in the binary space
            return float(lime.cosine_kernel(interp.numpy().astype(float), width)[0])

        explainer = captum_attr.Lime(torch_nonlinear,
                                     interpretable_model=captum_lin.SkLearnRidge(alpha=alpha),
                                     similarity_func=similarity, perturb_func=_generator(z))
        got = run(lime.METHOD, nonlinear, W, XS, RS, coalitions=z, alpha=alpha,
                  feature_mask=MASK, kernel_width=width)
        for x, r, g in zip(XS[:2], RS[:2], got[:2]):
            want = explainer.attribute(torch.tensor(np.asarray(x))[None],
                                       baselines=torch.tensor(np.asarray(r))[None], target=0,
                                       feature_mask=torch.tensor(CMASK)[None], n_samples=40)
            # Captum fits in float32
            np.testing.assert_allclose(g, want.numpy()[0], rtol=1e-4, atol=1e-5)
    finally:
        torch.set_default_dtype(torch.float32)


def test_kernel_shap_matches_captum_kernel_shap():
    torch.set_default_dtype(torch.float64)
    try:
        # 1. Captum's own KernelShap (its sampling) on a linear model: both exactly w·Δx
        lin = lambda v: (v @ torch.tensor(np.asarray(W)) + 0.7)[:, None]  # noqa: E731
        x, r = torch.tensor(np.asarray(XS[:1])), torch.tensor(np.asarray(RS[:1]))
        want = captum_attr.KernelShap(lin).attribute(x, baselines=r, target=0, n_samples=60)
        got = run(kernel_shap.METHOD, linear, W, XS[:1], RS[:1], n_samples=60)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, W * (XS[:1] - RS[:1]), atol=1e-10)

        # 2. A nonlinear model, the same coalitions: Captum's KernelShap is Lime with the
        # Shapley kernel, least squares, and weight 1e6 on the all-on and all-off coalitions
        # (its way of imposing our exact constraints)
        z = kernel_shap.sample_coalitions(jax.random.PRNGKey(6), 4, 12)

        def similarity(orig, pert, interp, **kwargs):
            k = int(interp.sum())
            return 1e6 if k in (0, 4) else float(kernel_shap.shapley_kernel(
                interp.numpy().astype(float))[0])

        ends = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], float)
        explainer = captum_attr.Lime(
            torch_nonlinear, interpretable_model=captum_lin.SkLearnLinearRegression(),
            similarity_func=similarity, perturb_func=_generator(np.concatenate([ends, z])))
        want = explainer.attribute(x, baselines=r, target=0,
                                   feature_mask=torch.tensor(CMASK)[None], n_samples=14)
        got = run(kernel_shap.METHOD, nonlinear, W, XS[:1], RS[:1], coalitions=z,
                  feature_mask=MASK)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-3, atol=1e-4)
    finally:
        torch.set_default_dtype(torch.float32)
