"""Matplotlib figures for attribution scores.

Every public function returns a :class:`matplotlib.figure.Figure` built directly (no
``pyplot``), attached to the non-interactive Agg canvas, so no global figure state leaks
and nothing is ever shown on screen.  Pass ``save="out.png"`` to any of them, or call
:func:`save_png` yourself, to write a PNG atomically (a temporary file in the target
folder, then :func:`os.replace`).

Attribution colour scales are diverging and centred at zero: the colour limits are always
``(-v, +v)``, where ``v`` is the given ``vmax`` or the largest ``|score|`` being shown
(with ``clip_percentile=p``, the ``p``-th percentile of ``|score|``, so that a few outliers
do not wash the rest out).  Red means the score raises the explained output relative to the
reference, blue that it lowers it; ``sign="absolute"`` shows ``|score|`` on a sequential
scale ``(0, v)`` instead.

Inputs may be NumPy arrays, JAX arrays or anything :func:`numpy.asarray` accepts.

Functions
---------
- :func:`image_heatmap`  -- one image's scores, optionally over the image.
- :func:`attribution_grid` -- one input and its maps for one or many targets (blended
  overlays on the grey image, sign filter, percentile clipping, one shared colour scale
  whose colour bar states the unit).
- :func:`target_bars`    -- tabular or sequence scores as bars, one panel per target, on
  one shared scale.
- :func:`method_grid`    -- examples x (input + one column per attribution method).
- :func:`feature_bars`   -- tabular features as horizontal bars sorted by ``|score|``.
- :func:`sequence_logo`  -- one-hot sequence scores as letters of signed height.
- :func:`graph_nodes`    -- graph nodes coloured by score, edges as lines.
- :func:`save_png`       -- atomic PNG writer used by all of the above.
- :func:`sign_filter`, :func:`color_limit`, :func:`legend_sentence` -- the pieces the
  figures share: which scores are shown, the colour limit, what red and blue mean.
- :func:`graph_layout` (:func:`spring_layout`, :func:`spectral_layout`,
  :func:`circle_layout`) -- numpy graph layouts, no networkx needed.
"""
from __future__ import annotations

import errno
import functools
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import PathPatch
from matplotlib.path import Path as MplPath
from matplotlib.textpath import TextPath
from matplotlib.ticker import MaxNLocator

from jaxlift.io.atomic import write_atomically

__all__ = [
    "image_heatmap",
    "method_grid",
    "feature_bars",
    "examples_grid",
    "sequence_logo",
    "graph_nodes",
    "attribution_grid",
    "target_bars",
    "save_png",
    "symmetric_limit",
    "sign_filter",
    "color_limit",
    "legend_sentence",
    "graph_layout",
    "connected_components",
    "spring_layout",
    "spectral_layout",
    "circle_layout",
]

PathLike = str | os.PathLike
DEFAULT_CMAP = "bwr"
ATTRIBUTION_LABEL = "attribution"
DNA_COLORS = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839", "U": "#D62839"}
ABSOLUTE_CMAP = "Purples"
POS_COLOR = "#d62728"
NEG_COLOR = "#1f77b4"
SIGNS = ("all", "positive", "negative", "absolute")
"""What a figure shows: every score, only the positive or only the negative ones (the
others set to 0), or ``|score|``."""


# --------------------------------------------------------------------------- helpers


def _as_float_array(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array; ValueError if it cannot be or holds NaN/inf."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array, got {type(x).__name__}: {exc}") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf values; scores must be finite")
    return arr


def _check_vmax(vmax: float | None) -> float | None:
    if vmax is None:
        return None
    v = float(vmax)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"vmax must be a positive finite number, got {vmax!r}")
    return v


def symmetric_limit(*arrays: np.ndarray, vmax: float | None = None) -> float:
    """The ``v`` of the colour limits ``(-v, v)``: ``vmax`` if given, else the largest
    ``|value|`` over all ``arrays`` (1.0 when everything is zero or empty)."""
    v = _check_vmax(vmax)
    if v is not None:
        return v
    m = max((float(np.max(np.abs(a))) for a in arrays if np.size(a)), default=0.0)
    return m if m > 0 else 1.0


def sign_filter(scores: ArrayLike, sign: str = "all") -> np.ndarray:
    """The scores a figure shows for ``sign`` (one of :data:`SIGNS`).

    ``"all"``: the scores as they are; ``"positive"`` / ``"negative"``: the scores of that
    sign, every other score set to 0; ``"absolute"``: ``|score|``.  Returns a new float64
    array of the same shape."""
    s = _as_float_array(scores, "scores")
    if sign == "all":
        return s.copy()
    if sign == "positive":
        return np.where(s > 0, s, 0.0)
    if sign == "negative":
        return np.where(s < 0, s, 0.0)
    if sign == "absolute":
        return np.abs(s)
    raise ValueError(f"sign must be one of {', '.join(map(repr, SIGNS))}, got {sign!r}")


def _check_percentile(clip_percentile: float | None) -> float | None:
    if clip_percentile is None:
        return None
    try:
        p = float(clip_percentile)
    except (TypeError, ValueError):
        raise ValueError(f"clip_percentile must be a number in (0, 100], got {clip_percentile!r}"
                         ) from None
    if not 0.0 < p <= 100.0:
        raise ValueError(f"clip_percentile must be in (0, 100] (100: no clipping), "
                         f"got {clip_percentile!r}")
    return p


def color_limit(
    *arrays: ArrayLike, clip_percentile: float | None = None, vmax: float | None = None
) -> float:
    """One colour limit ``v`` shared by all ``arrays`` (limits ``(-v, v)``, or ``(0, v)`` for
    absolute values).

    ``vmax`` wins when given.  Otherwise ``v`` is the ``clip_percentile``-th percentile of
    ``|value|`` pooled over all arrays (``None`` or 100: the largest ``|value|``); scores
    beyond it are drawn in the end colours.  When that percentile is 0 (mostly zero scores)
    it is taken over the nonzero values instead; all zero gives 1.0."""
    v = _check_vmax(vmax)
    if v is not None:
        return v
    p = _check_percentile(clip_percentile)
    mags = [np.abs(_as_float_array(a, "scores")).ravel() for a in arrays]
    pooled = np.concatenate(mags) if mags else np.zeros(0)
    nonzero = pooled[pooled > 0]
    if nonzero.size == 0:
        return 1.0
    if p is None or p == 100.0:
        return float(nonzero.max())
    v = float(np.percentile(pooled, p))
    return v if v > 0 else float(np.percentile(nonzero, p))


def legend_sentence(target: str = "the target", sign: str = "all") -> str:
    """The one sentence that says what the colours mean, e.g. ``"Red: raises the class 7
    logit relative to the reference; blue: lowers it."``"""
    if sign == "all":
        return f"Red: raises {target} relative to the reference; blue: lowers it."
    if sign == "positive":
        return (f"Red: raises {target} relative to the reference "
                "(only these scores are shown; the others are set to 0).")
    if sign == "negative":
        return (f"Blue: lowers {target} relative to the reference "
                "(only these scores are shown; the others are set to 0).")
    if sign == "absolute":
        return (f"Darker: a larger change of {target} relative to the reference, "
                "up or down (|score| is shown).")
    raise ValueError(f"sign must be one of {', '.join(map(repr, SIGNS))}, got {sign!r}")


