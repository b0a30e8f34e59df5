"""The method table: every mode is a value with typed options; ε-LRP; a user's own method."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.methods import METHODS, Method, Option, lookup
from jaxlift.methods.base import positive_int


def relu_net(p, xb):                          # bias-free: ε-LRP at ε = 0 is gradient × input
    return jax.nn.relu(jax.nn.relu(xb @ p["w1"]) @ p["w2"]) @ p["w3"]


def biased_net(p, xb):
    return jax.nn.relu(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w1": rng.normal(size=(6, 8)), "w2": rng.normal(size=(8, 5)),
            "w3": rng.normal(size=(5, 3)), "b1": rng.normal(size=8), "b2": rng.normal(size=5)}


def test_lrp_epsilon_at_zero_is_gradient_times_input_on_a_bias_free_relu_net(x64):
    p = _params()
    x = np.random.default_rng(1).normal(size=(4, 6))
    lrp = jaxlift.attribute(relu_net, p, x, None, target="all", mode="lrp_epsilon",
                            mode_options={"epsilon": 0.0})
    gxi = jaxlift.attribute(relu_net, p, x, None, target="all", mode="grad_times_input")
    assert lrp.shape == (4, 3, 6)
    np.testing.assert_allclose(lrp, gxi, rtol=1e-12, atol=1e-12)
    # a bias-free ReLU net is positively homogeneous: x·∇t sums to t(x) (t(0) = 0)
    np.testing.assert_allclose(lrp.sum(-1), relu_net(p, x), rtol=1e-10)


def test_lrp_epsilon_is_the_stabilised_ratio_by_hand(x64):
    p = _params(2)
    x = np.random.default_rng(3).normal(size=(3, 6))
    eps = 0.5
    got = jaxlift.attribute(biased_net, p, x, None, target=2, mode="lrp_epsilon",
                            mode_options={"epsilon": eps})
    z = x @ p["w1"] + p["b1"]                               # the relu's input (bias added)
    ratio = np.maximum(z, 0) / (z + eps * np.where(z >= 0, 1, -1))
    want = x * ((ratio * p["w2"][:, 2]) @ p["w1"].T)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # ε > 0 absorbs relevance: the scores differ from gradient × input
    gxi = jaxlift.attribute(biased_net, p, x, None, target=2, mode="grad_times_input")
    assert np.abs(got - gxi).max() > 1e-3


def test_lrp_epsilon_options_are_checked():
    p = _params()
    x = np.ones((1, 6))
    for bad in (-1.0, float("nan"), "big", True):
        with pytest.raises(ValueError, match="lrp_epsilon epsilon"):
            jaxlift.attribute(relu_net, p, x, None, target=0, mode="lrp_epsilon",
                              mode_options={"epsilon": bad})


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_refuses_unknown_options_by_name(name):
    method = METHODS[name]
    with pytest.raises(ValueError, match=f"mode '{name}'.*bogus|bogus.*'{name}'"):
        method.check_options({"bogus": 1})
    if not any(o.default is jaxlift.methods.REQUIRED for o in method.options):
        assert set(method.check_options(None)) == {o.name for o in method.options}


def test_the_table_describes_each_method():
    for name, m in METHODS.items():
        assert m.name == name and m.summary
        assert m.scope in ("interpreter", "pair", "input")
        assert (m.scope == "interpreter") == (m.composite is not None)
    assert {n for n, m in METHODS.items() if m.completeness == "exact"} >= {
        "rescale", "reveal_cancel", "genomics_default", "shapley_sampling"}
    assert METHODS["reveal_cancel"].carries_split and not METHODS["rescale"].carries_split
    assert not METHODS["gradient"].needs_refs and METHODS["integrated_gradients"].needs_refs


def test_max_mode_and_gating_are_refused_where_they_mean_nothing():
    p = _params()
    x, r = np.ones((2, 6)), np.zeros((1, 6))
    with pytest.raises(ValueError, match="max_mode= chooses a DeepLIFT rule"):
        jaxlift.attribute(relu_net, p, x, r, target=0, mode="integrated_gradients",
                          max_mode="gradient")
    with pytest.raises(ValueError, match="gating= chooses a DeepLIFT rule"):
        jaxlift.attribute(relu_net, p, x, r, target=0, mode="gradient",
                          gating="gate_as_weight")
    with pytest.raises(ValueError, match="unknown mode 'lrp'"):
        lookup("lrp")
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    with pytest.raises(ValueError, match="mesh= shards the DeepLIFT modes"):
        jaxlift.attribute(relu_net, p, x, r, target=0, mode="gradient", mesh=mesh)
    # the sharded path itself, on one device (8 host devices: tests/test_sharding.py, slow)
    np.testing.assert_allclose(
        jaxlift.attribute(relu_net, p, x, r, target=0, mesh=mesh, batch_size=1),
        jaxlift.attribute(relu_net, p, x, r, target=0), rtol=1e-6)


# A method of one's own: one kernel and one Method value, passed as mode= (or added to the
# table with one line).

def _input_x_gradient_squared(f, params, x, r, *, opts, arrays, key):
    g = jax.grad(f, argnums=1)(params, x)
    return opts["scale"] * x * g ** 2, None


SQUARED = Method(name="squared_gradient", summary="scale · x · (∂t/∂x)²", scope="input",
                 kernel=_input_x_gradient_squared, needs_refs=False,
                 options=(Option("scale", 1, "a positive integer factor",
                                 positive_int("squared_gradient", "scale")),))


def test_a_users_own_method_runs_through_the_pipeline(x64):
    p = _params()
    x = np.random.default_rng(4).normal(size=(5, 6))
    refs = np.zeros((2, 6))
    got = jaxlift.attribute(relu_net, p, x, refs, target=1, mode=SQUARED,
                            mode_options={"scale": 3}, batch_size=4, average_refs=False)
    g = jaxlift.attribute(relu_net, p, x, None, target=1, mode="gradient")
    assert got.shape == (5, 2, 6)
    np.testing.assert_allclose(got[:, 1], 3 * x * g ** 2, rtol=1e-12)
    with pytest.raises(ValueError, match="squared_gradient scale must be a positive int"):
        jaxlift.attribute(relu_net, p, x, refs, target=1, mode=SQUARED,
                          mode_options={"scale": 0})


def _noisy_kernel(f, params, x, r, *, opts, arrays, key):
    return x * 0 + jax.random.normal(key, x.shape, x.dtype), None


NOISY = Method(name="noise", summary="a random score per input", scope="input",
               kernel=_noisy_kernel, needs_refs=False)


def test_each_input_gets_its_own_key_whatever_the_chunks():
    x = jnp.ones((7, 4))
    whole = jaxlift.attribute(lambda p, xb: xb.sum(1), None, x, None, mode=NOISY,
                              key=jax.random.PRNGKey(3), batch_size=None)
    chunked = jaxlift.attribute(lambda p, xb: xb.sum(1), None, x, None, mode=NOISY,
                                key=jax.random.PRNGKey(3), batch_size=3)
    np.testing.assert_array_equal(whole, chunked)
    assert len({tuple(np.asarray(row)) for row in whole}) == 7   # no two inputs share noise


def test_non_finite_scores_of_a_kernel_method_are_refused():
    from jaxlift.errors import NonFiniteScoresError
    with pytest.raises(NonFiniteScoresError, match="mode 'gradient' produced NaN"):
        jaxlift.attribute(lambda p, xb: jnp.sqrt(xb).sum(1), None, jnp.zeros((2, 3)), None,
                          mode="gradient")


def test_lrp_epsilon_carries_a_scaling_before_the_activation(x64):
    """``relu(2·(z + b))``: the activation's input is ``a = 2(z + b)``; relevance passes as
    ``m_a = m·relu(a)/(a + ε sign a)`` and ``m_z = 2·m_a``."""
    p = _params(5)
    x = np.random.default_rng(6).normal(size=(3, 6))
    fn = lambda p, xb: jax.nn.relu(2.0 * (xb @ p["w1"] + p["b1"])) @ p["w2"]  # noqa: E731
    eps = 0.3
    got = jaxlift.attribute(fn, p, x, None, target=1, mode="lrp_epsilon",
                            mode_options={"epsilon": eps})
    a = 2 * (x @ p["w1"] + p["b1"])
    ratio = np.maximum(a, 0) / (a + eps * np.where(a >= 0, 1, -1))
    np.testing.assert_allclose(got, x * ((2 * ratio * p["w2"][:, 1]) @ p["w1"].T), rtol=1e-12)


# The perturbation methods of the table, through attribute (their kernels are tested in
# tests/test_lime_shap.py and tests/test_smoothgrad.py)

def linear(p, xb):
    return xb @ p


def test_kernel_shap_and_lime_through_attribute_recover_a_linear_model(x64):
    rng = np.random.default_rng(7)
    w = rng.normal(size=(5, 2))
    x, refs = rng.normal(size=(3, 5)), rng.normal(size=(2, 5))
    exact = w[:, 0] * (x[:, None] - refs[None])                 # (N, K, 5) Shapley values
    shap, delta = jaxlift.attribute(linear, w, x, refs, target=0, mode="kernel_shap",
                                    average_refs=False, return_delta=True, batch_size=4)
    np.testing.assert_allclose(shap, exact, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(shap.sum(-1), delta, rtol=1e-9)
    lime = jaxlift.attribute(linear, w, x, refs, target=0, mode="lime", average_refs=False,
                             mode_options={"n_samples": 32, "alpha": 0.0})
    np.testing.assert_allclose(lime, exact, rtol=1e-7, atol=1e-9)


def test_smoothgrad_through_attribute(x64):
    p = _params()
    x = np.random.default_rng(8).normal(size=(4, 6))
    g = jaxlift.attribute(relu_net, p, x, None, target=0, mode="gradient")
    still = jaxlift.attribute(relu_net, p, x, None, target=0, mode="smoothgrad",
                              mode_options={"noise_level": 0.0, "samples": 3})
    np.testing.assert_allclose(still, g, rtol=1e-12)  # the noise itself: tests/test_smoothgrad.py
    # over the gradient it runs once per input (references only shape the result)
    assert METHODS["smoothgrad"].scope_for(METHODS["smoothgrad"].check_options(None)) == "input"
    ig = METHODS["smoothgrad"].check_options({"base": "integrated_gradients"})
    assert METHODS["smoothgrad"].scope_for(ig) == "pair"
    with pytest.raises(ValueError, match="mode 'smoothgrad' needs references"):
        jaxlift.attribute(relu_net, p, x, None, target=0, mode="smoothgrad",
                          mode_options={"base": "integrated_gradients"})
