"""Graphs: nodes coloured by score, edges as lines (:func:`graph_nodes`), and numpy layouts
(:func:`graph_layout`: spring, spectral, circle; no networkx)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from jaxlift.errors import InputValueError
from jaxlift.viz._style import (ATTRIBUTION_LABEL, DEFAULT_CMAP, PathLike, as_float_array, finish,
                                new_figure, symmetric_limit)


def _edge_array(edges: ArrayLike | None, n: int) -> np.ndarray:
    """Edges as an (E, 2) int array with indices in [0, n)."""
    if edges is None:
        return np.zeros((0, 2), dtype=np.int64)
    e = np.asarray(edges)
    if e.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise InputValueError(f"edges must have shape (E, 2) (pairs of node indices), got shape {e.shape}")
    if e.dtype.kind not in "iuf" or (e.dtype.kind == "f" and not np.all(np.mod(e, 1) == 0)):
        raise InputValueError("edges must hold integer node indices")
    e = e.astype(np.int64)
    bad = (e < 0) | (e >= n)
    if bad.any():
        raise InputValueError(
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
        raise InputValueError(f"layout must be one of {sorted(_LAYOUTS)}, got {layout!r}")
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
    s = as_float_array(node_scores, "node_scores")
    if s.ndim != 1 or s.size == 0:
        raise InputValueError(f"node_scores must have shape (N,) with N >= 1, got shape {s.shape}")
    n = s.size
    e = _edge_array(edges, n)
    if positions is None:
        pos = graph_layout(n, e, layout, seed=seed)
    else:
        pos = as_float_array(positions, "positions")
        if pos.shape != (n, 2):
            raise InputValueError(
                f"positions must have shape (N, 2) = ({n}, 2) (one x, y per node), got shape {pos.shape}"
            )
    if node_labels is not None and len(node_labels) != n:
        raise InputValueError(f"node_labels must have one label per node ({n}), got {len(node_labels)}")
    v = symmetric_limit(s, vmax=vmax)
    fig = new_figure(figsize, dpi)
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
    return finish(fig, save)