def _scale_for(sign: str, v: float, cmap: str) -> tuple[str, float, float]:
    """(colormap, vmin, vmax) for scores filtered with ``sign``."""
    if sign == "absolute":
        return ABSOLUTE_CMAP, 0.0, v
    return cmap, -v, v


def _new_figure(figsize: tuple[float, float], dpi: float) -> Figure:
    w, h = (float(s) for s in figsize)
    if not (w > 0 and h > 0):
        raise ValueError(f"figsize must be two positive numbers (inches), got {figsize!r}")
    if not float(dpi) > 0:
        raise ValueError(f"dpi must be positive, got {dpi!r}")
    fig = Figure(figsize=(w, h), dpi=float(dpi), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, save: PathLike | None) -> Figure:
    if save is not None:
        save_png(fig, save)
    return fig


def _spatial_scores(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    """Scores (H,W) or (H,W,C) -> (H,W), summing over channels."""
    s = _as_float_array(scores, name)
    if s.ndim == 3:
        s = s.sum(axis=-1)
    elif s.ndim != 2:
        raise ValueError(f"{name} must have shape (H, W) or (H, W, C), got shape {s.shape}")
    return s


def _display_image(image: ArrayLike, name: str = "image") -> np.ndarray:
    """Image (H,W), (H,W,1), (H,W,3) or (H,W,4) -> floats in [0,1], shape (H,W) or (H,W,3).

    uint8 images are divided by 255, float images already in [0,1] are kept, anything
    else is min-max scaled."""
    raw = np.asarray(image)
    img = _as_float_array(raw, name)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    elif img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3]
    elif img.ndim != 2:
        raise ValueError(
            f"{name} must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {img.shape}"
        )
    if raw.dtype == np.uint8:
        return img / 255.0
    lo, hi = (float(img.min()), float(img.max())) if img.size else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        return img
    return (img - lo) / (hi - lo) if hi > lo else np.full_like(img, 0.5)


def _grayscale(img: np.ndarray) -> np.ndarray:
    """(H,W) or (H,W,3) in [0,1] -> (H,W) luminance."""
    return img if img.ndim == 2 else img @ np.array([0.299, 0.587, 0.114])


