"""Smoke test of experiments/cats_dogs.py on the real pretrained cats-vs-dogs model, and the
summation-to-delta check of issue 5 on its logit (black and blurred references).

The model needs its full 256×256 input, so the smallest configuration is one photo
(test1.jpeg, a cat) with two references (black, blurred) — about 30 s on 2 CPU cores.
"""
import importlib

import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift import references as R

cd = importlib.import_module("experiments.cats_dogs")


@pytest.fixture(scope="module")
def data_dir(shared_data):
    d = shared_data / "catsordogs"
    if not (d / "model.h5").is_file():
        pytest.skip(f"cats-vs-dogs model not found in {d}")
    return d


@pytest.mark.slow  # an end-to-end study: run by .ci/run as its second step
def test_smoke_run(data_dir, tmp_path):
    """The experiment's --smoke run (test1.jpeg, black and blurred references, both modes),
    checked in one test so that pytest-xdist never runs the 256×256 experiment twice."""
    ctx = cd.main(["--smoke", "--data", str(data_dir), "--out", str(tmp_path), "--batch-size", "2"])
    check_prediction_equals_keras(ctx)
    check_summation_to_delta_and_delta_is_logit_difference(ctx)
    check_valid_png_and_report(tmp_path)


def _rel_summation_error(contribs, delta):
    """|ΣC − Δ| / (|Δ| + Σ|C|) per leading index, summed in float64 from float32 scores."""
    flat = np.asarray(contribs, np.float64).reshape(*np.shape(delta), -1)
    return np.abs(flat.sum(-1) - np.asarray(delta)) / (np.abs(delta) + np.abs(flat).sum(-1))


def check_prediction_equals_keras(ctx):
    """P(dog) of test1.jpeg equals Keras's 0.2818982 (cat), and z is its logit."""
    assert ctx["photo_names"] == ["test1.jpeg"]
    p = float(ctx["p_photo"][0])
    assert abs(p - 0.2818982) <= 1e-5  # Keras 2.13.1's value (docs/design.md §21)
    assert p < 0.5  # cat
    assert ctx["z_photo"][0] == pytest.approx(np.log(p / (1 - p)), abs=1e-5)


def check_summation_to_delta_and_delta_is_logit_difference(ctx):
    """References are what they claim; Δ = z(x) − z(r); ΣC = Δ within SUM_TOL; cat = −dog."""
    refs = ctx["refs"]  # (1, 2, 256, 256, 1): black, blurred
    assert refs.shape == (1, 2, 256, 256, 1)
    assert float(np.abs(refs[0, 0]).max()) == 0.0
    # the blurred reference really is a heavy blur of the photo: same mean brightness, and
    # its pixel-to-pixel differences (edges, texture) are almost gone
    photo = ctx["photos"][0]
    assert abs(refs[0, 1].mean() - photo.mean()) < 1e-3
    assert np.abs(np.diff(refs[0, 1], axis=0)).mean() < 0.1 * np.abs(np.diff(photo, axis=0)).mean()
    z_refs = np.log(ctx["p_ref"] / (1 - ctx["p_ref"]))  # (1, 2)
    for mode in cd.MODES:
        run = ctx["runs"][mode]
        c, d = run["contribs"], run["delta"]  # (1, 2, 2, 256, 256, 1), (1, 2, 2)
        assert c.shape == (1, 2, 2, 256, 256, 1) and np.all(np.isfinite(c))
        # Δ for the dog target is z(photo) − z(reference); the cat target is its negative
        np.testing.assert_allclose(d[..., 0], ctx["z_photo"][0] - z_refs, atol=1e-4)
        np.testing.assert_allclose(d[..., 1], -d[..., 0], atol=1e-6)
        assert np.abs(d[..., 0]).min() > 0.1  # a non-trivial difference to explain
        assert _rel_summation_error(c, d).max() <= cd.SUM_TOL
        # with a single logit the cat evidence is exactly minus the dog evidence
        np.testing.assert_allclose(c[:, :, 1], -c[:, :, 0], atol=1e-7)
        # not a degenerate map: evidence for both classes, spread over many pixels
        dog = c[0, 0, 0, ..., 0]
        assert (dog > 0).sum() > 1000 and (dog < 0).sum() > 1000


def check_valid_png_and_report(out):
    """The figure is a real, non-blank PNG, and the report records the check."""
    from PIL import Image

    png = out / "catsdogs_test1.png"
    assert png.is_file() and png.stat().st_size > 10_000
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 500 and im.size[1] > 300
        assert np.asarray(im.convert("RGB")).std() > 10  # not a blank image
    report = (out / "catsdogs.md").read_text()
    assert "0.2818982" in report and "all pass" in report


@pytest.mark.parametrize("mode", ["rescale", pytest.param("reveal_cancel", marks=pytest.mark.slow)])
def test_issue5_logit_summation_to_delta_black_and_blurred(data_dir, mode):
    """Issue 5: jaxlift.attribute on the cats-vs-dogs model's logit, with a black and a
    blurred reference, satisfies summation-to-delta (float32 bound: see cd.SUM_TOL)."""
    model, variables = cd.load_cats_dogs(data_dir / "model.h5")
    x = cd.load_photos(data_dir, ["test2.jpeg"])  # the dog photo (the smoke run uses the cat)
    refs = jnp.stack([jnp.zeros_like(x), R.blurred(x)], axis=1)  # (1, 2, 256, 256, 1)

    def logit(v, xb):
        return model.apply(v, xb, logits=True)

    c, d = jaxlift.attribute(logit, variables, x, refs, mode=mode, average_refs=False,
                             return_delta=True, batch_size=2)
    z_x = np.asarray(logit(variables, x))[0, 0]
    z_r = np.asarray(logit(variables, refs[0]))[:, 0]
    np.testing.assert_allclose(np.asarray(d)[0], z_x - z_r, atol=1e-4)
    assert _rel_summation_error(c, d).max() <= cd.SUM_TOL
    # and the plain absolute check of the README on the average over the two references
    c_avg = np.asarray(c, np.float64).mean(axis=1)
    assert abs(c_avg.sum() - float(np.mean(z_x - z_r))) <= 1e-4
