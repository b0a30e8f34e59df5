"""Several attribution methods side by side for the same inputs (:func:`method_grid`): rows
are examples, column 0 the input, then one column per method."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from matplotlib.figure import Figure

from jaxlift.viz._style import (ATTRIBUTION_LABEL, DEFAULT_CMAP, PathLike, as_float_array,
                                bare_axes, check_alpha, check_vmax, display_image, finish,
                                new_figure, show_image, show_scores, symmetric_limit)

def _grid_limits(
    per_method: list[np.ndarray], share: str, vmax: float | None
) -> np.ndarray:
    """One colour limit per example row, shape (N,)."""
    n = per_method[0].shape[0]
    if vmax is not None:
        return np.full(n, check_vmax(vmax))
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
        s = as_float_array(sc, f"scores_by_method[{name!r}]")
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
        alpha = check_alpha(alpha)
    limits = _grid_limits(per_method, share, vmax)
    display = [display_image(imgs[i], f"images[{i}]") for i in range(n)]

    m = len(per_method)
    if figsize is None:
        extra = 0.8 if colorbar else 0.0
        figsize = (cell_size * (m + 1) + extra, cell_size * n + (0.4 if title else 0.0))
    fig = new_figure(figsize, dpi)
    axes = np.asarray(fig.subplots(n, m + 1, squeeze=False))
    mappable = None
    for i in range(n):
        show_image(axes[i, 0], display[i])
        if row_labels is not None:
            axes[i, 0].set_ylabel(str(row_labels[i]))
        for j, s in enumerate(per_method):
            ax = axes[i, j + 1]
            if alpha is not None:
                show_image(ax, display[i], gray=True)
                mappable = show_scores(ax, s[i], -limits[i], limits[i], cmap, alpha=alpha)
            else:
                mappable = show_scores(ax, s[i], -limits[i], limits[i], cmap)
        if colorbar and share == "row" and vmax is None:
            fig.colorbar(mappable, ax=list(axes[i, 1:]), shrink=0.8)
    for ax in axes.flat:
        bare_axes(ax)
    axes[0, 0].set_title(input_title)
    for j, name in enumerate(names):
        axes[0, j + 1].set_title(name)
    if colorbar and (share == "global" or vmax is not None):
        fig.colorbar(mappable, ax=list(axes[:, 1:].flat), label=ATTRIBUTION_LABEL, shrink=0.8)
    if title:
        fig.suptitle(title)
    return finish(fig, save)
