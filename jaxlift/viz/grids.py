"""Several attribution methods side by side for the same inputs (:func:`method_grid`): rows
are examples, column 0 the input, then one column per method; one colour scale per row, per
method or for the whole grid, with the sign views and percentile clipping of the image
figures."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from matplotlib.figure import Figure

from jaxlift.errors import InputValueError
from jaxlift.viz._style import (ATTRIBUTION_LABEL, DEFAULT_CMAP, SIGNS, PathLike, as_float_array,
                                bare_axes, check_alpha, check_choice, check_vmax, color_limit,
                                display_image, finish, new_figure, scale_for, show_image,
                                show_scores, sign_filter, symmetric_limit)


SHARES = ("row", "global", "method")
"""Which cells of :func:`method_grid` share a colour limit: each example's row, the whole grid,
or each method's column (methods whose scores have different units, e.g. gradients beside
contributions)."""


def _limit(arrays: list[np.ndarray], clip_percentile: float | None) -> float:
    if clip_percentile is None:
        return symmetric_limit(*arrays)
    return color_limit(*arrays, clip_percentile=clip_percentile)


def _grid_limits(
    per_method: list[np.ndarray], share: str, vmax: float | None,
    clip_percentile: float | None = None,
) -> np.ndarray:
    """One colour limit per cell, shape (N, M) (N examples, M methods)."""
    n, m = per_method[0].shape[0], len(per_method)
    if vmax is not None:
        return np.full((n, m), check_vmax(vmax))
    if share == "global":
        return np.full((n, m), _limit(per_method, clip_percentile))
    if share == "method":
        return np.tile([_limit([s], clip_percentile) for s in per_method], (n, 1))
    return np.repeat([[_limit([s[i] for s in per_method], clip_percentile)] for i in range(n)],
                     m, axis=1)


def method_grid(
    images: ArrayLike,
    scores_by_method: Mapping[str, ArrayLike],
    *,
    share: Literal["row", "global", "method"] = "row",
    vmax: float | None = None,
    sign: Literal["all", "positive", "negative", "absolute"] = "all",
    clip_percentile: float | None = None,
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
    """Side-by-side comparison of attribution methods on the same inputs.

    Rows are examples; column 0 shows the input, then one column per method (titled
    with its key, in the mapping's order).

    Args:
        images: a batch ``(N, H, W)``, ``(N, H, W, 1)``, ``(N, H, W, 3)`` or ``(N, H, W, 4)``.
        scores_by_method: method name -> scores ``(N, H, W)`` or ``(N, H, W, C)``
            (channels summed); at least one method.
        share: one of :data:`SHARES`: ``"row"`` -- each example's methods share one colour
            scale; ``"global"`` -- one scale for the whole grid; ``"method"`` -- each
            method's column has its own scale (and colour bar below it).
        vmax: fixed colour limit for every cell (overrides ``share``).
        sign: which scores to show (:func:`sign_filter`; ``"absolute"``: a sequential
            scale from 0).
        clip_percentile: each shared limit is this percentile of ``|score|`` over the cells
            that share it (``None``: the largest), so a few outliers do not wash a map out.
        cmap: a diverging colormap name.
        alpha: if given, overlay each heatmap on the grayscale input with this opacity;
            ``None`` draws plain heatmaps.
        row_labels: ``N`` labels written beside the input column.
        input_title: title of the input column.
        colorbar: one colour bar per row (``share="row"``), per method (``"method"``) or one
            for the grid.
        title: figure title.
        cell_size: inches per cell when ``figsize`` is not given.
        figsize, dpi: figure size in inches and resolution.
        save: if given, write the PNG there.

    Returns:
        The figure; ``fig.axes[:N*(M+1)]`` are the cells in row-major order and every
        heatmap is an ``AxesImage`` labelled ``"attribution"`` holding the sign-filtered
        map, with ``get_clim()`` its cell's limits.
    """
    if share not in SHARES:
        raise InputValueError(f"share must be 'row' or 'global' (one scale per example, or for the "
                              f"grid) or 'method' (one per method), got {share!r}")
    check_choice(sign, SIGNS, "sign")
    if not isinstance(scores_by_method, Mapping) or len(scores_by_method) == 0:
        raise InputValueError("scores_by_method must be a non-empty mapping {method name: scores}")
    imgs = np.asarray(images)
    if imgs.ndim == 3 or (imgs.ndim == 4 and imgs.shape[-1] in (1, 3, 4)):
        n, h, w = imgs.shape[:3]
    else:
        raise InputValueError(
            "images must be a batch of shape (N, H, W) or (N, H, W, C) with C in {1, 3, 4}, "
            f"got shape {imgs.shape}"
        )
    if n == 0:
        raise InputValueError("images must hold at least one example (N >= 1)")
    names = [str(k) for k in scores_by_method]
    per_method = []
    for name, sc in scores_by_method.items():
        s = as_float_array(sc, f"scores_by_method[{name!r}]")
        if s.ndim == 4:
            s = s.sum(axis=-1)
        if s.shape != (n, h, w):
            raise InputValueError(
                f"scores_by_method[{name!r}] must have shape (N, H, W) or (N, H, W, C) "
                f"matching images (N, H, W) = {(n, h, w)}, got shape {np.shape(sc)}"
            )
        per_method.append(sign_filter(s, sign))
    if row_labels is not None and len(row_labels) != n:
        raise InputValueError(f"row_labels must have one label per example ({n}), got {len(row_labels)}")
    if alpha is not None:
        alpha = check_alpha(alpha)
    limits = _grid_limits(per_method, share, vmax, clip_percentile)
    display = [display_image(imgs[i], f"images[{i}]") for i in range(n)]

    m = len(per_method)
    by_method = share == "method" and vmax is None
    if figsize is None:
        extra = 0.8 if colorbar and not by_method else 0.0
        below = 0.7 if colorbar and by_method else 0.0
        figsize = (cell_size * (m + 1) + extra, cell_size * n + (0.4 if title else 0.0) + below)
    fig = new_figure(figsize, dpi)
    axes = np.asarray(fig.subplots(n, m + 1, squeeze=False))
    mappable = None
    column_maps = [None] * m
    for i in range(n):
        show_image(axes[i, 0], display[i])
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]))
        for j, s in enumerate(per_method):
            ax = axes[i, j + 1]
            cm, lo, hi = scale_for(sign, limits[i, j], cmap)
            if alpha is not None:
                show_image(ax, display[i], gray=True)
                mappable = show_scores(ax, s[i], lo, hi, cm, alpha=alpha)
            else:
                mappable = show_scores(ax, s[i], lo, hi, cm)
            column_maps[j] = mappable
        if colorbar and share == "row" and vmax is None:
            fig.colorbar(mappable, ax=list(axes[i, 1:]), shrink=0.8)
    for ax in axes.flat:
        bare_axes(ax)
    axes[0, 0].set_title(input_title)
    for j, name in enumerate(names):
        axes[0, j + 1].set_title(name)
    if colorbar and by_method:
        for j in range(m):
            fig.colorbar(column_maps[j], ax=list(axes[:, j + 1]), orientation="horizontal",
                         location="bottom", shrink=0.9)
    if colorbar and (share == "global" or vmax is not None):
        fig.colorbar(mappable, ax=list(axes[:, 1:].flat), label=ATTRIBUTION_LABEL, shrink=0.8)
    if title:
        fig.suptitle(title)
    return finish(fig, save)
