"""The plotting functions for any model's scores (issue 28): Captum-style image views with sign
filters and percentile clipping, methods side by side, and token text (HTML and PNG). Every
figure is built from small synthetic scores; what is drawn is read back from the figure and
checked numerically."""
from __future__ import annotations

import html
import re
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from jaxlift import viz

RNG = np.random.default_rng(28)


def _scores(h=10, w=12, c=3):
    s = RNG.normal(size=(h, w, c))
    s[2, 3] = 40.0  # an outlier that clipping must ignore
    return s


def _image(h=10, w=12):
    return RNG.uniform(size=(h, w, 3))


def _panels(fig: Figure, rows: int, cols: int) -> np.ndarray:
    return np.asarray(fig.axes[:rows * cols], dtype=object).reshape(rows, cols)


def _labelled(ax, label):
    return [im for im in ax.get_images() if im.get_label() == label]


# --------------------------------------------------------------------------- image_attribution


def test_image_attribution_views_signs_and_clipping(tmp_path):
    img, s = _image(), _scores()
    summed = s.sum(-1)
    signs = ("all", "positive", "negative", "absolute")
    views = ("image", "heat_map", "overlay", "masked", "alpha_scaling")
    fig = viz.image_attribution(img, s, views=views, sign=signs, clip_percentile=98,
                                title="t", unit="contribution", dpi=40,
                                save=tmp_path / "v.png")
    with Image.open(tmp_path / "v.png") as im:
        assert im.format == "PNG"
    v = np.percentile(np.abs(summed), 98)
    assert v < np.abs(summed).max() / 2       # the outlier is clipped, not the limit
    cells = _panels(fig, len(signs), len(views))
    assert [ax.get_title() for ax in cells[0]] == ["input", "heat map", "over the input",
                                                   "masked input", "alpha scaling"]
    assert all(not ax.axison for ax in cells[1:, 0])   # the input is drawn once
    for i, sign in enumerate(signs):
        shown = viz.sign_filter(summed, sign)
        (heat,) = _labelled(cells[i, 1], viz.ATTRIBUTION_LABEL)
        np.testing.assert_allclose(heat.get_array(), shown)
        lo, hi = heat.get_clim()
        assert (lo, hi) == pytest.approx((0.0, v) if sign == "absolute" else (-v, v))
        if sign == "positive":
            assert heat.get_array().min() == 0.0 and heat.get_array().max() > 0
        if sign == "negative":
            assert heat.get_array().max() == 0.0 and heat.get_array().min() < 0
        (over,) = _labelled(cells[i, 2], viz.ATTRIBUTION_LABEL)
        np.testing.assert_allclose(over.get_array(), shown)
        m = np.clip(np.abs(shown) / v, 0, 1)
        np.testing.assert_allclose(viz.view_strength(shown, v), m)
        (masked,) = _labelled(cells[i, 3], "masked")
        np.testing.assert_allclose(masked.get_array(), img * m[..., None])
        (alpha,) = _labelled(cells[i, 4], "alpha_scaling")
        np.testing.assert_allclose(alpha.get_array()[..., 3], m)
        np.testing.assert_allclose(alpha.get_array()[..., :3], img)
    # two colour bars, one per scale, ending in an arrow where the outlier was clipped
    bars = fig.axes[len(signs) * len(views):]
    assert len(bars) == 2
    assert any("contribution" in b.get_ylabel() for b in bars)


def test_image_attribution_vmax_grey_image_and_one_sign():
    img = RNG.uniform(size=(6, 6))  # (H, W): grey
    s = RNG.normal(size=(6, 6))
    fig = viz.image_attribution(img, s, views=("heat_map", "masked"), sign="positive",
                                vmax=0.5, dpi=30)
    heat, masked = fig.axes[0], fig.axes[1]
    (h,) = _labelled(heat, viz.ATTRIBUTION_LABEL)
    assert h.get_clim() == (-0.5, 0.5)
    kept = np.clip(np.where(s > 0, s, 0) / 0.5, 0, 1)
    expected = np.repeat(img[..., None], 3, -1) * kept[..., None]
    np.testing.assert_allclose(_labelled(masked, "masked")[0].get_array(), expected)
    assert heat.get_title() == "heat map" and heat.get_ylabel() == ""


@pytest.mark.parametrize("kwargs, match", [
    ({"views": ("heat_map", "heat_map")}, "distinct"),
    ({"views": ("blended",)}, "each view"),
    ({"sign": "absolute_value"}, "sign"),
    ({"sign": ("all", "all")}, "distinct"),
    ({"alpha": 2.0}, "alpha"),
    ({"clip_percentile": 0}, "clip_percentile"),
])
def test_image_attribution_refuses_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.image_attribution(_image(), _scores(), **kwargs)


def test_image_attribution_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="same \\(H, W\\)"):
        viz.image_attribution(_image(10, 12), np.zeros((12, 10)))


# --------------------------------------------------------------------------- method_grid


