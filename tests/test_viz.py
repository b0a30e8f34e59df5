"""Figures from jaxlift.viz: rendered to PNG, read back with Pillow, colour limits checked."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from PIL import Image

from jaxlift import viz

RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------- helpers


def _smooth_scores(h: int = 12, w: int = 10, scale: float = 1.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return scale * np.sin(xx / 2.0) * np.cos(yy / 3.0)


def _image(h: int = 12, w: int = 10) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.exp(-((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / 20.0)


def _check_png(path: Path, fig: Figure) -> None:
    """The PNG exists, is figsize*dpi pixels and is not (nearly) one colour."""
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        w_in, h_in = fig.get_size_inches()
        assert im.size == (round(w_in * fig.dpi), round(h_in * fig.dpi))
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 20
    assert not list(path.parent.glob(".*.tmp")), "temporary file left behind"


def _attribution_images(fig: Figure) -> list[AxesImage]:
    return [im for ax in fig.axes for im in ax.get_images() if im.get_label() == viz.ATTRIBUTION_LABEL]


# --------------------------------------------------------------------------- image_heatmap


def test_image_heatmap_overlay_png_and_symmetric_limits(tmp_path):
    s = _smooth_scores() + 0.3  # asymmetric range: limits must still be symmetric
    path = tmp_path / "heat.png"
    fig = viz.image_heatmap(_image(), s, title="overlay", figsize=(4, 3), dpi=50, save=path)
    assert isinstance(fig, Figure) and isinstance(fig.canvas, FigureCanvasAgg)
    _check_png(path, fig)
    (heat,) = _attribution_images(fig)
    lo, hi = heat.get_clim()
    assert lo == -hi and hi == pytest.approx(np.abs(s).max())
    assert heat.get_alpha() == pytest.approx(0.6)
    assert len(fig.axes) == 2  # image axes + colorbar


def test_image_heatmap_sums_channels_and_accepts_jax(tmp_path):
    jnp = pytest.importorskip("jax.numpy")
    s = np.stack([_smooth_scores(), _smooth_scores(), -0.5 * _smooth_scores()], axis=-1)
    rgb = (RNG.random((12, 10, 3)) * 255).astype(np.uint8)
    fig = viz.image_heatmap(jnp.asarray(rgb), jnp.asarray(s), overlay=False, figsize=(6, 3), dpi=40)
    (heat,) = _attribution_images(fig)
    np.testing.assert_allclose(heat.get_array(), s.sum(-1))
    assert heat.get_clim() == pytest.approx((-np.abs(s.sum(-1)).max(), np.abs(s.sum(-1)).max()))
    path = viz.save_png(fig, tmp_path / "side.png")
    _check_png(path, fig)


def test_image_heatmap_given_vmax_and_no_image(tmp_path):
    fig = viz.image_heatmap(None, _smooth_scores(), vmax=2.5, colorbar=False, figsize=(2, 2), dpi=50,
                            save=tmp_path / "v.png")
    (heat,) = _attribution_images(fig)
    assert heat.get_clim() == (-2.5, 2.5)
    assert len(fig.axes) == 1
    _check_png(tmp_path / "v.png", fig)


def test_all_zero_scores_get_a_valid_scale():
    fig = viz.image_heatmap(None, np.zeros((4, 4)))
    assert _attribution_images(fig)[0].get_clim() == (-1.0, 1.0)


@pytest.mark.parametrize(
    "image, scores, match",
    [
        (None, np.zeros(5), r"scores must have shape \(H, W\) or \(H, W, C\), got shape \(5,\)"),
        (None, np.zeros((2, 3, 4, 5)), r"got shape \(2, 3, 4, 5\)"),
        (np.zeros((4, 4)), np.zeros((4, 5)), r"same \(H, W\).*\(4, 4\).*\(4, 5\)"),
        (np.zeros((4, 4, 2)), np.zeros((4, 4)), r"image must have shape .*got shape \(4, 4, 2\)"),
        (None, np.array([[np.nan, 0.0]]), "NaN or inf"),
    ],
)
def test_image_heatmap_bad_shapes(image, scores, match):
    with pytest.raises(ValueError, match=match):
        viz.image_heatmap(image, scores)


def test_image_heatmap_bad_vmax_and_alpha():
    with pytest.raises(ValueError, match="vmax must be a positive"):
        viz.image_heatmap(None, np.ones((2, 2)), vmax=-1.0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        viz.image_heatmap(np.ones((2, 2)), np.ones((2, 2)), alpha=1.5)


# --------------------------------------------------------------------------- method_grid


def _grid_inputs(n: int = 3):
    images = np.stack([_image() * (i + 1) / n for i in range(n)])
    scale = np.array([1.0, 3.0, 0.2])[:n, None, None]
    scores = {
        "gradient": _smooth_scores()[None] * scale,
        "deeplift": -2.0 * np.roll(_smooth_scores(), 3, axis=1)[None] * scale,
        "ixg": np.repeat((_smooth_scores()[None] * scale)[..., None], 3, axis=-1),  # channels summed
    }
    return images, scores


def _grid_clims(fig: Figure, n: int, m: int) -> np.ndarray:
    """clim upper limits per cell, shape (n, m); also checks symmetry."""
    cells = fig.axes[: n * (m + 1)]
    out = np.zeros((n, m))
    for i in range(n):
        for j in range(m):
            (im,) = [x for x in cells[i * (m + 1) + j + 1].get_images() if x.get_label() == viz.ATTRIBUTION_LABEL]
            lo, hi = im.get_clim()
            assert lo == -hi
            out[i, j] = hi
    return out


def test_method_grid_row_shared_limits(tmp_path):
    images, scores = _grid_inputs()
    path = tmp_path / "grid.png"
    fig = viz.method_grid(images, scores, row_labels=["a", "b", "c"], title="methods", cell_size=1.5,
                          dpi=40, save=path)
    _check_png(path, fig)
    clims = _grid_clims(fig, 3, 3)
    summed = [s.sum(-1) if s.ndim == 4 else s for s in scores.values()]
    for i in range(3):
        expected = max(np.abs(s[i]).max() for s in summed)
        np.testing.assert_allclose(clims[i], expected)
    assert len({round(c, 9) for c in clims[:, 0]}) == 3  # rows differ
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles == ["input", "gradient", "deeplift", "ixg"]
    assert fig.axes[4].get_ylabel() == "b"
    assert len(fig.axes) == 12 + 3  # cells + one colorbar per row


def test_method_grid_global_and_fixed_limits(tmp_path):
    images, scores = _grid_inputs()
    fig = viz.method_grid(images, scores, share="global", alpha=0.5, dpi=30)
    clims = _grid_clims(fig, 3, 3)
    summed = [s.sum(-1) if s.ndim == 4 else s for s in scores.values()]
    np.testing.assert_allclose(clims, max(np.abs(s).max() for s in summed))
    assert len(fig.axes) == 12 + 1
    path = viz.save_png(fig, tmp_path / "global.png")
    _check_png(path, fig)

    fig = viz.method_grid(images, scores, share="row", vmax=0.7, dpi=30)
    np.testing.assert_allclose(_grid_clims(fig, 3, 3), 0.7)


def test_method_grid_single_example_rgb():
    images = (RNG.random((1, 8, 8, 3)) * 255).astype(np.uint8)
    fig = viz.method_grid(images, {"m": RNG.normal(size=(1, 8, 8, 3))}, colorbar=False)
    assert len(fig.axes) == 2


@pytest.mark.parametrize(
    "images, scores, kwargs, match",
    [
        (np.zeros((8, 8)), {"m": np.zeros((1, 8, 8))}, {}, r"images must be a batch .*got shape \(8, 8\)"),
        (np.zeros((2, 8, 8)), {}, {}, "non-empty mapping"),
        (np.zeros((2, 8, 8)), {"m": np.zeros((3, 8, 8))}, {}, r"scores_by_method\['m'\].*\(2, 8, 8\).*\(3, 8, 8\)"),
        (np.zeros((2, 8, 8)), {"m": np.zeros((2, 8, 7))}, {}, r"got shape \(2, 8, 7\)"),
        (np.zeros((2, 8, 8)), {"m": np.zeros((2, 8, 8))}, {"share": "column"}, "share must be 'row' or 'global'"),
        (np.zeros((2, 8, 8)), {"m": np.zeros((2, 8, 8))}, {"row_labels": ["x"]}, "one label per example"),
    ],
)
def test_method_grid_bad_inputs(images, scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.method_grid(images, scores, **kwargs)


# --------------------------------------------------------------------------- feature_bars


def test_feature_bars_sorted_coloured_topk(tmp_path):
    scores = np.array([0.1, -2.0, 0.5, 3.0, -0.05, 1.0])
    names = ["age", "bmi", "bp", "s1", "s2", "s3"]
    path = tmp_path / "bars.png"
    fig = viz.feature_bars(scores, names, top_k=4, dpi=50, save=path)
    _check_png(path, fig)
    ax = fig.axes[0]
    bars = sorted(ax.patches, key=lambda p: p.get_y())  # y axis inverted: smallest y on top
    assert [p.get_width() for p in bars] == [3.0, -2.0, 1.0, 0.5]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["s1", "bmi", "s3", "bp"]
    pos_rgba, neg_rgba = bars[0].get_facecolor(), bars[1].get_facecolor()
    assert pos_rgba != neg_rgba
    assert bars[2].get_facecolor() == pos_rgba
    lo, hi = ax.get_xlim()
    assert lo == -hi


def test_feature_bars_defaults_and_errors():
    fig = viz.feature_bars(RNG.normal(size=5), top_k=50)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] != []
    assert len(fig.axes[0].patches) == 5
    with pytest.raises(ValueError, match=r"scores must have shape \(F,\).*got shape \(2, 3\)"):
        viz.feature_bars(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"one name per score \(3\), got 2"):
        viz.feature_bars(np.zeros(3), ["a", "b"])
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        viz.feature_bars(np.zeros(3), top_k=0)


# --------------------------------------------------------------------------- sequence_logo


def test_sequence_logo_letters_heights(tmp_path):
    length = 12
    one_hot = np.eye(4)[RNG.integers(0, 4, length)]
    scores = RNG.normal(size=(length, 4)) * one_hot
    path = tmp_path / "logo.png"
    fig = viz.sequence_logo(scores, "ACGT", figsize=(5, 2), dpi=60, save=path)
    _check_png(path, fig)
    ax = fig.axes[0]
    assert len(ax.patches) == np.count_nonzero(scores)
    # every letter spans [0, score] (upright) in y and sits over its position in x
    spans = sorted(
        (p.get_path().get_extents() for p in ax.patches), key=lambda b: (b.x0 + b.x1) / 2
    )
    for i, box in enumerate(spans):
        value = scores[i][scores[i] != 0][0]
        assert (box.x0 + box.x1) / 2 == pytest.approx(i, abs=1e-6)
        assert box.y0 == pytest.approx(min(0.0, value), abs=1e-6)
        assert box.y1 == pytest.approx(max(0.0, value), abs=1e-6)
    lo, hi = ax.get_ylim()
    assert lo <= scores.min() and hi >= scores.max()


def test_sequence_logo_stacks_dense_scores_and_colours():
    scores = np.array([[0.5, 1.0, -0.25, -1.0]])
    boxes = viz.logo_boxes(scores)
    by_letter = {k: (y, h) for _, k, _, y, h in boxes}
    assert by_letter[0] == (0.0, 0.5) and by_letter[1] == (0.5, 1.0)  # largest on top
    assert by_letter[2] == (-0.25, 0.25) and by_letter[3] == (-1.25, 1.0)
    fig = viz.sequence_logo(scores, flip_negative=True)
    colours = {tuple(p.get_facecolor()) for p in fig.axes[0].patches}
    assert len(colours) == 4


def test_sequence_logo_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \(L, 4\).*'ACGT'.*got shape \(4, 10, 1\)"):
        viz.sequence_logo(np.zeros((4, 10, 1)))
    with pytest.raises(ValueError, match=r"shape \(L, 4\).*got shape \(10, 5\)"):
        viz.sequence_logo(np.zeros((10, 5)))
    with pytest.raises(ValueError, match="distinct"):
        viz.sequence_logo(np.zeros((3, 4)), alphabet="AACG")
    fig = viz.sequence_logo(np.ones((3, 20)), alphabet="ACDEFGHIKLMNPQRSTVWY")  # protein
    assert len(fig.axes[0].patches) == 60


# --------------------------------------------------------------------------- graph_nodes


def _node_collection(fig: Figure) -> PathCollection:
    (nodes,) = [c for c in fig.axes[0].collections if c.get_label() == viz.ATTRIBUTION_LABEL]
    return nodes


def test_graph_nodes_layout_and_symmetric_limits(tmp_path):
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (3, 4), (4, 5), (6, 7)]
    scores = np.array([0.2, -1.5, 0.7, 0.1, -0.3, 0.9, 0.0, 0.4])
    path = tmp_path / "graph.png"
    fig = viz.graph_nodes(scores, edges=edges, node_labels=list("ABCDEFGH"), figsize=(4, 3), dpi=50,
                          save=path)
    _check_png(path, fig)
    nodes = _node_collection(fig)
    assert nodes.get_clim() == (-1.5, 1.5)
    np.testing.assert_allclose(nodes.get_array(), scores)
    pos = nodes.get_offsets()
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(scores))
    assert d.min() > 0.05, "layout put two nodes on top of each other"
    assert np.all(np.abs(pos) <= 1.0 + 1e-9)
    assert len(fig.axes[0].collections[0].get_segments()) == len(edges)


@pytest.mark.parametrize("layout", ["spring", "spectral", "circle"])
def test_graph_layouts_are_deterministic_and_finite(layout):
    edges = [(i, (i + 1) % 7) for i in range(7)] + [(0, 3)]
    a = viz.graph_layout(7, edges, layout)
    b = viz.graph_layout(7, edges, layout)
    assert a.shape == (7, 2) and np.all(np.isfinite(a))
    np.testing.assert_array_equal(a, b)


def test_graph_nodes_given_positions_and_vmax():
    pos = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 1.0]])
    fig = viz.graph_nodes(np.array([1.0, -0.2, 0.3]), positions=pos, edges=np.array([[0, 1], [1, 2]]),
                          vmax=4.0)
    nodes = _node_collection(fig)
    assert nodes.get_clim() == (-4.0, 4.0)
    np.testing.assert_allclose(nodes.get_offsets(), pos)


def test_connected_components():
    comps = viz.connected_components(6, [(0, 1), (4, 5), (5, 3)])
    assert [c.tolist() for c in comps] == [[3, 4, 5], [0, 1], [2]]


@pytest.mark.parametrize(
    "scores, kwargs, match",
    [
        (np.zeros((3, 2)), {}, r"node_scores must have shape \(N,\).*got shape \(3, 2\)"),
        (np.zeros(3), {"edges": [(0, 3)]}, r"node index 3, but there are 3 nodes"),
        (np.zeros(3), {"edges": [0, 1, 2]}, r"edges must have shape \(E, 2\).*got shape \(3,\)"),
        (np.zeros(3), {"positions": np.zeros((3, 3))}, r"positions must have shape \(N, 2\) = \(3, 2\)"),
        (np.zeros(3), {"node_labels": ["a"]}, r"one label per node \(3\), got 1"),
        (np.zeros(3), {"layout": "kamada"}, "layout must be one of"),
    ],
)
def test_graph_nodes_bad_inputs(scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.graph_nodes(scores, **kwargs)


# --------------------------------------------------------------------------- save_png


def _small_fig() -> Figure:
    return viz.feature_bars(np.array([1.0, -1.0]), figsize=(2, 1), dpi=30)


def test_save_png_missing_folder_names_it(tmp_path):
    folder = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match="folder does not exist") as info:
        viz.save_png(_small_fig(), folder / "x.png")
    assert str(folder) in str(info.value)
    assert not (tmp_path / "no").exists()


def test_save_png_parent_is_a_file(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="not a folder") as info:
        viz.image_heatmap(None, np.eye(3), save=blocker / "x.png")
    assert str(blocker) in str(info.value)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_save_png_unwritable_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="not writable") as info:
            viz.save_png(_small_fig(), folder / "x.png")
        assert str(folder) in str(info.value)
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o700)


def test_save_png_failure_leaves_no_partial_file_and_keeps_old(tmp_path, monkeypatch):
    target = tmp_path / "keep.png"
    target.write_bytes(b"old contents")
    fig = _small_fig()

    def broken_savefig(fh, **kwargs):
        fh.write(b"\x89PNG half written")
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(fig, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer exploded"):
        viz.save_png(fig, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png"]
    assert target.read_bytes() == b"old contents"


def test_save_png_overwrites_and_honours_dpi(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    fig = _small_fig()
    assert viz.save_png(fig, str(target), dpi=60) == target
    with Image.open(target) as im:
        assert im.size == (120, 60)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_save_png_permission_error_is_reported_with_folder(tmp_path, monkeypatch):
    """As root a read-only folder is still writable, so simulate the refusal."""

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    import jaxlift.io.atomic

    monkeypatch.setattr(jaxlift.io.atomic.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError, match="folder is not writable") as info:
        viz.save_png(_small_fig(), tmp_path / "x.png")
    assert info.value.filename == str(tmp_path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- sign, clipping, legend


def test_sign_filter_keeps_only_the_chosen_sign():
    s = np.array([[-2.0, -0.5, 0.0], [0.25, 1.0, 3.0]])
    np.testing.assert_array_equal(viz.sign_filter(s, "all"), s)
    np.testing.assert_array_equal(viz.sign_filter(s, "positive"), [[0, 0, 0], [0.25, 1.0, 3.0]])
    np.testing.assert_array_equal(viz.sign_filter(s, "negative"), [[-2.0, -0.5, 0], [0, 0, 0]])
    np.testing.assert_array_equal(viz.sign_filter(s, "absolute"), np.abs(s))
    with pytest.raises(ValueError, match=r"sign must be one of 'all', 'positive', 'negative', "
                                         r"'absolute', got 'pos'"):
        viz.sign_filter(s, "pos")


def test_color_limit_clips_at_the_percentile_and_pools_arrays():
    body = np.linspace(-1.0, 1.0, 999)
    with_outlier = np.append(body, 50.0)
    assert viz.color_limit(with_outlier) == 50.0
    v = viz.color_limit(with_outlier, clip_percentile=99.0)
    assert v == pytest.approx(np.percentile(np.abs(with_outlier), 99.0)) and v < 1.0
    assert viz.color_limit(body, 3 * body, clip_percentile=100) == pytest.approx(3.0)  # shared
    assert viz.color_limit(with_outlier, clip_percentile=99.0, vmax=7.0) == 7.0
    sparse = np.zeros(1000)
    sparse[:3] = [0.5, -2.0, 1.0]  # the 99.5th percentile of |s| is 0: use the nonzero ones
    assert 0.5 <= viz.color_limit(sparse, clip_percentile=99.5) <= 2.0
    assert viz.color_limit(np.zeros(4), clip_percentile=99.5) == 1.0
    for bad in (0, -1, 100.5, "high"):
        with pytest.raises(ValueError, match="clip_percentile must be"):
            viz.color_limit(body, clip_percentile=bad)


def test_legend_sentence_says_what_red_and_blue_mean():
    text = viz.legend_sentence("the class 7 logit")
    assert text.startswith("Red: raises the class 7 logit relative to the reference")
    assert "blue: lowers it" in text
    assert "Blue: lowers" in viz.legend_sentence("t", "negative")
    assert "|score|" in viz.legend_sentence("t", "absolute")
    with pytest.raises(ValueError, match="sign must be one of"):
        viz.legend_sentence("t", "both")


# --------------------------------------------------------------------------- attribution_grid


def _score_images(fig: Figure) -> list[AxesImage]:
    return [im for ax in fig.axes for im in ax.get_images()
            if im.get_label() == viz.ATTRIBUTION_LABEL]


def _colorbar_axes(fig: Figure):
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_attribution_grid_one_panel_per_target_on_one_scale(tmp_path):
    maps = {f"class {t}": _smooth_scores(scale=t + 1.0) for t in range(5)}
    path = tmp_path / "grid.png"
    fig = viz.attribution_grid(_image(), maps, unit="contribution to each class's logit",
                               title="input file: x.png", subtitle="predicted: class 4",
                               legend=viz.legend_sentence("each class's logit"), ncols=3,
                               clip_percentile=None, cell_size=1.2, dpi=40, save=path)
    _check_png(path, fig)
    heats = _score_images(fig)
    assert len(heats) == 5 and len({id(im.axes) for im in heats}) == 5  # one axes per target
    assert [im.axes.get_title() for im in heats] == list(maps)
    top = np.abs(maps["class 4"]).max()
    assert {im.get_clim() for im in heats} == {(-top, top)}  # shared: the largest of all
    (cbar,) = _colorbar_axes(fig)
    assert cbar.get_ylabel() == "contribution to each class's logit"
    assert fig.get_suptitle() == "input file: x.png\npredicted: class 4"
    assert fig._supxlabel.get_text().startswith("Red: raises each class's logit")
    # 1 input + 5 maps on a 3-column grid: 2 rows, the last slot switched off
    cells = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(cells) == 6 and sum(ax.axison for ax in cells) == 6


def test_attribution_grid_sign_clip_and_overlay():
    s = _smooth_scores()
    s[0, 0] = 40.0  # an outlier that would wash the map out
    fig = viz.attribution_grid(_image(), {"logit": s}, styles=("map", "overlay"),
                               sign="negative", clip_percentile=95, alpha=0.5, dpi=30)
    heats = _score_images(fig)
    assert [im.axes.get_title() for im in heats] == ["contributions", "over the input"]
    for im in heats:
        plotted = np.asarray(im.get_array())
        assert plotted.max() == 0.0  # the positive scores (outlier included) are zeroed
        np.testing.assert_array_equal(plotted, np.minimum(s, 0.0))
    v = np.percentile(np.abs(np.minimum(s, 0.0)), 95)
    assert heats[0].get_clim() == pytest.approx((-v, v)) and v < np.abs(s).max()
    overlay = heats[1]
    assert len(overlay.axes.get_images()) == 2  # grey input beneath, scores on top
    alpha = np.asarray(overlay.get_alpha())
    assert alpha.shape == s.shape and alpha.max() == pytest.approx(0.5) and alpha.min() == 0.0
    fig = viz.attribution_grid(_image(), {"logit": s}, sign="absolute", clip_percentile=100,
                               dpi=30)
    (heat,) = _score_images(fig)
    assert heat.get_clim() == (0.0, 40.0) and np.asarray(heat.get_array()).min() >= 0.0


@pytest.mark.parametrize("image, maps, kwargs, match", [
    (_image(), {}, {}, "scores_by_target must be a non-empty mapping"),
    (_image(), {"a": np.zeros((3, 3))}, {}, r"must have the image's \(H, W\) = \(12, 10\)"),
    (None, {"a": np.zeros((3, 3))}, {}, "an overlay needs the image"),
    (_image(), {"a": _smooth_scores()}, {"styles": ("heat",)}, "each style must be one of"),
    (_image(), {"a": _smooth_scores()}, {"styles": ()}, "styles must be distinct"),
    (_image(), {"a": _smooth_scores()}, {"sign": "pos"}, "sign must be one of"),
    (_image(), {"a": _smooth_scores()}, {"clip_percentile": 0}, r"clip_percentile must be in"),
    (_image(), {"a": _smooth_scores()}, {"alpha": 2}, r"alpha must be in \[0, 1\]"),
    (_image(), {"a": _smooth_scores()}, {"ncols": 0}, "ncols must be a positive integer"),
])
def test_attribution_grid_bad_options(image, maps, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.attribution_grid(image, maps, **kwargs)


# --------------------------------------------------------------------------- target_bars


def test_target_bars_top_k_per_target_on_one_scale(tmp_path):
    scores = {"class 0": np.array([0.1, -2.0, 0.5, 3.0, -0.05]),
              "class 1": np.array([1.0, 0.2, -0.3, 0.0, 0.4])}
    names = ["age", "bmi", "bp", "s1", "s2"]
    path = tmp_path / "bars.png"
    fig = viz.target_bars(scores, names, top_k=3, unit="contribution to each class's logit",
                          legend="Red: raises.", dpi=40, save=path)
    _check_png(path, fig)
    ax0, ax1 = fig.axes
    assert [p.get_width() for p in ax0.patches] == [3.0, -2.0, 0.5]  # top 3 by |score|
    assert [t.get_text() for t in ax0.get_yticklabels()] == ["s1", "bmi", "bp"]
    assert [p.get_width() for p in ax1.patches] == [1.0, 0.4, -0.3]
    assert ax0.get_xlim() == ax1.get_xlim() == pytest.approx((-3.15, 3.15))  # shared scale
    assert ax0.get_xlabel() == "contribution to each class's logit"
    assert ax0.patches[0].get_facecolor() != ax0.patches[1].get_facecolor()  # red vs blue
    fig = viz.target_bars(scores, names, dpi=40)
    assert [len(ax.patches) for ax in fig.axes] == [5, 5]  # every feature without top_k


def test_target_bars_sign_filter_and_positions():
    scores = {"t": np.array([0.1, -2.0, 0.5, 3.0, -0.05])}
    fig = viz.target_bars(scores, sign="positive", dpi=30)
    assert [p.get_width() for p in fig.axes[0].patches] == [3.0, 0.5, 0.1]  # negatives dropped
    assert fig.axes[0].get_xlim()[0] == 0.0
    fig = viz.target_bars({"t": -np.ones(3)}, sign="positive", dpi=30)
    assert len(fig.axes[0].patches) == 0 and "no positive scores" in fig.axes[0].texts[0].get_text()
    fig = viz.target_bars(scores, order="position", dpi=30)
    (ax,) = fig.axes
    assert [p.get_height() for p in ax.patches] == list(scores["t"])  # input order, all of them
    assert ax.get_xlabel() == "position"


@pytest.mark.parametrize("scores, kwargs, match", [
    ({}, {}, "non-empty mapping"),
    ({"a": np.zeros((2, 3))}, {}, r"must have shape \(F,\) with F >= 1.*got shape \(2, 3\)"),
    ({"a": np.zeros(3), "b": np.zeros(4)}, {}, "has 4 scores but the first target has 3"),
    ({"a": np.zeros(3)}, {"feature_names": ["x"]}, r"one name per score \(3\), got 1"),
    ({"a": np.zeros(3)}, {"top_k": 0}, "top_k must be a positive integer"),
    ({"a": np.zeros(3)}, {"order": "size"}, "order must be one of 'magnitude', 'position'"),
    ({"a": np.zeros(3)}, {"sign": "neg"}, "sign must be one of"),
])
def test_target_bars_bad_options(scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        viz.target_bars(scores, **kwargs)


# --------------------------------------------------------------------------- jaxlift attribute --png


def _cli_result(cli, scores, logits, targets, delta):
    return cli.Result(np.asarray(scores), np.asarray(delta), np.asarray(targets),
                      np.asarray(logits, np.float32))


def test_attribute_pages_name_the_input_and_say_what_is_explained(tmp_path):
    from jaxlift import cli

    x = RNG.random((2, 12, 10, 1)).astype(np.float32)
    scores = np.stack([_smooth_scores()[..., None], -_smooth_scores()[..., None]])
    logits = [[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]]
    result = _cli_result(cli, scores, logits, [1, 0], [1.5, -2.0])
    batch = cli.Batch(x, ["0", "1"], "float32", "data/digits.npy")
    pages = cli.heatmap_pages(batch, result, cli.TargetSpec("pred"), reference="zeros",
                              mode="rescale", clip_percentile=90.0)
    p = pages[0]
    assert [q.filename for q in pages] == ["input_0000.png", "input_0001.png"]
    assert p.kind == "image" and p.title == "input: example 0 of digits.npy"  # not a bare "0"
    prob = np.exp(3.0) / np.exp([0.0, 3.0, 1.0]).sum()
    for fact in (f"predicted: class 1 (p = {prob:.3f})", "explained: the class 1 logit",
                 "reference: zeros", "mode: rescale", "Δ = 1.5"):
        assert fact in p.subtitle
    assert pages[1].target == "the class 0 logit"
    written = cli.write_pngs(tmp_path, pages[:1])
    assert written == [tmp_path / "input_0000.png"]
    with Image.open(written[0]) as im:
        assert im.format == "PNG" and im.size[0] > 2 * im.size[1]  # input | map | overlay

    images = cli.Batch(x[:1], ["seven.png"], "image", "photos")
    allt = _cli_result(cli, np.repeat(scores[:1, None], 3, axis=1), logits[:1], [-1], [[0, 0, 0]])
    (page,) = cli.heatmap_pages(images, allt, cli.TargetSpec("all"))
    assert page.title == "input file: seven.png" and page.filename == "seven.png"
    assert list(page.panels) == ["class 0 logit", "class 1 logit", "class 2 logit"]


def test_attribute_pages_for_a_sigmoid_model_and_for_tabular_inputs(tmp_path):
    from jaxlift import cli

    x = RNG.normal(size=(1, 6)).astype(np.float32)
    s = np.array([[0.3, -0.2, 0.05, 0.0, 1.0, -0.6]])
    result = _cli_result(cli, s, [[-1.0]], [0], [0.55])  # one logit < 0: class 0 predicted
    batch = cli.Batch(x, ["0"], "float32", "tab.npy")
    (page,) = cli.heatmap_pages(batch, result, cli.TargetSpec("pred"), top_k=3, sign="all")
    assert page.kind == "features" and page.names == tuple(f"feature {k}" for k in range(6))
    p0 = 1.0 - 1.0 / (1.0 + np.exp(1.0))  # P(class 0) = 1 - sigmoid(logit)
    assert f"predicted: class 0 (p = {p0:.3f})" in page.subtitle
    assert page.target == "the class 0 logit (−z)"  # a single logit's class 0 is −z
    (path,) = cli.write_pngs(tmp_path, [page])
    with Image.open(path) as im:
        assert im.format == "PNG"
    layer = cli.heatmap_pages(batch, result, cli.TargetSpec("pred"), layer="hidden")
    assert layer[0].names[0] == "unit 0" and "layer: hidden" in layer[0].subtitle
    conv = _cli_result(cli, np.zeros((1, 4, 4, 2)), [[-1.0]], [0], [0.0])
    assert cli.heatmap_pages(batch, conv, cli.TargetSpec("pred")) == []  # no figure for that


def test_attribute_figure_flags():
    from jaxlift import cli

    parser = cli.build_parser()
    base = ["attribute", "m.h5", "x.npy"]
    args = parser.parse_args(base)
    assert (args.sign, args.clip_percentile, args.alpha, args.top_k) == ("all", 99.5, 0.8, 20)
    args = parser.parse_args(base + ["--sign", "absolute", "--clip-percentile", "100",
                                     "--alpha", "0", "--top-k", "5"])
    assert (args.sign, args.clip_percentile, args.alpha, args.top_k) == ("absolute", 100, 0, 5)
    for sign in viz.SIGNS:  # the CLI offers every sign the figures know
        assert parser.parse_args(base + ["--sign", sign]).sign == sign
    for bad in (["--sign", "pos"], ["--clip-percentile", "0"], ["--clip-percentile", "101"],
                ["--alpha", "1.5"], ["--top-k", "0"], ["--alpha", "much"]):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(base + bad)
        assert e.value.code == 2


def test_image_heatmap_sign_and_clip_percentile():
    s = _smooth_scores()
    s[3, 3] = 25.0
    fig = viz.image_heatmap(_image(), s, sign="positive", clip_percentile=90, dpi=30)
    (heat,) = _attribution_images(fig)
    np.testing.assert_array_equal(heat.get_array(), np.maximum(s, 0.0))
    v = np.percentile(np.maximum(s, 0.0), 90)
    assert heat.get_clim() == pytest.approx((-v, v)) and v < 25.0
    fig = viz.image_heatmap(None, s, sign="absolute", dpi=30)
    assert _attribution_images(fig)[0].get_clim() == (0.0, 25.0)
    with pytest.raises(ValueError, match="sign must be one of"):
        viz.image_heatmap(None, s, sign="+")


# --------------------------------------------------------------------------- examples_grid


def test_examples_grid_rows_share_one_scale_with_its_unit(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.uniform(size=(3, 8, 8, 1))
    scores = rng.normal(size=(3, 8, 8, 1)) * np.array([1.0, 5.0, 0.1])[:, None, None, None]
    path = tmp_path / "demo.png"
    fig = viz.examples_grid(images, scores, row_labels=["a", "b", "c"],
                            unit="contribution to each digit's predicted-class logit",
                            title="demo",
                            subtitle="mode: rescale", legend=viz.legend_sentence("the logit"),
                            clip_percentile=None, cell_size=1.0, dpi=40, save=path)
    _check_png(path, fig)
    heats = _score_images(fig)
    assert len(heats) == 6  # a map and an overlay per input
    top = np.abs(scores.sum(-1)).max()  # the loudest input sets everyone's scale
    assert {im.get_clim() for im in heats} == {(-top, top)}
    (cbar,) = _colorbar_axes(fig)
    assert cbar.get_ylabel() == "contribution to each digit's\npredicted-class logit"  # wrapped
    assert fig.get_suptitle() == "demo\nmode: rescale"
    assert fig._supxlabel.get_text().startswith("Red: raises the logit")
    titles = [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert titles[:3] == ["a", "contributions", "over the input"] and titles[3] == "b"
    with pytest.raises(ValueError, match="row_labels must have one label per input"):
        viz.examples_grid(images, scores, row_labels=["a"])
    with pytest.raises(ValueError, match=r"matching the images \(3, 8, 8\)"):
        viz.examples_grid(images, scores[:2])
