"""Images: one image's heat map (:func:`image_heatmap`), one input and its maps for one or
many targets (:func:`attribution_grid`), several inputs on one scale (:func:`examples_grid`).

Scores are ``(H, W)`` or ``(H, W, C)`` (channels summed) from any model; images ``(H, W)``,
``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from matplotlib.figure import Figure

from jaxlift.errors import InputValueError
from jaxlift.viz._style import (ABSOLUTE_CMAP, ATTRIBUTION_LABEL, DEFAULT_CMAP, SIGNS, PathLike,
                                as_float_array, add_texts, bare_axes, check_alpha, check_choice,
                                check_ncols, color_limit, display_image, draw_blended, finish,
                                new_figure, scale_for, shared_colorbar, show_image, show_scores,
                                sign_filter, spatial_scores, text_height)


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
    s = spatial_scores(scores)
    img = None if image is None else display_image(image)
    if img is not None and img.shape[:2] != s.shape:
        raise InputValueError(
            f"image and scores must have the same (H, W): image is {img.shape[:2]}, "
            f"scores are {s.shape}"
        )
    alpha = check_alpha(alpha)
    s = sign_filter(s, sign)
    cmap, lo, v = scale_for(sign, color_limit(s, clip_percentile=clip_percentile, vmax=vmax),
                             cmap)
    fig = new_figure(figsize, dpi)
    if img is not None and not overlay:
        ax_img, ax = fig.subplots(1, 2)
        show_image(ax_img, img)
        bare_axes(ax_img)
        ax_img.set_title("input")
        im = show_scores(ax, s, lo, v, cmap)
    else:
        ax = fig.add_subplot()
        if img is not None:
            show_image(ax, img, gray=grayscale_background)
            im = show_scores(ax, s, lo, v, cmap, alpha=alpha)
        else:
            im = show_scores(ax, s, lo, v, cmap)
    bare_axes(ax)
    if title:
        ax.set_title(title)
    if colorbar:
        fig.colorbar(im, ax=ax, label=ATTRIBUTION_LABEL, shrink=0.8)
    return finish(fig, save)


PANEL_STYLES = ("map", "overlay")
"""How :func:`attribution_grid` draws a target's scores: the map alone, or blended over the
input shown in grey."""


def _target_maps(scores_by_target: Mapping[str, ArrayLike], shape: tuple[int, ...] | None
                 ) -> dict[str, np.ndarray]:
    """target label -> (H, W) map (channels summed), all of one (H, W)."""
    if not isinstance(scores_by_target, Mapping) or len(scores_by_target) == 0:
        raise InputValueError("scores_by_target must be a non-empty mapping {target label: scores}")
    maps = {}
    for label, sc in scores_by_target.items():
        s = spatial_scores(sc, f"scores_by_target[{label!r}]")
        if shape is not None and s.shape != shape:
            raise InputValueError(f"scores_by_target[{label!r}] must have the image's (H, W) = "
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
        raise InputValueError(f"styles must be distinct entries of {PANEL_STYLES}, got {styles!r}")
    for st in styles:
        check_choice(st, PANEL_STYLES, "each style")
    check_choice(sign, SIGNS, "sign")
    return styles, check_alpha(alpha)


def _draw_panel(ax, style: str, img, shown: np.ndarray, cmap, lo: float, hi: float,
                alpha: float) -> None:
    """One score panel: the map alone (an ``AxesImage`` labelled ``"attribution"``) or
    blended over the input."""
    if style == "overlay":
        draw_blended(ax, img, shown, cmap, lo, hi, alpha)
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
    img = None if image is None else display_image(image)
    if img is None and "overlay" in styles:
        raise InputValueError("an overlay needs the image: pass image, or styles=('map',)")
    maps = _target_maps(scores_by_target, None if img is None else img.shape[:2])
    shown = {k: sign_filter(m, sign) for k, m in maps.items()}
    v = color_limit(*shown.values(), clip_percentile=clip_percentile, vmax=vmax)
    cmap_used, lo, hi = scale_for(sign, v, cmap)
    panels = [(label, st) for label in shown for st in styles]
    n = len(panels) + (img is not None)
    cols = check_ncols(ncols, min(n, 6))
    rows = -(-n // cols)
    width = cell_size * cols + 1.2
    fig = new_figure((width, cell_size * rows + text_height(title, subtitle, legend, width)),
                      dpi)
    axes = list(np.asarray(fig.subplots(rows, cols, squeeze=False)).flat)
    k = 0
    if img is not None:
        show_image(axes[0], img)
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
        bare_axes(ax)
    for ax in axes[k:]:
        ax.set_axis_off()
    shared_colorbar(fig, axes[:k] if rows == 1 else axes, cmap_used, lo, hi, list(shown.values()),
              unit)
    add_texts(fig, title, subtitle, legend, width)
    return finish(fig, save)


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
        raise InputValueError(f"images must be a batch (N, H, W) or (N, H, W, C) with N >= 1, got "
                              f"shape {imgs.shape}")
    s = as_float_array(scores, "scores")
    if s.ndim == 4:
        s = s.sum(axis=-1)
    if s.shape != imgs.shape[:3]:
        raise InputValueError(f"scores must have shape (N, H, W) or (N, H, W, C) matching the "
                              f"images {imgs.shape[:3]}, got shape {np.shape(scores)}")
    n = len(imgs)
    if row_labels is not None and len(row_labels) != n:
        raise InputValueError(f"row_labels must have one label per input ({n}), got "
                              f"{len(row_labels)}")
    shown = [sign_filter(s[i], sign) for i in range(n)]
    v = color_limit(*shown, clip_percentile=clip_percentile, vmax=vmax)
    cmap_used, lo, hi = scale_for(sign, v, cmap)
    cols = 1 + len(styles)
    width = cell_size * cols + 1.4
    fig = new_figure((width, cell_size * n + text_height(title, subtitle, legend, width)),
                      dpi)
    axes = np.asarray(fig.subplots(n, cols, squeeze=False))
    for i in range(n):
        img = display_image(imgs[i], f"images[{i}]")
        show_image(axes[i, 0], img)
        if row_labels is not None:
            axes[i, 0].set_title(str(row_labels[i]), fontsize=9)
        for j, st in enumerate(styles, start=1):
            ax = axes[i, j]
            _draw_panel(ax, st, img, shown[i], cmap_used, lo, hi, alpha)
            if i == 0:
                ax.set_title(_STYLE_NAMES[st], fontsize=9)
    for ax in axes.flat:
        bare_axes(ax)
    shared_colorbar(fig, list(axes.flat), cmap_used, lo, hi, shown, unit)
    add_texts(fig, title, subtitle, legend, width)
    return finish(fig, save)


IMAGE_VIEWS = ("image", "heat_map", "overlay", "masked", "alpha_scaling")
"""The views of :func:`image_attribution` (Captum's ``visualize_image_attr`` methods):
``"image"`` the input; ``"heat_map"`` the scores alone; ``"overlay"`` the scores blended over
the grey input (Captum's ``blended_heat_map``); ``"masked"`` the input times the normalised
magnitude ``m = clip(|shown| / v, 0, 1)`` (``masked_image``: what the scores keep, on black);
``"alpha_scaling"`` the input with opacity ``m`` over white."""

_VIEW_TITLES = {"image": "input", "heat_map": "heat map", "overlay": "over the input",
                "masked": "masked input", "alpha_scaling": "alpha scaling"}


def view_strength(shown: np.ndarray, v: float) -> np.ndarray:
    """The normalised magnitude ``clip(|shown| / v, 0, 1)`` that the ``"masked"`` and
    ``"alpha_scaling"`` views of :func:`image_attribution` multiply the input by (``shown``:
    sign-filtered ``(H, W)`` scores, ``v`` the colour limit)."""
    return np.clip(np.abs(shown) / v, 0.0, 1.0)


def _as_rgb(img: np.ndarray) -> np.ndarray:
    """A display image (H, W) or (H, W, 3) in [0, 1] as (H, W, 3)."""
    return np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img


def _check_signs(sign) -> tuple[str, ...]:
    signs = (sign,) if isinstance(sign, str) else tuple(sign)
    if not signs or len(set(signs)) != len(signs):
        raise InputValueError(f"sign must be one of {SIGNS} or a sequence of distinct ones, got "
                              f"{sign!r}")
    for s in signs:
        check_choice(s, SIGNS, "sign")
    return signs


def image_attribution(
    image: ArrayLike,
    scores: ArrayLike,
    *,
    views: Sequence[Literal["image", "heat_map", "overlay", "masked", "alpha_scaling"]] = (
        "image", "heat_map", "overlay", "masked"),
    sign: str | Sequence[str] = "all",
    clip_percentile: float | None = 99.5,
    vmax: float | None = None,
    alpha: float = 0.8,
    cmap: str = DEFAULT_CMAP,
    unit: str = ATTRIBUTION_LABEL,
    legend: str | None = None,
    title: str | None = None,
    subtitle: str | None = None,
    cell_size: float = 2.4,
    dpi: float = 100,
    save: PathLike | None = None,
) -> Figure:
    """One image's scores in several views and signs, like Captum's ``visualize_image_attr``
    (and ``visualize_image_attr_multiple``), for any model's scores.

    One row per entry of ``sign`` (:data:`~jaxlift.viz.SIGNS`: ``"all"``, ``"positive"``,
    ``"negative"``, ``"absolute"``; :func:`sign_filter`), one column per entry of ``views``
    (:data:`IMAGE_VIEWS`; the ``"image"`` panel is drawn in the first row only). Every panel
    shares one colour limit ``v``: ``vmax`` if given, else the ``clip_percentile``-th
    percentile of ``|score|`` over the whole map (:func:`color_limit`; Captum's
    ``outlier_perc=2`` is ``clip_percentile=98``), so the rows compare and a few outliers do not
    wash the map out. Diverging rows run ``(−v, v)`` (red raises the target), the absolute row
    ``(0, v)`` on a sequential scale; a colour bar labelled ``unit`` serves each kind.
    ``"masked"`` and ``"alpha_scaling"`` use the magnitude of the row's shown scores
    (:func:`view_strength`), so with ``sign="all"`` they keep pixels of either sign.

    Args:
        image: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)``; uint8 is read as
            0..255, floats outside [0, 1] are min-max scaled for display.
        scores: ``(H, W)`` or ``(H, W, C)`` (channels summed), e.g. one row of
            :func:`jaxlift.attribute`'s ``(N, H, W, C)`` result.
        views: distinct entries of :data:`IMAGE_VIEWS`, in column order.
        sign: one sign or a sequence of distinct signs (one row each).
        clip_percentile: the colour limit's percentile of ``|score|`` in (0, 100] (``None``
            or 100: the largest); the colour bars' arrow ends mark clipped scores.
        vmax: a fixed colour limit instead.
        alpha: the largest opacity of the ``"overlay"`` view, in [0, 1].
        cmap: the diverging colormap (red: positive).
        unit: what the scores are, for the colour bars.
        legend, title, subtitle: a sentence below the panels; lines above them.
        cell_size: inches per panel.
        dpi, save: resolution; optional PNG path (:func:`save_png`).

    Returns:
        The figure. Row ``i`` holds ``len(views)`` axes in ``fig.axes`` order (the colour
        bars come last), titled ``"input"``, ``"heat map"``, ``"over the input"``,
        ``"masked input"``, ``"alpha scaling"``; each heat map and overlay holds an
        ``AxesImage`` labelled ``"attribution"`` whose array is the row's sign-filtered map,
        each masked view an ``AxesImage`` labelled ``"masked"`` (the RGB input times
        :func:`view_strength`), each alpha view one labelled ``"alpha_scaling"`` (RGBA).
    """
    views = tuple(views)
    if not views or len(set(views)) != len(views):
        raise InputValueError(f"views must be distinct entries of {IMAGE_VIEWS}, got {views!r}")
    for vw in views:
        check_choice(vw, IMAGE_VIEWS, "each view")
    signs = _check_signs(sign)
    alpha = check_alpha(alpha)
    img = display_image(image)
    s = spatial_scores(scores)
    if img.shape[:2] != s.shape:
        raise InputValueError(f"image and scores must have the same (H, W): image is "
                              f"{img.shape[:2]}, scores are {np.shape(scores)}")
    v = color_limit(s, clip_percentile=clip_percentile, vmax=vmax)
    rows, cols = len(signs), len(views)
    width = cell_size * cols + 1.4 * (1 + ("absolute" in signs and len(signs) > 1))
    fig = new_figure((width, cell_size * rows + text_height(title, subtitle, legend, width)),
                     dpi)
    axes = np.asarray(fig.subplots(rows, cols, squeeze=False))
    rgb = _as_rgb(img)
    by_scale: dict[str, tuple[list, list]] = {}
    for i, sg in enumerate(signs):
        shown = sign_filter(s, sg)
        cm, lo, hi = scale_for(sg, v, cmap)
        strength = view_strength(shown, v)
        first_panel = True
        for j, vw in enumerate(views):
            ax = axes[i, j]
            bare_axes(ax)
            if vw == "image":
                if i == 0:
                    show_image(ax, img)
                    ax.set_title(_VIEW_TITLES[vw], fontsize=9)
                else:
                    ax.set_axis_off()
                continue
            if vw == "heat_map":
                show_scores(ax, shown, lo, hi, cm)
            elif vw == "overlay":
                draw_blended(ax, img, shown, cm, lo, hi, alpha)
            elif vw == "masked":
                ax.imshow(rgb * strength[..., None], interpolation="nearest").set_label("masked")
            else:
                rgba = np.concatenate([rgb, strength[..., None]], axis=-1)
                ax.imshow(rgba, interpolation="nearest").set_label("alpha_scaling")
            if i == 0 or rows == 1:
                ax.set_title(_VIEW_TITLES[vw], fontsize=9)
            if first_panel and rows > 1:
                ax.set_ylabel(f"sign: {sg}", fontsize=9)
            first_panel = False
            if vw in ("heat_map", "overlay"):  # a colour bar per scale, beside its rows
                group = by_scale.setdefault(cm, ([], []))
                group[0].extend(ax for ax in axes[i] if ax not in group[0])
                group[1].append(shown)
    for cm, (group_axes, shown_maps) in by_scale.items():
        lo, hi = (0.0, v) if cm == ABSOLUTE_CMAP else (-v, v)
        shared_colorbar(fig, group_axes, cm, lo, hi, shown_maps, unit)
    add_texts(fig, title, subtitle, legend, width)
    return finish(fig, save)
