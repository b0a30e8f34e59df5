"""Tabular features and per-position scores as bars: :func:`feature_bars` (one input,
largest ``|score|`` first) and :func:`target_bars` (one panel per target on one scale)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from matplotlib.figure import Figure

from jaxlift.errors import InputValueError
from jaxlift.viz._style import (ATTRIBUTION_LABEL, NEG_COLOR, POS_COLOR, PathLike, add_texts,
                                as_float_array, check_choice, check_ncols, finish, new_figure,
                                sign_filter, symmetric_limit, text_height)


def magnitude_order(scores: np.ndarray, top_k: int | None = None) -> np.ndarray:
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
    s = as_float_array(scores, "scores")
    if s.ndim != 1:
        raise InputValueError(f"scores must have shape (F,) (one score per feature), got shape {s.shape}")
    if s.size == 0:
        raise InputValueError("scores must hold at least one feature, got shape (0,)")
    if feature_names is None:
        names = [f"x{i}" for i in range(s.size)]
    else:
        names = [str(x) for x in feature_names]
        if len(names) != s.size:
            raise InputValueError(
                f"feature_names must have one name per score ({s.size}), got {len(names)}"
            )
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise InputValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    order = magnitude_order(s, None if top_k is None else int(top_k))
    vals = s[order]
    if figsize is None:
        figsize = (6.0, 1.0 + 0.3 * len(order))
    fig = new_figure(figsize, dpi)
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
    return finish(fig, save)


BAR_ORDERS = ("magnitude", "position")
"""How :func:`target_bars` orders bars: largest ``|score|`` first (tabular features), or by
position along the input (sequences)."""


def _bar_scores(scores_by_target: Mapping[str, ArrayLike]) -> dict[str, np.ndarray]:
    """target label -> (F,) scores, all of one length F >= 1."""
    if not isinstance(scores_by_target, Mapping) or len(scores_by_target) == 0:
        raise InputValueError("scores_by_target must be a non-empty mapping {target label: scores}")
    out: dict[str, np.ndarray] = {}
    for label, sc in scores_by_target.items():
        s = as_float_array(sc, f"scores_by_target[{label!r}]")
        if s.ndim != 1 or s.size == 0:
            raise InputValueError(f"scores_by_target[{label!r}] must have shape (F,) with F >= 1 "
                                  f"(one score per feature or position), got shape {s.shape}")
        if out and s.size != next(iter(out.values())).size:
            raise InputValueError(f"scores_by_target[{label!r}] has {s.size} scores but the first "
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
    check_choice(order, BAR_ORDERS, "order")
    f = next(iter(shown.values())).size
    if feature_names is None:
        names = [f"x{i}" for i in range(f)]
    else:
        names = [str(x) for x in feature_names]
        if len(names) != f:
            raise InputValueError(f"feature_names must have one name per score ({f}), got {len(names)}")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise InputValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    by_size = order == "magnitude"
    picks = {k: (magnitude_order(s, None if top_k is None else int(top_k)) if by_size
                 else np.arange(f)) for k, s in shown.items()}
    if by_size and sign in ("positive", "negative"):  # no rows for the filtered-out sign
        picks = {k: p[shown[k][p] != 0] for k, p in picks.items()}
    n = len(shown)
    cols = check_ncols(ncols, min(n, 3) if by_size else 1)
    rows = -(-n // cols)
    bars = max(1, max(len(p) for p in picks.values()))
    if figsize is None:
        cell_w = 4.4 if by_size else float(np.clip(0.22 * f, 6.0, 16.0))
        cell_h = 0.7 + 0.26 * bars if by_size else 2.2
        width = cell_w * cols
        figsize = (width, cell_h * rows + text_height(title, subtitle, legend, width))
    fig = new_figure(figsize, dpi)
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
    add_texts(fig, title, subtitle, legend, figsize[0])
    return finish(fig, save)
