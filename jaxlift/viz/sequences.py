"""Sequence logos: per-position, per-letter scores ``(L, K)`` (DNA ``(L, 4)``) drawn as letters
of signed height (:func:`sequence_logo`)."""
from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.patches import PathPatch
from matplotlib.path import Path as MplPath
from matplotlib.textpath import TextPath
from matplotlib.ticker import MaxNLocator

from jaxlift.errors import InputValueError
from jaxlift.viz._style import (ATTRIBUTION_LABEL, DNA_COLORS, PathLike, as_float_array, finish,
                                new_figure)


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
    s = as_float_array(scores, "scores")
    letters = list(alphabet)
    if len(letters) == 0 or any(not isinstance(a, str) or len(a) != 1 for a in letters):
        raise InputValueError(f"alphabet must be a non-empty sequence of single characters, got {alphabet!r}")
    if len(set(letters)) != len(letters):
        raise InputValueError(f"alphabet letters must be distinct, got {alphabet!r}")
    if s.ndim != 2 or s.shape[1] != len(letters) or s.shape[0] == 0:
        raise InputValueError(
            f"scores must have shape (L, {len(letters)}) with L >= 1 "
            f"(one column per letter of alphabet {''.join(letters)!r}), got shape {s.shape}"
        )
    if not 0.0 < float(letter_width) <= 1.0:
        raise InputValueError(f"letter_width must be in (0, 1], got {letter_width!r}")
    palette = _alphabet_colors(letters, colors)
    length = s.shape[0]
    if figsize is None:
        figsize = (float(np.clip(0.3 * length, 4.0, 20.0)), 2.5)
    fig = new_figure(figsize, dpi)
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
    return finish(fig, save)