def test_method_grid_one_scale_per_method_with_sign_and_clipping():
    images = RNG.uniform(size=(3, 8, 8))
    small = RNG.normal(size=(3, 8, 8)) * 1e-3       # e.g. gradients
    big = RNG.normal(size=(3, 8, 8, 2)) * 10.0     # e.g. contributions, channels summed
    fig = viz.method_grid(images, {"gradient": small, "deeplift": big}, share="method",
                          sign="absolute", clip_percentile=90, dpi=30)
    cells = _panels(fig, 3, 3)
    for j, scores in enumerate((small, np.abs(big.sum(-1)))):
        v = np.percentile(np.abs(scores), 90)
        for i in range(3):
            (im,) = _labelled(cells[i, j + 1], viz.ATTRIBUTION_LABEL)
            assert im.get_clim() == pytest.approx((0.0, v))
            assert im.get_array().min() >= 0
    assert len(fig.axes) == 9 + 2  # one colour bar under each method
    assert [ax.get_title() for ax in cells[0]] == ["input", "gradient", "deeplift"]


def test_method_grid_negative_sign_global_scale():
    images = RNG.uniform(size=(2, 5, 5))
    s = RNG.normal(size=(2, 5, 5))
    fig = viz.method_grid(images, {"a": s, "b": 2 * s}, share="global", sign="negative", dpi=30)
    ims = [im for ax in fig.axes for im in _labelled(ax, viz.ATTRIBUTION_LABEL)]
    v = 2 * np.abs(np.where(s < 0, s, 0)).max()
    assert all(im.get_clim() == pytest.approx((-v, v)) for im in ims)
    assert all(im.get_array().max() <= 0 for im in ims)


# --------------------------------------------------------------------------- token text


_SPAN = re.compile(r'<span style="background-color: #([0-9a-f]{6});[^"]*" title="([^"]+)">'
                   r'([^<]*)</span>')


def test_token_text_html_colours_follow_the_sign():
    tokens = ["the", "film", "was", "not", "<b>good</b>", "&", "fun"]
    scores = np.array([0.0, 0.2, -0.05, -1.0, 0.8, 0.0, 3.0])
    t = viz.token_text(tokens, scores, title="review", unit="contribution to the logit",
                       clip_percentile=90)
    page = t._repr_html_()
    assert page == t.to_html() and "review" in page and "contribution to the logit" in page
    assert "<b>good</b>" not in page                          # tokens are escaped
    spans = _SPAN.findall(page)
    assert [html.unescape(tok) for _, _, tok in spans] == tokens
    v = np.percentile(np.abs(scores), 90)
    assert t.vmax == pytest.approx(v)
    for (colour, title, _), s in zip(spans, scores):
        r, g, b = (int(colour[k:k + 2], 16) for k in (0, 2, 4))
        assert float(title) == pytest.approx(s, abs=1e-4)
        if s > 0:
            assert r > b
        elif s < 0:
            assert b > r
        else:
            assert (r, g, b) == (255, 255, 255)
    # one scale: a score twice as large (below the limit) is a stronger colour
    c = viz.token_colors(np.array([0.1, 0.2, -0.1, -0.2]), 1.0)
    assert c[1, 1] < c[0, 1] and c[3, 0] < c[2, 0]
    # clipped at v: the outlier 3.0 has the same colour as a score of exactly v
    np.testing.assert_allclose(viz.token_colors(np.array([3.0]), v),
                               viz.token_colors(np.array([v]), v))


def test_token_text_several_texts_png(tmp_path):
    tokens = [["a", "dull", ",", "tedious", "plot"], ["great"] * 40]   # ragged; the second wraps
    scores = [np.array([0.0, -0.7, 0.0, -1.0, 0.1]), np.linspace(-1, 1, 40)]
    t = viz.token_text(tokens, scores, labels=["first", "second"], legend="Red raises it.")
    fig = t.figure(width=5, dpi=40)
    assert isinstance(fig, Figure)
    texts = [x.get_text() for x in fig.axes[0].texts]
    assert texts[:7] == ["first", "a", "dull", ",", "tedious", "plot", "second"]
    assert texts[-1] == "Red raises it."
    boxes = fig.axes[0].patches
    assert len(boxes) == 45
    faces = np.array([b.get_facecolor()[:3] for b in boxes])
    flat = np.concatenate(scores)
    assert np.all((faces[:, 0] > faces[:, 2]) == (flat > 0))
    ys = {round(b.get_y()) for b in boxes[5:]}
    assert len(ys) > 1                                                  # the long text wraps
    assert max(b.get_x() + b.get_width() for b in boxes) <= 5 * 72
    path = t.save_png(tmp_path / "t.png", width=5, dpi=40)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] == 200
    assert "dull" in t.to_html() and t.to_html().count("<span") == 45 + 3


def test_token_text_refuses_mismatches():
    with pytest.raises(ValueError, match="one score per token"):
        viz.token_text(["a", "b"], [[0.1, 0.2, 0.3]][0])
    with pytest.raises(TypeError, match="not one string"):
        viz.token_text("a b", np.zeros(3))
    with pytest.raises(ValueError, match="\\(N, T\\)"):
        viz.token_text([["a"], ["b"]], np.zeros(2))
    with pytest.raises(ValueError, match="labels"):
        viz.token_text(["a"], np.zeros(1), labels=["x", "y"])
    with pytest.raises(ValueError, match="NaN"):
        viz.token_text(["a"], np.array([np.nan]))


def test_import_jaxlift_stays_light():
    """``import jaxlift`` and reading ``jaxlift.viz``'s docs do not import matplotlib until the
    package is used; ``jaxlift.viz`` itself does."""
    code = ("import sys, jaxlift; assert 'matplotlib' not in sys.modules; "
            "jaxlift.viz.token_text; assert 'matplotlib' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
