"""Defaults that fit (issue 28): the perturbation methods group an image's pixels into patches
and occlusion has a window without being told one, in the API as in the CLI; Shapley sampling
evaluates its coalitions in bounded batches; the README's table of modes is the method table;
``return_delta=True`` without references says what to do."""
from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift.methods import METHODS, groups, table

README = Path(__file__).resolve().parents[1] / "README.md"
RNG = np.random.default_rng(28)
W = jnp.asarray(RNG.normal(size=(16, 8, 2)))


def image_model(p, x):
    """(N, 16, 8, 2) → (N, 2): a nonlinear function of every pixel."""
    h = jnp.tanh(x * p).sum((1, 2, 3))
    return jnp.stack([h, (x[..., 0] ** 2).sum((1, 2))], -1)


X = jnp.asarray(RNG.normal(size=(2, 16, 8, 2)))
R = jnp.zeros((1, 16, 8, 2))


def test_default_window_and_patches():
    assert groups.default_window((28, 28, 1)) == ((4, 4, 1), (2, 2, 1))
    assert groups.default_window((16, 8, 2)) == ((2, 1, 2), (1, 1, 2))
    assert groups.default_window((10, 4)) == ((1, 4), (1, 4))
    assert groups.default_window((7,)) == ((1,), (1,))
    mask = groups.default_mask((16, 8, 2))
    assert mask.shape == (16, 8, 2) and len(np.unique(mask)) == 8 * 8
    assert (mask[0:2, 0, :] == mask[0, 0, 0]).all() and mask[2, 0, 0] != mask[0, 0, 0]
    np.testing.assert_array_equal(groups.default_mask((5,)), np.arange(5))
    np.testing.assert_array_equal(groups.default_mask((3, 4)),
                                  np.repeat(np.arange(3), 4).reshape(3, 4))


@pytest.mark.parametrize("mode, opts", [
    ("shapley_sampling", {"num_permutations": 2}),
    ("kernel_shap", {"n_samples": 64}),
    ("lime", {"n_samples": 64}),
])
def test_image_groups_default_to_patches(mode, opts):
    got = jaxlift.attribute(image_model, W, X, R, target=0, mode=mode, mode_options=opts)
    mask = groups.default_mask((16, 8, 2))
    want = jaxlift.attribute(image_model, W, X, R, target=0, mode=mode,
                             mode_options={**opts, "feature_mask": mask})
    np.testing.assert_array_equal(got, want)
    for label in np.unique(mask):  # one value per patch: every pixel of it carries it
        vals = np.asarray(got)[:, mask == label]
        assert np.all(vals == vals[:, :1])
    assert len(np.unique(np.asarray(got)[0])) > 8          # the patches differ
    per_pixel = jaxlift.attribute(image_model, W, X, R, target=0, mode=mode,
                                  mode_options={**opts, "feature_mask": None})
    assert len(np.unique(np.asarray(per_pixel)[0])) > 64   # None: every feature alone


def test_vector_inputs_keep_one_group_per_feature():
    x, r = jnp.asarray(RNG.normal(size=(3, 5))), jnp.zeros((1, 5))
    f = lambda p, xb: jnp.tanh(xb) @ jnp.arange(1.0, 6.0)  # noqa: E731  additive: exact values
    got = jaxlift.attribute(f, None, x, r, mode="shapley_sampling",
                            mode_options={"num_permutations": 2})
    np.testing.assert_allclose(got, jnp.tanh(x) * jnp.arange(1.0, 6.0), rtol=1e-5, atol=1e-6)


def test_occlusion_default_window():
    got = jaxlift.attribute(image_model, W, X, R, target=0, mode="occlusion")
    window, stride = groups.default_window((16, 8, 2))
    want = jaxlift.attribute(image_model, W, X, R, target=0, mode="occlusion",
                             mode_options={"window": window, "stride": stride})
    np.testing.assert_array_equal(got, want)
    # a window given without a stride moves by 1, as before (and as Captum)
    one = jaxlift.attribute(image_model, W, X, R, target=0, mode="occlusion",
                            mode_options={"window": (2, 2, 2)})
    ones = jaxlift.attribute(image_model, W, X, R, target=0, mode="occlusion",
                             mode_options={"window": (2, 2, 2), "stride": 1})
    np.testing.assert_array_equal(one, ones)


def test_shapley_batches_give_the_same_values_and_sum_to_delta():
    x, r = X[:1], R
    kw = dict(target=0, mode="shapley_sampling", return_delta=True)
    all_at_once, d = jaxlift.attribute(
        image_model, W, x, r, mode_options={"num_permutations": 3, "perturbations_per_eval": None},
        **kw)
    batched, d2 = jaxlift.attribute(
        image_model, W, x, r, mode_options={"num_permutations": 3, "perturbations_per_eval": 7},
        **kw)
    np.testing.assert_allclose(batched, all_at_once, rtol=1e-5, atol=1e-6)
    _, first = np.unique(groups.default_mask((16, 8, 2)).ravel(), return_index=True)
    group_values = np.asarray(batched)[0].ravel()[first]
    np.testing.assert_allclose(group_values.sum(), d[0], rtol=1e-5)  # groups sum to Δt
    assert METHODS["shapley_sampling"].rows_per_pair(
        METHODS["shapley_sampling"].check_options(None)) == 512


def test_readme_modes_table_is_the_method_table():
    text = README.read_text(encoding="utf-8")
    assert table.table_in(text) == table.modes_table(METHODS), (
        "README's table of modes is out of date: run python -m jaxlift.methods.table --write "
        "README.md")
    rendered = table.modes_table(METHODS)
    for name, m in METHODS.items():  # every method, option and default is in it
        row = next(r for r in rendered.splitlines() if r.startswith(f"| `{name}` |"))
        for o in m.options:
            assert f"`{o.name}` = {table.format_default(o.default)}" in row


def test_table_marks_and_replaces():
    t = "intro\n" + table.BEGIN + "\nold\n" + table.END + "\nafter"
    assert table.table_in(t) == "old"
    assert table.table_in(table.replace_table(t, "| new |")) == "| new |"
    assert table.replace_table(t, "x").endswith("\nafter")
    with pytest.raises(ValueError, match="markers"):
        table.replace_table("no table here", "x")


def test_return_delta_without_refs_says_to_pass_them():
    x = jnp.asarray(RNG.normal(size=(2, 16, 8, 2)))
    with pytest.raises(ValueError, match="needs references: mode 'gradient' runs without them"):
        jaxlift.attribute(image_model, W, x, None, target=0, mode="gradient", return_delta=True)
    # with references the reference-free mode's scores are unchanged and Δt is t(x) − t(r)
    g, d = jaxlift.attribute(image_model, W, x, R, target=0, mode="gradient", return_delta=True)
    np.testing.assert_allclose(g, jaxlift.attribute(image_model, W, x, None, target=0,
                                                    mode="gradient"), rtol=1e-6)
    np.testing.assert_allclose(d, image_model(W, x)[:, 0] - image_model(W, R)[0, 0], rtol=1e-5)
    grad = jax.vmap(jax.grad(lambda xi: image_model(W, xi[None])[0, 0]))(x)
    np.testing.assert_allclose(g, grad, rtol=1e-5, atol=1e-6)