def _show_image(ax, img: np.ndarray, gray: bool = False):
    """Draw a display image (from :func:`_display_image`) on ``ax``."""
    if gray or img.ndim == 2:
        return ax.imshow(_grayscale(img), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    return ax.imshow(img, interpolation="nearest")


def _show_scores(ax, scores2d: np.ndarray, lo: float, v: float, cmap: str, alpha: float = 1.0):
    im = ax.imshow(scores2d, cmap=cmap, vmin=lo, vmax=v, alpha=alpha, interpolation="nearest")
    im.set_label(ATTRIBUTION_LABEL)
    return im


def _bare_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    return a


# --------------------------------------------------------------------------- saving


def save_png(fig: Figure, path: PathLike, *, dpi: float | None = None) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically and return the path.

    The image is rendered into a temporary file in the same folder and moved over
    ``path`` with :func:`os.replace`, so readers never see a half-written file and a
    failure leaves no partial file behind.  The PNG is ``figsize * dpi`` pixels
    (``dpi`` defaults to the figure's own).

    Raises:
        FileNotFoundError / NotADirectoryError / PermissionError (all ``OSError``): the
            folder does not exist, is not a folder, or cannot be written; the message and
            ``filename`` name the folder.
    """
    target = Path(os.fspath(path))
    folder = target.parent
    shown = os.path.abspath(folder)
    if not folder.exists():
        raise FileNotFoundError(
            errno.ENOENT, f"cannot save PNG {target.name!r}: folder does not exist", shown
        )
    if not folder.is_dir():
        raise NotADirectoryError(
            errno.ENOTDIR, f"cannot save PNG {target.name!r}: parent path is not a folder", shown
        )
    return write_atomically(
        target, lambda fh: fig.savefig(fh, format="png", dpi=fig.dpi if dpi is None else dpi),
        what="PNG")


# --------------------------------------------------------------------------- images


def image_heatmap(
    image: ArrayLike | None,
    scores: ArrayLike,
    *,
    overlay: bool = True,
    alpha: float = 0.6,
    grayscale_background: bool = True,
    vmax: float | None = None,
    sign: Literal["all", "positive", "negative", "absolute"] = "all",
    clip_percentile: float | None = None,
    cmap: str = DEFAULT_CMAP,
    colorbar: bool = True,
    title: str | None = None,
    figsize: tuple[float, float] = (4.0, 4.0),
    dpi: float = 100,
    save: PathLike | None = None,
) -> Figure:
    """Heatmap of one image's attribution scores.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``, or ``None`` for
            the heatmap alone.  uint8 is read as 0..255; floats outside [0, 1] are min-max
            scaled for display.
        scores: ``(H, W)`` or ``(H, W, C)``; channels are summed.
        overlay: with an image, draw the heatmap over it (with ``alpha``); otherwise show
            the image and the heatmap side by side.
        alpha: heatmap opacity when overlaid, in [0, 1].
        grayscale_background: show the image under an overlay in grayscale (keeps the
            heatmap colours readable).
        vmax: colour limit; limits are ``(-vmax, vmax)``, default ``max |summed score|``.
        sign: which scores to show (:func:`sign_filter`; ``"absolute"``: a sequential
            scale from 0).
        clip_percentile: end the colour scale at this percentile of ``|score|``
            (:func:`color_limit`) instead of the largest.
        cmap: a diverging colormap name.
        colorbar: add a colour bar.
        title: axes title.
        figsize, dpi: figure size in inches and its resolution (PNG is figsize*dpi pixels).
        save: if given, write the PNG there (see :func:`save_png`).

    Returns:
        The figure; its heatmap is the ``AxesImage`` labelled ``"attribution"``.
    """
    s = _spatial_scores(scores)
    img = None if image is None else _display_image(image)
    if img is not None and img.shape[:2] != s.shape:
        raise ValueError(
            f"image and scores must have the same (H, W): image is {img.shape[:2]}, "
            f"scores are {s.shape}"
        )
    alpha = _check_alpha(alpha)
    s = sign_filter(s, sign)
    cmap, lo, v = _scale_for(sign, color_limit(s, clip_percentile=clip_percentile, vmax=vmax),
                             cmap)
    fig = _new_figure(figsize, dpi)
    if img is not None and not overlay:
        ax_img, ax = fig.subplots(1, 2)
        _show_image(ax_img, img)
        _bare_axes(ax_img)
        ax_img.set_title("input")
        im = _show_scores(ax, s, lo, v, cmap)
    else:
        ax = fig.add_subplot()
        if img is not None:
            _show_image(ax, img, gray=grayscale_background)
            im = _show_scores(ax, s, lo, v, cmap, alpha=alpha)
        else:
            im = _show_scores(ax, s, lo, v, cmap)
    _bare_axes(ax)
    if title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(im, ax=ax, label=ATTRIBUTION_LABEL, shrink=0.8)
    return _finish(fig, save)


PANEL_STYLES = ("map", "overlay")
"""How :func:`attribution_grid` draws a target's scores: the map alone, or blended over the
input shown in grey."""


def _wrapped(text: str | None, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points."""
    if not text:
        return ""
    chars = max(20, int(width_in * 72.0 / (0.58 * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False)
                     for line in str(text).splitlines())


def _add_texts(fig: Figure, title: str | None, subtitle: str | None, legend: str | None,
               width_in: float) -> None:
    """Title and subtitle above the panels, the legend sentence below them."""
    head = "\n".join(t for t in (_wrapped(title, width_in, 11), _wrapped(subtitle, width_in, 9.5))
                     if t)
    if head:
        fig.suptitle(head, fontsize=10)
    if legend:
        fig.supxlabel(_wrapped(legend, width_in, 9.5), fontsize=9.5)


def _text_height(title: str | None, subtitle: str | None, legend: str | None,
                 width_in: float) -> float:
    """Inches the texts of :func:`_add_texts` need (so panels keep their size)."""
    lines = sum(_wrapped(t, width_in, 10).count("\n") + 1 for t in (title, subtitle, legend) if t)
    return 0.2 * lines + (0.15 if lines else 0.0)


def _background(ax, img: np.ndarray):
    """The input in light grey (dark pixels mid-grey), so red and blue stay readable."""
    return ax.imshow(_grayscale(img), cmap="gray", vmin=-0.6, vmax=1.0, interpolation="nearest")


def _blended(ax, img: np.ndarray, s: np.ndarray, cmap: str, lo: float, hi: float, alpha: float):
    """Scores over the grey input: each pixel's opacity grows with its ``|score|`` (up to
    ``alpha`` at the colour limit), so the input shows through where nothing contributes."""
    _background(ax, img)
    strength = np.clip(np.abs(s) / max(abs(lo), abs(hi)), 0.0, 1.0)
    im = ax.imshow(s, cmap=cmap, vmin=lo, vmax=hi, alpha=alpha * np.sqrt(strength),
                   interpolation="nearest")
    im.set_label(ATTRIBUTION_LABEL)
    return im


def _colorbar(fig: Figure, axes, cmap: str, lo: float, hi: float, shown: list[np.ndarray],
              unit: str, orientation: str = "vertical"):
    """One colour bar for ``axes`` (its own mappable: panels may carry per-pixel alpha),
    with arrow ends where scores lie beyond the (clipped) limits."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    top = max(float(a.max()) for a in shown)
    bottom = min(float(a.min()) for a in shown)
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max",
              (True, True): "both"}[(bottom < lo - 1e-12 * hi, top > hi * (1 + 1e-12))]
    sm = ScalarMappable(Normalize(lo, hi), cmap)
    label = textwrap.fill(unit, 38 if orientation == "vertical" else 90,
                          break_on_hyphens=False)  # a long target fits beside the panels
    return fig.colorbar(sm, ax=axes, label=label, shrink=0.85, extend=extend,
                        orientation=orientation)


def _check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_ncols(ncols: int | None, default: int) -> int:
    if ncols is None:
        return default
    if isinstance(ncols, bool) or int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols must be a positive integer or None, got {ncols!r}")
    return int(ncols)


def _target_maps(scores_by_target: Mapping[str, ArrayLike], shape: tuple[int, ...] | None
                 ) -> dict[str, np.ndarray]:
    """target label -> (H, W) map (channels summed), all of one (H, W)."""
    if not isinstance(scores_by_target, Mapping) or len(scores_by_target) == 0:
        raise ValueError("scores_by_target must be a non-empty mapping {target label: scores}")
    maps = {}
    for label, sc in scores_by_target.items():
        s = _spatial_scores(sc, f"scores_by_target[{label!r}]")
        if shape is not None and s.shape != shape:
            raise ValueError(f"scores_by_target[{label!r}] must have the image's (H, W) = "
                             f"{shape}, got shape {np.shape(sc)}")
        shape = s.shape
        maps[str(label)] = s
    return maps


_STYLE_NAMES = {"map": "contributions", "overlay": "over the input"}


def _check_panel_options(styles, sign: str, alpha: float) -> tuple[tuple, float]:
    """``(styles, alpha)`` checked: distinct entries of :data:`PANEL_STYLES`, a known sign,
    an opacity in [0, 1]."""
    styles = tuple(styles)
    if not styles or len(set(styles)) != len(styles):
        raise ValueError(f"styles must be distinct entries of {PANEL_STYLES}, got {styles!r}")
    for st in styles:
        _check_choice(st, PANEL_STYLES, "each style")
    _check_choice(sign, SIGNS, "sign")
    return styles, _check_alpha(alpha)


def _draw_panel(ax, style: str, img, shown: np.ndarray, cmap, lo: float, hi: float,
                alpha: float) -> None:
    """One score panel: the map alone (an ``AxesImage`` labelled ``"attribution"``) or
    blended over the input."""
    if style == "overlay":
        _blended(ax, img, shown, cmap, lo, hi, alpha)
    else:
        ax.imshow(shown, cmap=cmap, vmin=lo, vmax=hi,
                  interpolation="nearest").set_label(ATTRIBUTION_LABEL)


def attribution_grid(
    image: ArrayLike | None,
    scores_by_target: Mapping[str, ArrayLike],
    *,
    styles: Sequence[Literal["map", "overlay"]] = ("overlay",),
    sign: Literal["all", "positive", "negative", "absolute"] = "all",
    clip_percentile: float | None = 99.5,
    vmax: float | None = None,
    alpha: float = 0.8,
    cmap: str = DEFAULT_CMAP,
    unit: str = ATTRIBUTION_LABEL,
    legend: str | None = None,
    title: str | None = None,
    subtitle: str | None = None,
    ncols: int | None = None,
    cell_size: float = 2.6,
    dpi: float = 100,
    save: PathLike | None = None,
) -> Figure:
    """One input and its attribution maps for one or many targets, on one colour scale.

    Panels, row by row (``ncols`` per row): the input (when given), then for each target
    one panel per entry of ``styles``: ``"map"`` draws the scores alone, ``"overlay"``
    blends them over the input in grey (opacity growing with ``|score|``, at most
    ``alpha``), like Captum's ``blended_heat_map``.  Every panel shares one colour limit
    (:func:`color_limit` over all targets), so colours compare across targets; one colour
    bar, labelled ``unit``, serves them all.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; ``None`` only
            with ``styles=("map",)``.
        scores_by_target: target label -> scores ``(H, W)`` or ``(H, W, C)`` (channels
            summed), in panel order.
        styles: non-empty, from :data:`PANEL_STYLES`.
        sign: which scores to show (:func:`sign_filter`); ``"absolute"`` uses a
            sequential colormap from 0.
        clip_percentile: the colour limit is this percentile of ``|score|`` (``None`` or
            100: the largest); the colour bar's arrow ends mark clipped scores.
        vmax: a fixed colour limit instead.
        alpha: the largest opacity of an overlay, in [0, 1].
        cmap: the diverging colormap (red: positive).
        unit: what the scores are, for the colour bar (e.g. "contribution to the class 7
            logit").
        legend: a sentence below the panels (e.g. :func:`legend_sentence`).
        title, subtitle: lines above the panels (wrapped to the figure's width).
        ncols: panels per row (default: all of them, at most 6).
        cell_size: inches per panel.
        dpi, save: resolution; optional PNG path.

    Returns:
        The figure; every score panel holds one ``AxesImage`` labelled ``"attribution"``
        whose array is the plotted (sign-filtered) map.
    """
    styles, alpha = _check_panel_options(styles, sign, alpha)
    img = None if image is None else _display_image(image)
    if img is None and "overlay" in styles:
        raise ValueError("an overlay needs the image: pass image, or styles=('map',)")
    maps = _target_maps(scores_by_target, None if img is None else img.shape[:2])
    shown = {k: sign_filter(m, sign) for k, m in maps.items()}
    v = color_limit(*shown.values(), clip_percentile=clip_percentile, vmax=vmax)
    cmap_used, lo, hi = _scale_for(sign, v, cmap)
    panels = [(label, st) for label in shown for st in styles]
    n = len(panels) + (img is not None)
    cols = _check_ncols(ncols, min(n, 6))
    rows = -(-n // cols)
    width = cell_size * cols + 1.2
    fig = _new_figure((width, cell_size * rows + _text_height(title, subtitle, legend, width)),
                      dpi)
    axes = list(np.asarray(fig.subplots(rows, cols, squeeze=False)).flat)
    k = 0
    if img is not None:
        _show_image(axes[0], img)
        axes[0].set_title("input", fontsize=9)
        k = 1
    many = len(shown) > 1
    for label, st in panels:
        ax = axes[k]
        _draw_panel(ax, st, img, shown[label], cmap_used, lo, hi, alpha)
        name = label if many else _STYLE_NAMES[st]
        if many and len(styles) > 1:
            name = f"{label}: {_STYLE_NAMES[st]}"
        ax.set_title(name, fontsize=9)
        k += 1
    for ax in axes:
        _bare_axes(ax)
    for ax in axes[k:]:
        ax.set_axis_off()
    _colorbar(fig, axes[:k] if rows == 1 else axes, cmap_used, lo, hi, list(shown.values()),
              unit)
    _add_texts(fig, title, subtitle, legend, width)
    return _finish(fig, save)


def examples_grid(
    images: ArrayLike,
    scores: ArrayLike,
    *,
    row_labels: Sequence[str] | None = None,
    styles: Sequence[Literal["map", "overlay"]] = ("map", "overlay"),
    sign: Literal["all", "positive", "negative", "absolute"] = "all",
    clip_percentile: float | None = 99.5,
    vmax: float | None = None,
    alpha: float = 0.8,
    cmap: str = DEFAULT_CMAP,
    unit: str = ATTRIBUTION_LABEL,
    legend: str | None = None,
    title: str | None = None,
    subtitle: str | None = None,
    cell_size: float = 2.0,
    dpi: float = 100,
    save: PathLike | None = None,
) -> Figure:
    """Several inputs and their attribution maps on one colour scale, one row per input.

    Each row: the input (titled by ``row_labels[i]``), then one panel per entry of
    ``styles`` (as in :func:`attribution_grid`: the map alone, or blended over the input).
    One colour limit (:func:`color_limit` over every example) and one colour bar labelled
    ``unit`` serve the whole figure, so colours compare across inputs; ``title``,
    ``subtitle`` and ``legend`` (a sentence saying what the colours mean) frame it.

    Args:
        images: ``(N, H, W)`` or ``(N, H, W, C)`` with ``C`` in 1, 3, 4.
        scores: ``(N, H, W)`` or ``(N, H, W, C)`` (channels summed).
        row_labels: ``N`` labels, one per input.
        styles, sign, clip_percentile, vmax, alpha, cmap, unit, legend, title, subtitle,
        cell_size, dpi, save: as for :func:`attribution_grid`.

    Returns:
        The figure; every score panel holds one ``AxesImage`` labelled ``"attribution"``.
    """
    styles, alpha = _check_panel_options(styles, sign, alpha)
    imgs = np.asarray(images)
    if imgs.ndim not in (3, 4) or len(imgs) == 0:
        raise ValueError(f"images must be a batch (N, H, W) or (N, H, W, C) with N >= 1, got "
                         f"shape {imgs.shape}")
    s = _as_float_array(scores, "scores")
    if s.ndim == 4:
        s = s.sum(axis=-1)
    if s.shape != imgs.shape[:3]:
        raise ValueError(f"scores must have shape (N, H, W) or (N, H, W, C) matching the "
                         f"images {imgs.shape[:3]}, got shape {np.shape(scores)}")
    n = len(imgs)
    if row_labels is not None and len(row_labels) != n:
        raise ValueError(f"row_labels must have one label per input ({n}), got "
                         f"{len(row_labels)}")
    shown = [sign_filter(s[i], sign) for i in range(n)]
    v = color_limit(*shown, clip_percentile=clip_percentile, vmax=vmax)
    cmap_used, lo, hi = _scale_for(sign, v, cmap)
    cols = 1 + len(styles)
    width = cell_size * cols + 1.4
    fig = _new_figure((width, cell_size * n + _text_height(title, subtitle, legend, width)),
                      dpi)
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))
    for i in range(n):
        img = _display_image(imgs[i], f"images[{i}]")
        _show_image(axes[i, 0], img)
        if row_labels is not None:
            axes[i, 0].set_title(str(row_labels[i]), fontsize=9)
        for j, st in enumerate(styles, start=1):
            ax = axes[i, j]
            _draw_panel(ax, st, img, shown[i], cmap_used, lo, hi, alpha)
            if i == 0:
                ax.set_title(_STYLE_NAMES[st], fontsize=9)
    for ax in axes.flat:
        _bare_axes(ax)
    _colorbar(fig, list(axes.flat), cmap_used, lo, hi, shown, unit)
    _add_texts(fig, title, subtitle, legend, width)
    return _finish(fig, save)


def _grid_limits(
    per_method: list[np.ndarray], share: str, vmax: float | None
) -> np.ndarray:
    """One colour limit per example row, shape (N,)."""
    n = per_method[0].shape[0]
    if vmax is not None:
        return np.full(n, _check_vmax(vmax))
    if share == "global":
        return np.full(n, symmetric_limit(*per_method))
    return np.array([symmetric_limit(*(m[i] for m in per_method)) for i in range(n)])


def method_grid(
    images: ArrayLike,
    scores_by_method: Mapping[str, ArrayLike],
    *,
    share: Literal["row", "global"] = "row",
    vmax: float | None = None,
    cmap: str = DEFAULT_CMAP,
    alpha: float | None = None,
    row_labels: Sequence[str] | None = None,
    input_title: str = "input",
    colorbar: bool = True,
    title: str | None = None,
    cell_size: float = 2.0,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    save: PathLike | None = None,
) -> Figure:
    """Side-by-side comparison of attribution methods.

    Rows are examples; column 0 shows the input, then one column per method (titled
    with its key, in the mapping's order).

    Args:
        images: a batch ``(N, H, W)``, ``(N, H, W, 1)``, ``(N, H, W, 3)`` or ``(N, H, W, 4)``.
        scores_by_method: method name -> scores ``(N, H, W)`` or ``(N, H, W, C)``
            (channels summed); at least one method.
        share: ``"row"`` -- each example's methods share one colour scale;
            ``"global"`` -- one scale for the whole grid.
        vmax: fixed colour limit for every cell (overrides ``share``).
        cmap: a diverging colormap name.
        alpha: if given, overlay each heatmap on the grayscale input with this opacity;
            ``None`` draws plain heatmaps.
        row_labels: ``N`` labels written beside the input column.
        input_title: title of the input column.
        colorbar: one colour bar per row (``share="row"``) or one for the grid.
        title: figure title.
        cell_size: inches per cell when ``figsize`` is not given.
        figsize, dpi: figure size in inches and resolution.
        save: if given, write the PNG there.

    Returns:
        The figure; ``fig.axes[:N*(M+1)]`` are the cells in row-major order and every
        heatmap is an ``AxesImage`` labelled ``"attribution"``.
    """
    if share not in ("row", "global"):
        raise ValueError(f"share must be 'row' or 'global', got {share!r}")
    if not isinstance(scores_by_method, Mapping) or len(scores_by_method) == 0:
        raise ValueError("scores_by_method must be a non-empty mapping {method name: scores}")
    imgs = np.asarray(images)
    if imgs.ndim == 3 or (imgs.ndim == 4 and imgs.shape[-1] in (1, 3, 4)):
        n, h, w = imgs.shape[:3]
    else:
        raise ValueError(
            "images must be a batch of shape (N, H, W) or (N, H, W, C) with C in {1, 3, 4}, "
            f"got shape {imgs.shape}"
        )
    if n == 0:
        raise ValueError("images must hold at least one example (N >= 1)")
    names = [str(k) for k in scores_by_method]
    per_method = []
    for name, sc in scores_by_method.items():
        s = _as_float_array(sc, f"scores_by_method[{name!r}]")
        if s.ndim == 4:
            s = s.sum(axis=-1)
        if s.shape != (n, h, w):
            raise ValueError(
                f"scores_by_method[{name!r}] must have shape (N, H, W) or (N, H, W, C) "
                f"matching images (N, H, W) = {(n, h, w)}, got shape {np.shape(sc)}"
            )
        per_method.append(s)
    if row_labels is not None and len(row_labels) != n:
        raise ValueError(f"row_labels must have one label per example ({n}), got {len(row_labels)}")
    if alpha is not None:
        alpha = _check_alpha(alpha)
    limits = _grid_limits(per_method, share, vmax)
    display = [_display_image(imgs[i], f"images[{i}]") for i in range(n)]

    m = len(per_method)
    if figsize is None:
        extra = 0.8 if colorbar else 0.0
        figsize = (cell_size * (m + 1) + extra, cell_size * n + (0.4 if title else 0.0))
    fig = _new_figure(figsize, dpi)
    axes = np.asarray(fig.subplots(n, m + 1, squeeze=False))
    mappable = None
    for i in range(n):
        _show_image(axes[i, 0], display[i])
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]))
        for j, s in enumerate(per_method):
            ax = axes[i, j + 1]
            if alpha is not None:
                _show_image(ax, display[i], gray=True)
                mappable = _show_scores(ax, s[i], -limits[i], limits[i], cmap, alpha=alpha)
            else:
                mappable = _show_scores(ax, s[i], -limits[i], limits[i], cmap)
        if colorbar and share == "row" and vmax is None:
            fig.colorbar(mappable, ax=list(axes[i, 1:]), shrink=0.8)
    for ax in axes.flat:
        _bare_axes(ax)
    axes[0, 0].set_title(input_title)
    for j, name in enumerate(names):
        axes[0, j + 1].set_title(name)
    if colorbar and (share == "global" or vmax is not None):
        fig.colorbar(mappable, ax=list(axes[:, 1:].flat), label=ATTRIBUTION_LABEL, shrink=0.8)
    if title:
        fig.suptitle(title)
    return _finish(fig, save)


# --------------------------------------------------------------------------- tabular


def top_features(scores: np.ndarray, top_k: int | None = None) -> np.ndarray:
    """Indices of ``scores`` (1-D) sorted by decreasing ``|score|`` (stable), first ``top_k``."""
    order = np.argsort(-np.abs(scores), kind="stable")
    return order if top_k is None else order[:top_k]


def feature_bars(
    scores: ArrayLike,
    feature_names: Sequence[str] | None = None,
    top_k: int | None = None,
    *,
    pos_color: str = POS_COLOR,
    neg_color: str = NEG_COLOR,
    title: str | None = None,
    xlabel: str = ATTRIBUTION_LABEL,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    save: PathLike | None = None,
) -> Figure:
    """Horizontal bar chart of tabular feature scores, largest ``|score|`` at the top.

    Args:
        scores: ``(F,)`` one score per feature.
        feature_names: ``F`` names (default ``"x0", "x1", ...``).
        top_k: show only the ``top_k`` features with the largest ``|score|`` (``>= 1``;
            values above ``F`` show all).
        pos_color, neg_color: bar colours for positive and negative scores.
        title, xlabel: axes title and x label.
        figsize: default ``(6, 1 + 0.3 * bars)`` inches.
        dpi, save: resolution; optional PNG path.

    Returns:
        The figure; ``fig.axes[0].patches`` are the bars from top to bottom.
    """
    s = _as_float_array(scores, "scores")
    if s.ndim != 1:
        raise ValueError(f"scores must have shape (F,) (one score per feature), got shape {s.shape}")
    if s.size == 0:
        raise ValueError("scores must hold at least one feature, got shape (0,)")
    if feature_names is None:
        names = [f"x{i}" for i in range(s.size)]
    else:
        names = [str(x) for x in feature_names]
        if len(names) != s.size:
            raise ValueError(
                f"feature_names must have one name per score ({s.size}), got {len(names)}"
            )
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    order = top_features(s, None if top_k is None else int(top_k))
    vals = s[order]
    if figsize is None:
        figsize = (6.0, 1.0 + 0.3 * len(order))
    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot()
    ypos = np.arange(len(order))
    colors = [pos_color if v >= 0 else neg_color for v in vals]
    ax.barh(ypos, vals, color=colors, edgecolor="none")
    ax.set_yticks(ypos, [names[i] for i in order])
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", linewidth=0.8)
    lim = symmetric_limit(vals) * 1.05
    ax.set_xlim(-lim, lim)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    return _finish(fig, save)


BAR_ORDERS = ("magnitude", "position")
"""How :func:`target_bars` orders bars: largest ``|score|`` first (tabular features), or by
position along the input (sequences)."""


def _bar_scores(scores_by_target: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
    """target label -> (F,) scores, all of one length F >= 1."""
    if not isinstance(scores_by_target, Mapping) or len(scores_by_target) == 0:
        raise ValueError("scores_by_target must be a non-empty mapping {target label: scores}")
    out: dict[str, np.ndarray] = {}
    for label, sc in scores_by_target.items():
        s = _as_float_array(sc, f"scores_by_target[{label!r}]")
        if s.ndim != 1 or s.size == 0:
            raise ValueError(f"scores_by_target[{label!r}] must have shape (F,) with F >= 1 "
                             f"(one score per feature or position), got shape {s.shape}")
        if out and s.size != next(iter(out.values())).size:
            raise ValueError(f"scores_by_target[{label!r}] has {s.size} scores but the first "
                             f"target has {next(iter(out.values())).size}; every target needs "
                             "one score per feature")
        out[str(label)] = s
    return out


def target_bars(
    scores_by_target: Mapping[str, ArrayLike],
    feature_names: Sequence[str] | None = None,
    *,
    top_k: int | None = None,
    order: Literal["magnitude", "position"] = "magnitude",
    sign: Literal["all", "positive", "negative", "absolute"] = "all",
    unit: str = ATTRIBUTION_LABEL,
    legend: str | None = None,
    title: str | None = None,
    subtitle: str | None = None,
    ncols: int | None = None,
    pos_color: str = POS_COLOR,
    neg_color: str = NEG_COLOR,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    save: PathLike | None = None,
) -> Figure:
    """Bar charts of one input's scores for one or many targets, on one shared axis scale.

    ``order="magnitude"`` (tabular features): horizontal bars, largest ``|score|`` at the
    top, the ``top_k`` largest per target.  ``order="position"`` (sequences): vertical bars
    in input order, every position.  Red bars raise the target, blue bars lower it
    (``sign="absolute"``: ``|score|`` in one colour).

    Args:
        scores_by_target: target label -> scores ``(F,)`` (the same ``F`` for all), one
            panel each, in order.
        feature_names: ``F`` names (default ``"x0", "x1", ...``).
        top_k: with ``order="magnitude"``, bars per panel (``>= 1``; above ``F``: all).
        order: one of :data:`BAR_ORDERS`.
        sign: which scores to show (:func:`sign_filter`).
        unit: the value axis label (e.g. "contribution to the class 1 logit").
        legend, title, subtitle: a sentence below the panels; lines above them.
        ncols: panels per row (default 3 for ``"magnitude"``, 1 for ``"position"``).
        pos_color, neg_color: colours of positive and negative bars.
        figsize: default sized from the bars and panels.
        dpi, save: resolution; optional PNG path.

    Returns:
        The figure; ``fig.axes[k].patches`` are panel ``k``'s bars (top to bottom, or
        left to right) and every panel has the same value-axis limits.
    """
    shown = {k: sign_filter(s, sign) for k, s in _bar_scores(scores_by_target).items()}
    _check_choice(order, BAR_ORDERS, "order")
    f = next(iter(shown.values())).size
    if feature_names is None:
        names = [f"x{i}" for i in range(f)]
    else:
        names = [str(x) for x in feature_names]
        if len(names) != f:
            raise ValueError(f"feature_names must have one name per score ({f}), got {len(names)}")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    by_size = order == "magnitude"
    picks = {k: (top_features(s, None if top_k is None else int(top_k)) if by_size
                 else np.arange(f)) for k, s in shown.items()}
    if by_size and sign in ("positive", "negative"):  # no rows for the filtered-out sign
        picks = {k: p[shown[k][p] != 0] for k, p in picks.items()}
    n = len(shown)
    cols = _check_ncols(ncols, min(n, 3) if by_size else 1)
    rows = -(-n // cols)
    bars = max(1, max(len(p) for p in picks.values()))
    if figsize is None:
        cell_w = 4.4 if by_size else float(np.clip(0.22 * f, 6.0, 16.0))
        cell_h = 0.7 + 0.26 * bars if by_size else 2.2
        width = cell_w * cols
        figsize = (width, cell_h * rows + _text_height(title, subtitle, legend, width))
    fig = _new_figure(figsize, dpi)
    axes = list(np.asarray(fig.subplots(rows, cols, squeeze=False)).flat)
    lim = 1.05 * max(float(np.max(np.abs(s[picks[k]]), initial=0.0)) for k, s in shown.items())
    lim = lim if lim > 0 else 1.0
    low, high = {"absolute": (0.0, lim), "positive": (0.0, lim), "negative": (-lim, 0.0)
                 }.get(sign, (-lim, lim))
    for ax, (label, s) in zip(axes, shown.items()):
        idx = picks[label]
        vals = s[idx]
        colors = ["#6a51a3" if sign == "absolute" else pos_color if v >= 0 else neg_color
                  for v in vals]
        at = np.arange(len(idx))
        if by_size:
            ax.barh(at, vals, color=colors, edgecolor="none")
            ax.set_yticks(at, [names[i] for i in idx], fontsize=8)
            ax.set_ylim(max(len(idx), 1) - 0.5, -0.5)
            ax.axvline(0.0, color="black", linewidth=0.8)
            ax.set_xlim(low, high)
            ax.set_xlabel(unit, fontsize=9)
        else:
            ax.bar(at, vals, color=colors, edgecolor="none", width=0.85)
            if f <= 40:
                ax.set_xticks(at, [names[i] for i in idx], fontsize=7,
                              rotation=90 if max(map(len, names)) > 2 else 0)
            ax.axhline(0.0, color="black", linewidth=0.8)
            ax.set_xlim(-0.6, f - 0.4)
            ax.set_ylim(low, high)
            ax.set_ylabel(unit, fontsize=9)
            ax.set_xlabel("position", fontsize=9)
        if len(idx) == 0:
            ax.text(0.5, 0.5, f"no {sign} scores", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9, color="0.4")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.set_title(label, fontsize=9)
    for ax in axes[n:]:
        ax.set_axis_off()
    _add_texts(fig, title, subtitle, legend, figsize[0])
    return _finish(fig, save)


# --------------------------------------------------------------------------- sequences


@functools.lru_cache(maxsize=256)
def _unit_glyph(letter: str, family: str) -> MplPath:
    """The outline of ``letter`` scaled to fill the unit square [0,1] x [0,1]."""
    tp = TextPath((0.0, 0.0), letter, size=1.0, prop=FontProperties(family=family, weight="bold"))
    ext = tp.get_extents()
    w = ext.width if ext.width > 0 else 1.0
    h = ext.height if ext.height > 0 else 1.0
    verts = (tp.vertices - [ext.x0, ext.y0]) / [w, h]
    return MplPath(verts, tp.codes)


def letter_patch(
    letter: str,
    x: float,
    y: float,
    width: float,
    height: float,
    color: str,
    *,
    family: str = "DejaVu Sans",
) -> PathPatch:
    """A filled ``letter`` occupying the box ``[x, x+width] x [y, y+height]`` (``height > 0``;
    pass a negative height to draw it upside down below ``y``)."""
    unit = _unit_glyph(letter, family)
    verts = unit.vertices * [width, height] + [x, y]
    return PathPatch(MplPath(verts, unit.codes), facecolor=color, edgecolor="none")


def _alphabet_colors(alphabet: Sequence[str], colors: Mapping[str, str] | None) -> list[str]:
    from matplotlib import colormaps

    cycle = colormaps["tab10"].colors
    out = []
    for i, a in enumerate(alphabet):
        if colors is not None and a in colors:
            out.append(colors[a])
        elif colors is None and a.upper() in DNA_COLORS:
            out.append(DNA_COLORS[a.upper()])
        else:
            out.append(cycle[i % len(cycle)])
    return out


def logo_boxes(scores: np.ndarray, width: float = 0.9) -> list[tuple[int, int, float, float, float]]:
    """Letter boxes for a logo: ``(position, letter index, x, y, height)`` per nonzero score.

    At each position positive scores stack upwards from 0 (largest on top) and negative
    scores stack downwards from 0 (largest magnitude at the bottom).  ``height`` is
    ``|score|`` and the box spans ``[y, y + height]``."""
    boxes = []
    for i, row in enumerate(scores):
        x = i - width / 2.0
        up = 0.0
        for k in sorted(np.flatnonzero(row > 0), key=lambda k: row[k]):
            boxes.append((i, int(k), x, up, float(row[k])))
            up += float(row[k])
        down = 0.0
        for k in sorted(np.flatnonzero(row < 0), key=lambda k: -row[k]):
            down += float(row[k])
            boxes.append((i, int(k), x, down, float(-row[k])))
    return boxes


def sequence_logo(
    scores: ArrayLike,
    alphabet: str | Sequence[str] = "ACGT",
    *,
    colors: Mapping[str, str] | None = None,
    flip_negative: bool = False,
    letter_width: float = 0.9,
    font_family: str = "DejaVu Sans",
    title: str | None = None,
    ylabel: str = ATTRIBUTION_LABEL,
    figsize: tuple[float, float] | None = None,
    dpi: float = 100,
    save: PathLike | None = None,
) -> Figure:
    """Sequence-logo-style plot of per-position, per-letter scores.

    Each nonzero score is drawn as its letter scaled to height ``|score|``: above the axis
    for positive scores, below for negative ones (stacked when a position has several).
    For DeepLIFT on one-hot input, pass ``scores * one_hot`` to show only the letters
    present.

    Args:
        scores: ``(L, K)`` with ``K == len(alphabet)`` (``(L, 4)`` for DNA).
        alphabet: the ``K`` letters for the columns, e.g. ``"ACGT"``; single characters.
        colors: letter -> colour (defaults: A green, C blue, G orange, T/U red; other
            letters from the tab10 cycle).
        flip_negative: draw letters below the axis upside down (logomaker style);
            default keeps them upright.
        letter_width: letter width as a fraction of a position, in (0, 1].
        font_family: font for the letter outlines.
        title, ylabel: axes title and y label.
        figsize: default ``(clip(0.3 * L, 4, 20), 2.5)`` inches.
        dpi, save: resolution; optional PNG path.

    Returns:
        The figure; ``fig.axes[0].patches`` are the letters (one ``PathPatch`` per nonzero
        score).
    """
    s = _as_float_array(scores, "scores")
    letters = list(alphabet)
    if len(letters) == 0 or any(not isinstance(a, str) or len(a) != 1 for a in letters):
        raise ValueError(f"alphabet must be a non-empty sequence of single characters, got {alphabet!r}")
    if len(set(letters)) != len(letters):
        raise ValueError(f"alphabet letters must be distinct, got {alphabet!r}")
    if s.ndim != 2 or s.shape[1] != len(letters) or s.shape[0] == 0:
        raise ValueError(
            f"scores must have shape (L, {len(letters)}) with L >= 1 "
            f"(one column per letter of alphabet {''.join(letters)!r}), got shape {s.shape}"
        )
    if not 0.0 < float(letter_width) <= 1.0:
        raise ValueError(f"letter_width must be in (0, 1], got {letter_width!r}")
    palette = _alphabet_colors(letters, colors)
    length = s.shape[0]
    if figsize is None:
        figsize = (float(np.clip(0.3 * length, 4.0, 20.0)), 2.5)
    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot()
    for _, k, x, y, h in logo_boxes(s, float(letter_width)):
        if flip_negative and y < 0:
            patch = letter_patch(letters[k], x, y + h, letter_width, -h, palette[k], family=font_family)
        else:
            patch = letter_patch(letters[k], x, y, letter_width, h, palette[k], family=font_family)
        ax.add_patch(patch)
    top = float(np.clip(s, 0, None).sum(axis=1).max())
    bottom = float(np.clip(s, None, 0).sum(axis=1).min())
    span = (top - bottom) or 1.0
    ax.set_ylim(bottom - 0.05 * span, top + 0.05 * span)
    ax.set_xlim(-0.5, length - 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axhline(0.0, color="black", linewidth=0.6)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("position")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title)
    return _finish(fig, save)


# --------------------------------------------------------------------------- graphs


def _edge_array(edges: ArrayLike | None, n: int) -> np.ndarray:
    """Edges as an (E, 2) int array with indices in [0, n)."""
    if edges is None:
        return np.zeros((0, 2), dtype=np.int64)
    e = np.asarray(edges)
    if e.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise ValueError(f"edges must have shape (E, 2) (pairs of node indices), got shape {e.shape}")
    if e.dtype.kind not in "iuf" or (e.dtype.kind == "f" and not np.all(np.mod(e, 1) == 0)):
        raise ValueError("edges must hold integer node indices")
    e = e.astype(np.int64)
    bad = (e < 0) | (e >= n)
    if bad.any():
        raise ValueError(
            f"edges refer to node index {int(e[bad][0])}, but there are {n} nodes (valid 0..{n - 1})"
        )
    return e


def _adjacency(n: int, edges: np.ndarray) -> np.ndarray:
    a = np.zeros((n, n))
    if len(edges):
        a[edges[:, 0], edges[:, 1]] = 1.0
        a[edges[:, 1], edges[:, 0]] = 1.0
    np.fill_diagonal(a, 0.0)
    return a


def _normalise_positions(pos: np.ndarray) -> np.ndarray:
    """Centre at 0 and scale so the largest coordinate magnitude is 1."""
    pos = pos - pos.mean(axis=0)
    m = np.abs(pos).max()
    return pos / m if m > 0 else pos


def circle_layout(n: int) -> np.ndarray:
    """``n`` points evenly on the unit circle, shape ``(n, 2)``."""
    t = 2 * np.pi * np.arange(n) / max(n, 1)
    pos = np.stack([np.cos(t), np.sin(t)], axis=1)
    return pos if n > 1 else np.zeros((n, 2))


def spectral_layout(n: int, edges: ArrayLike | None) -> np.ndarray:
    """Positions ``(n, 2)`` from the 2nd and 3rd eigenvectors of the graph Laplacian.

    Falls back to :func:`circle_layout` for fewer than 3 nodes.  On a disconnected
    graph whole components collapse onto points: use :func:`graph_layout`, which lays
    out each component separately."""
    e = _edge_array(edges, n)
    if n < 3:
        return circle_layout(n)
    a = _adjacency(n, e)
    lap = np.diag(a.sum(axis=1)) - a
    _, vecs = np.linalg.eigh(lap)
    return _normalise_positions(vecs[:, 1:3])


def spring_layout(
    n: int, edges: ArrayLike | None, *, iterations: int = 100, seed: int = 0
) -> np.ndarray:
    """Fruchterman-Reingold force-directed positions ``(n, 2)`` in [-1, 1], deterministic
    for a given ``seed`` (O(n^2) per iteration: meant for graphs up to a few hundred nodes).
    Components of a disconnected graph drift apart: :func:`graph_layout` packs them."""
    e = _edge_array(edges, n)
    if n <= 1:
        return np.zeros((n, 2))
    a = _adjacency(n, e)
    rng = np.random.default_rng(seed)
    pos = circle_layout(n) + rng.normal(scale=0.01, size=(n, 2))
    k = 1.0 / np.sqrt(n)
    temperature = 0.1
    cooling = temperature / (iterations + 1)
    for _ in range(iterations):
        delta = pos[:, None, :] - pos[None, :, :]
        dist = np.maximum(np.linalg.norm(delta, axis=-1), 0.01)
        force = k * k / dist**2 - a * dist / k
        disp = np.einsum("ijk,ij->ik", delta, force)
        length = np.maximum(np.linalg.norm(disp, axis=-1, keepdims=True), 0.01)
        pos = pos + disp / length * np.minimum(length, temperature)
        temperature -= cooling
    return _normalise_positions(pos)


def connected_components(n: int, edges: ArrayLike | None) -> list[np.ndarray]:
    """Node-index arrays of the connected components, largest first (ties: lowest index)."""
    e = _edge_array(edges, n)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in e:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)], dtype=np.int64)
    comps = [np.flatnonzero(roots == r) for r in np.unique(roots)]
    return sorted(comps, key=lambda c: (-len(c), int(c[0])))


def _layout_by_component(n: int, edges: np.ndarray, layout_one) -> np.ndarray:
    """Lay out each connected component with ``layout_one(n_c, edges_c)`` and pack the
    components on a grid (each scaled by sqrt of its size relative to the largest)."""
    comps = connected_components(n, edges)
    if len(comps) == 1:
        return layout_one(n, edges)
    cols = int(np.ceil(np.sqrt(len(comps))))
    largest = len(comps[0])
    pos = np.zeros((n, 2))
    local = np.full(n, -1, dtype=np.int64)
    for idx, comp in enumerate(comps):
        local[comp] = np.arange(len(comp))
        inside = np.isin(edges[:, 0], comp) if len(edges) else np.zeros(0, dtype=bool)
        sub = local[edges[inside]] if len(edges) else np.zeros((0, 2), dtype=np.int64)
        scale = np.sqrt(len(comp) / largest)
        centre = np.array([2.5 * (idx % cols), -2.5 * (idx // cols)])
        pos[comp] = layout_one(len(comp), sub) * scale + centre
    return _normalise_positions(pos)


def graph_layout(
    n: int,
    edges: ArrayLike | None,
    layout: Literal["spring", "spectral", "circle"] = "spring",
    *,
    seed: int = 0,
) -> np.ndarray:
    """Node positions ``(n, 2)`` in [-1, 1]; ``"spring"`` and ``"spectral"`` lay out each
    connected component separately and pack them side by side."""
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(_LAYOUTS)}, got {layout!r}")
    e = _edge_array(edges, n)
    if layout == "circle":
        return circle_layout(n)
    if layout == "spectral":
        return _layout_by_component(n, e, spectral_layout)
    return _layout_by_component(n, e, lambda m, sub: spring_layout(m, sub, seed=seed))


_LAYOUTS = {"spring", "spectral", "circle"}


def graph_nodes(
    node_scores: ArrayLike,
    *,
    edges: ArrayLike | None = None,
    positions: ArrayLike | None = None,
    node_labels: Sequence[str] | None = None,
    layout: Literal["spring", "spectral", "circle"] = "spring",
    seed: int = 0,
    vmax: float | None = None,
    cmap: str = DEFAULT_CMAP,
    node_size: float = 300.0,
    edge_color: str = "0.6",
    colorbar: bool = True,
    title: str | None = None,
    figsize: tuple[float, float] = (5.0, 4.0),
    dpi: float = 100,
    save: PathLike | None = None,
) -> Figure:
    """Graph drawing with nodes coloured by attribution score.

    Args:
        node_scores: ``(N,)`` one score per node.
        edges: ``(E, 2)`` integer node-index pairs (undirected), or ``None``.
        positions: ``(N, 2)`` node coordinates; if ``None`` they are computed with
            ``layout`` from ``edges`` (pure numpy, no networkx).
        node_labels: ``N`` labels drawn on the nodes.
        layout: ``"spring"`` (Fruchterman-Reingold), ``"spectral"`` or ``"circle"``.
        seed: seed of the spring layout's initial jitter.
        vmax: colour limit; limits are ``(-vmax, vmax)``, default ``max |score|``.
        cmap: a diverging colormap name, centred at 0.
        node_size: marker area in points^2.
        edge_color: colour of the edge lines.
        colorbar, title: colour bar; axes title.
        figsize, dpi, save: figure size in inches, resolution, optional PNG path.

    Returns:
        The figure; the nodes are the ``PathCollection`` labelled ``"attribution"``
        (``get_clim()`` gives the colour limits).
    """
    s = _as_float_array(node_scores, "node_scores")
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"node_scores must have shape (N,) with N >= 1, got shape {s.shape}")
    n = s.size
    e = _edge_array(edges, n)
    if positions is None:
        pos = graph_layout(n, e, layout, seed=seed)
    else:
        pos = _as_float_array(positions, "positions")
        if pos.shape != (n, 2):
            raise ValueError(
                f"positions must have shape (N, 2) = ({n}, 2) (one x, y per node), got shape {pos.shape}"
            )
    if node_labels is not None and len(node_labels) != n:
        raise ValueError(f"node_labels must have one label per node ({n}), got {len(node_labels)}")
    v = symmetric_limit(s, vmax=vmax)
    fig = _new_figure(figsize, dpi)
    ax = fig.add_subplot()
    if len(e):
        segments = np.stack([pos[e[:, 0]], pos[e[:, 1]]], axis=1)
        ax.add_collection(LineCollection(segments, colors=edge_color, linewidths=1.2, zorder=1))
    nodes = ax.scatter(
        pos[:, 0], pos[:, 1], c=s, cmap=cmap, vmin=-v, vmax=v, s=node_size,
        edgecolors="black", linewidths=0.8, zorder=2,
    )
    nodes.set_label(ATTRIBUTION_LABEL)
    if node_labels is not None:
        for (x, y), lab in zip(pos, node_labels):
            ax.text(x, y, str(lab), ha="center", va="center", fontsize=8, zorder=3)
    ax.set_aspect("equal")
    ax.margins(0.12)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(nodes, ax=ax, label=ATTRIBUTION_LABEL, shrink=0.8)
    return _finish(fig, save)
