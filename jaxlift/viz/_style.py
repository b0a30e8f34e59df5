"""What every figure of :mod:`jaxlift.viz` shares: the colour scales (which scores are shown,
the limit, what red and blue mean), checks of the arguments, the figure itself (built on the Agg
canvas, no ``pyplot``) and the atomic PNG writer.

The names here are public within :mod:`jaxlift.viz` (its modules import them); users read the
re-exported ones (:func:`sign_filter`, :func:`color_limit`, :func:`legend_sentence`,
:func:`save_png`, ...) from :mod:`jaxlift.viz`.
"""
from __future__ import annotations

import errno
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jaxlift.errors import InputValueError
from jaxlift.io.atomic import write_atomically

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


def as_float_array(x: ArrayLike, name: str) -> np.ndarray:
    """``x`` as a float64 numpy array; ValueError if it cannot be or holds NaN/inf."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputValueError(f"{name} must be a numeric array, got {type(x).__name__}: {exc}") from exc
    if not np.all(np.isfinite(arr)):
        raise InputValueError(f"{name} contains NaN or inf values; scores must be finite")
    return arr


def check_vmax(vmax: float | None) -> float | None:
    if vmax is None:
        return None
    v = float(vmax)
    if not np.isfinite(v) or v <= 0:
        raise InputValueError(f"vmax must be a positive finite number, got {vmax!r}")
    return v


def symmetric_limit(*arrays: np.ndarray, vmax: float | None = None) -> float:
    """The ``v`` of the colour limits ``(-v, v)``: ``vmax`` if given, else the largest
    ``|value|`` over all ``arrays`` (1.0 when everything is zero or empty)."""
    v = check_vmax(vmax)
    if v is not None:
        return v
    m = max((float(np.max(np.abs(a))) for a in arrays if np.size(a)), default=0.0)
    return m if m > 0 else 1.0


def sign_filter(scores: ArrayLike, sign: str = "all") -> np.ndarray:
    """The scores a figure shows for ``sign`` (one of :data:`SIGNS`).

    ``"all"``: the scores as they are; ``"positive"`` / ``"negative"``: the scores of that
    sign, every other score set to 0; ``"absolute"``: ``|score|``.  Returns a new float64
    array of the same shape."""
    s = as_float_array(scores, "scores")
    if sign == "all":
        return s.copy()
    if sign == "positive":
        return np.where(s > 0, s, 0.0)
    if sign == "negative":
        return np.where(s < 0, s, 0.0)
    if sign == "absolute":
        return np.abs(s)
    raise InputValueError(f"sign must be one of {', '.join(map(repr, SIGNS))}, got {sign!r}")


def check_percentile(clip_percentile: float | None) -> float | None:
    if clip_percentile is None:
        return None
    try:
        p = float(clip_percentile)
    except (TypeError, ValueError):
        raise InputValueError(f"clip_percentile must be a number in (0, 100], got {clip_percentile!r}"
                              ) from None
    if not 0.0 < p <= 100.0:
        raise InputValueError(f"clip_percentile must be in (0, 100] (100: no clipping), "
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
    v = check_vmax(vmax)
    if v is not None:
        return v
    p = check_percentile(clip_percentile)
    mags = [np.abs(as_float_array(a, "scores")).ravel() for a in arrays]
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
    raise InputValueError(f"sign must be one of {', '.join(map(repr, SIGNS))}, got {sign!r}")


def scale_for(sign: str, v: float, cmap: str) -> tuple[str, float, float]:
    """(colormap, vmin, vmax) for scores filtered with ``sign``."""
    if sign == "absolute":
        return ABSOLUTE_CMAP, 0.0, v
    return cmap, -v, v


def new_figure(figsize: tuple[float, float], dpi: float) -> Figure:
    w, h = (float(s) for s in figsize)
    if not (w > 0 and h > 0):
        raise InputValueError(f"figsize must be two positive numbers (inches), got {figsize!r}")
    if not float(dpi) > 0:
        raise InputValueError(f"dpi must be positive, got {dpi!r}")
    fig = Figure(figsize=(w, h), dpi=float(dpi), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def finish(fig: Figure, save: PathLike | None) -> Figure:
    if save is not None:
        save_png(fig, save)
    return fig


def spatial_scores(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    """Scores (H,W) or (H,W,C) -> (H,W), summing over channels."""
    s = as_float_array(scores, name)
    if s.ndim == 3:
        s = s.sum(axis=-1)
    elif s.ndim != 2:
        raise InputValueError(f"{name} must have shape (H, W) or (H, W, C), got shape {s.shape}")
    return s


def display_image(image: ArrayLike, name: str = "image") -> np.ndarray:
    """Image (H,W), (H,W,1), (H,W,3) or (H,W,4) -> floats in [0,1], shape (H,W) or (H,W,3).

    uint8 images are divided by 255, float images already in [0,1] are kept, anything
    else is min-max scaled."""
    raw = np.asarray(image)
    img = as_float_array(raw, name)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    elif img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., :3]
    elif img.ndim != 2:
        raise InputValueError(
            f"{name} must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {img.shape}"
        )
    if raw.dtype == np.uint8:
        return img / 255.0
    lo, hi = (float(img.min()), float(img.max())) if img.size else (0.0, 1.0)
    if lo >= 0.0 and hi <= 1.0:
        return img
    return (img - lo) / (hi - lo) if hi > lo else np.full_like(img, 0.5)


def grayscale(img: np.ndarray) -> np.ndarray:
    """(H,W) or (H,W,3) in [0,1] -> (H,W) luminance."""
    return img if img.ndim == 2 else img @ np.array([0.299, 0.587, 0.114])


def show_image(ax, img: np.ndarray, gray: bool = False):
    """Draw a display image (from :func:`display_image`) on ``ax``."""
    if gray or img.ndim == 2:
        return ax.imshow(grayscale(img), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    return ax.imshow(img, interpolation="nearest")


def show_scores(ax, scores2d: np.ndarray, lo: float, v: float, cmap: str, alpha: float = 1.0):
    im = ax.imshow(scores2d, cmap=cmap, vmin=lo, vmax=v, alpha=alpha, interpolation="nearest")
    im.set_label(ATTRIBUTION_LABEL)
    return im


def bare_axes(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 <= a <= 1.0:
        raise InputValueError(f"alpha must be in [0, 1], got {alpha!r}")
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


# --------------------------------------------------------------------------- figure texts


def wrapped(text: str | None, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points."""
    if not text:
        return ""
    chars = max(20, int(width_in * 72.0 / (0.58 * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=False)
                     for line in str(text).splitlines())


def add_texts(fig: Figure, title: str | None, subtitle: str | None, legend: str | None,
               width_in: float) -> None:
    """Title and subtitle above the panels, the legend sentence below them."""
    head = "\n".join(t for t in (wrapped(title, width_in, 11), wrapped(subtitle, width_in, 9.5))
                     if t)
    if head:
        fig.suptitle(head, fontsize=10)
    if legend:
        fig.supxlabel(wrapped(legend, width_in, 9.5), fontsize=9.5)


def text_height(title: str | None, subtitle: str | None, legend: str | None,
                 width_in: float) -> float:
    """Inches the texts of :func:`add_texts` need (so panels keep their size)."""
    lines = sum(wrapped(t, width_in, 10).count("\n") + 1 for t in (title, subtitle, legend) if t)
    return 0.2 * lines + (0.15 if lines else 0.0)


def grey_background(ax, img: np.ndarray):
    """The input in light grey (dark pixels mid-grey), so red and blue stay readable."""
    return ax.imshow(grayscale(img), cmap="gray", vmin=-0.6, vmax=1.0, interpolation="nearest")


def draw_blended(ax, img: np.ndarray, s: np.ndarray, cmap: str, lo: float, hi: float, alpha: float):
    """Scores over the grey input: each pixel's opacity grows with its ``|score|`` (up to
    ``alpha`` at the colour limit), so the input shows through where nothing contributes."""
    grey_background(ax, img)
    strength = np.clip(np.abs(s) / max(abs(lo), abs(hi)), 0.0, 1.0)
    im = ax.imshow(s, cmap=cmap, vmin=lo, vmax=hi, alpha=alpha * np.sqrt(strength),
                   interpolation="nearest")
    im.set_label(ATTRIBUTION_LABEL)
    return im


def shared_colorbar(fig: Figure, axes, cmap: str, lo: float, hi: float,
                    shown: list[np.ndarray], unit: str, orientation: str = "vertical"):
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


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    if value not in choices:
        raise InputValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_ncols(ncols: int | None, default: int) -> int:
    if ncols is None:
        return default
    if isinstance(ncols, bool) or int(ncols) != ncols or ncols < 1:
        raise InputValueError(f"ncols must be a positive integer or None, got {ncols!r}")
    return int(ncols)
