"""Reader for graph data sets in the TU benchmark text format (e.g. PTC_MR), and CV splits.

A data set ``DS`` is a folder of comma-separated text files (ids are 1-based, one record per
line):

============================  ============  ======================================
file                          lines         content
============================  ============  ======================================
``DS_A.txt``                  m (required)  ``row, col`` — an edge as two node ids
``DS_graph_indicator.txt``    n (required)  graph id of node ``i``
``DS_graph_labels.txt``       N (required)  class label of graph ``g``
``DS_node_labels.txt``        n (optional)  integer label of node ``i``
``DS_edge_labels.txt``        m (optional)  integer label of the edge on line ``e`` of ``_A``
``DS_node_attributes.txt``    n (optional)  comma-separated floats for node ``i``
============================  ============  ======================================

Edges are read as **undirected**: ``_A`` normally lists both directions; each unordered pair
becomes one edge ``(i, j)`` with ``i < j`` in local (0-based, per-graph) node numbering, and
the two directions must carry the same label. Malformed input raises :class:`TUFormatError`
(a ``ValueError``) whose message names the file and the 1-based line.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxlift.errors import JaxliftError

__all__ = [
    "Graph",
    "TUFormatError",
    "read_tu",
    "read_readme_labels",
    "stratified_kfold",
]


class TUFormatError(JaxliftError, ValueError):
    """A TU data set file is malformed; the message starts with ``path:line:``."""

    def __init__(self, path: Path | str, line: int | None, problem: str):
        where = f"{path}:{line}" if line is not None else f"{path}"
        super().__init__(f"{where}: {problem}")
        self.path = Path(path)
        self.line = line


@dataclass(frozen=True, eq=False)
class Graph:
    """One graph of a TU data set (a molecule: atoms = nodes, bonds = edges).

    Attributes:
      node_labels: ``(n,)`` int64 node labels (atom types), or ``None`` without ``_node_labels``.
      edges: ``(m, 2)`` int64 local node indices ``0..n-1``, each undirected edge once with
        ``i <= j``, sorted lexicographically.
      edge_labels: ``(m,)`` int64 edge labels (bond types) aligned with ``edges``, or ``None``.
      label: the graph's class label (PTC_MR: ``+1`` / ``-1``).
      node_ids: ``(n,)`` the nodes' 1-based ids in the data set files.
      node_attributes: ``(n, d)`` float64, or ``None``.
      index: position of the graph in the data set (graph id − 1).
    """

    node_labels: np.ndarray | None
    edges: np.ndarray
    edge_labels: np.ndarray | None
    label: int
    node_ids: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.int64))
    node_attributes: np.ndarray | None = field(repr=False, default=None)
    index: int = -1

    @property
    def num_nodes(self) -> int:
        """``n``: the number of nodes."""
        return int(self.node_ids.size) if self.node_labels is None else int(self.node_labels.size)

    @property
    def num_edges(self) -> int:
        """``m``: the number of undirected edges."""
        return int(self.edges.shape[0])

    def neighbours(self) -> list[list[tuple[int, int]]]:
        """Adjacency lists: ``out[i]`` = ``[(j, edge_label), …]`` sorted by ``j``; label ``-1``
        when the data set has no edge labels. Self-loops appear once."""
        out: list[list[tuple[int, int]]] = [[] for _ in range(self.num_nodes)]
        labels = self.edge_labels if self.edge_labels is not None else np.full(self.num_edges, -1)
        for (i, j), b in zip(self.edges.tolist(), labels.tolist()):
            out[i].append((j, b))
            if i != j:
                out[j].append((i, b))
        for lst in out:
            lst.sort()
        return out


# ------------------------------------------------------------------------------- parsing
def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty lines of ``path`` as ``(line_number, text)``; blank lines are allowed only at
    the end (a blank line in the middle would shift every later id)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise TUFormatError(path, None, f"not a text file ({e})") from e
    raw = text.splitlines()
    while raw and not raw[-1].strip():
        raw.pop()
    out = []
    for no, line in enumerate(raw, start=1):
        if not line.strip():
            raise TUFormatError(path, no, "blank line inside the file")
        out.append((no, line))
    return out


def _parse_ints(path: Path, ncols: int) -> tuple[np.ndarray, list[int]]:
    """``(L, ncols)`` int64 values and the line number of each row."""
    rows, nos = [], []
    for no, line in _lines(path):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != ncols:
            raise TUFormatError(path, no, f"expected {ncols} comma-separated integer(s), got {line.strip()!r}")
        try:
            rows.append([int(p) for p in parts])
        except ValueError:
            raise TUFormatError(path, no, f"expected integer(s), got {line.strip()!r}") from None
        nos.append(no)
    return np.asarray(rows, dtype=np.int64).reshape(len(rows), ncols), nos


def _parse_floats(path: Path) -> np.ndarray:
    rows: list[list[float]] = []
    width = None
    for no, line in _lines(path):
        try:
            vals = [float(p) for p in line.split(",")]
        except ValueError:
            raise TUFormatError(path, no, f"expected comma-separated numbers, got {line.strip()!r}") from None
        if width is None:
            width = len(vals)
        elif len(vals) != width:
            raise TUFormatError(path, no, f"expected {width} values as on the first line, got {len(vals)}")
        rows.append(vals)
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width or 0)


def _find_prefix(folder: Path) -> str:
    cands = sorted(p.name[: -len("_A.txt")] for p in folder.glob("*_A.txt"))
    if len(cands) != 1:
        found = "none" if not cands else ", ".join(cands)
        raise FileNotFoundError(
            f"{folder}: cannot tell the data set name (files named NAME_A.txt found: {found}); pass name="
        )
    return cands[0]


def _required(folder: Path, name: str, suffix: str) -> Path:
    path = folder / f"{name}_{suffix}.txt"
    if not path.is_file():
        present = sorted(p.name for p in folder.glob(f"{name}_*.txt"))
        raise FileNotFoundError(
            f"missing required TU file {path} (present with prefix {name!r}: {present or 'none'})"
        )
    return path


def _check_count(path: Path, got: int, expected: int, what: str) -> None:
    if got != expected:
        raise TUFormatError(path, None, f"has {got} lines but {what} needs {expected}")


def read_tu(folder: str | Path, name: str | None = None) -> list[Graph]:
    """Read a TU-format data set into a list of :class:`Graph`, in graph-id order.

    Args:
      folder: the folder holding ``NAME_A.txt`` etc.
      name: the file prefix ``NAME``; by default the unique ``*_A.txt`` in ``folder``.

    Returns:
      ``N`` graphs; graph ``g`` (0-based) holds the nodes whose indicator is ``g + 1``, in
      increasing node-id order (local index = rank within the graph).

    Raises:
      FileNotFoundError: a required file is missing (named).
      TUFormatError: a file is malformed — wrong column count, non-integer, id out of range,
        an edge joining two graphs, conflicting labels for the two directions of an edge, or
        a line count that disagrees with the other files. The message names file and line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"TU data set folder not found: {folder}")
    name = name or _find_prefix(folder)
    a_path = _required(folder, name, "A")
    gi_path = _required(folder, name, "graph_indicator")
    gl_path = _required(folder, name, "graph_labels")

    indicator, ind_lines = _parse_ints(gi_path, 1)
    indicator = indicator[:, 0]
    graph_labels = _parse_ints(gl_path, 1)[0][:, 0]
    n_nodes, n_graphs = indicator.size, graph_labels.size
    if n_graphs == 0:
        raise TUFormatError(gl_path, None, "is empty: no graphs")
    bad = np.flatnonzero((indicator < 1) | (indicator > n_graphs))
    if bad.size:
        i = int(bad[0])
        raise TUFormatError(
            gi_path, ind_lines[i],
            f"graph id {indicator[i]} is outside 1..{n_graphs} ({gl_path.name} has {n_graphs} lines)"
        )

    node_labels = None
    nl_path = folder / f"{name}_node_labels.txt"
    if nl_path.is_file():
        node_labels = _parse_ints(nl_path, 1)[0][:, 0]
        _check_count(nl_path, node_labels.size, n_nodes, f"{gi_path.name} ({n_nodes} nodes)")
    node_attr = None
    na_path = folder / f"{name}_node_attributes.txt"
    if na_path.is_file():
        node_attr = _parse_floats(na_path)
        _check_count(na_path, node_attr.shape[0], n_nodes, f"{gi_path.name} ({n_nodes} nodes)")

    pairs, a_lines = _parse_ints(a_path, 2)
    edge_labels = None
    el_path = folder / f"{name}_edge_labels.txt"
    if el_path.is_file():
        edge_labels = _parse_ints(el_path, 1)[0][:, 0]
        _check_count(el_path, edge_labels.size, pairs.shape[0], f"{a_path.name} ({pairs.shape[0]} edges)")
    bad = np.flatnonzero((pairs < 1).any(axis=1) | (pairs > n_nodes).any(axis=1))
    if bad.size:
        e = int(bad[0])
        raise TUFormatError(a_path, a_lines[e], f"node id out of range 1..{n_nodes}: {pairs[e].tolist()}")
    g_of = indicator[pairs - 1]  # (m, 2) graph id of each endpoint
    bad = np.flatnonzero(g_of[:, 0] != g_of[:, 1])
    if bad.size:
        e = int(bad[0])
        raise TUFormatError(
            a_path, a_lines[e], f"edge {pairs[e].tolist()} joins graph {g_of[e, 0]} and graph {g_of[e, 1]}"
        )

    # local numbering: rank of each node id among its graph's nodes
    order = np.argsort(indicator, kind="stable")  # node positions grouped by graph, id order
    starts = np.searchsorted(indicator[order], np.arange(1, n_graphs + 2))
    local = np.empty(n_nodes, dtype=np.int64)
    for g in range(n_graphs):
        local[order[starts[g] : starts[g + 1]]] = np.arange(starts[g + 1] - starts[g])

    # undirected edges, one per unordered pair, labels checked for consistency
    seen: dict[tuple[int, int], tuple[int, int]] = {}  # (lo, hi) global 0-based -> (label, line)
    for e, (u, v) in enumerate((pairs - 1).tolist()):
        key = (u, v) if u <= v else (v, u)
        lab = int(edge_labels[e]) if edge_labels is not None else -1
        if key in seen:
            if seen[key][0] != lab:
                raise TUFormatError(
                    el_path, a_lines[e],
                    f"edge {[u + 1, v + 1]} has label {lab} here but {seen[key][0]} on line {seen[key][1]}",
                )
        else:
            seen[key] = (lab, a_lines[e])
    by_graph: list[list[tuple[int, int, int]]] = [[] for _ in range(n_graphs)]
    for (u, v), (lab, _) in seen.items():
        by_graph[indicator[u] - 1].append((int(local[u]), int(local[v]), lab))

    graphs = []
    for g in range(n_graphs):
        nodes = order[starts[g] : starts[g + 1]]
        es = sorted((min(i, j), max(i, j), lab) for i, j, lab in by_graph[g])
        edges = np.asarray([(i, j) for i, j, _ in es], dtype=np.int64).reshape(len(es), 2)
        graphs.append(
            Graph(
                node_labels=None if node_labels is None else node_labels[nodes].copy(),
                edges=edges,
                edge_labels=None if edge_labels is None else np.asarray([lab for *_, lab in es], np.int64),
                label=int(graph_labels[g]),
                node_ids=nodes.astype(np.int64) + 1,
                node_attributes=None if node_attr is None else node_attr[nodes].copy(),
                index=g,
            )
        )
    return graphs


_LABEL_LINE = re.compile(r"^\s*(-?\d+)\s+(\S.*?)\s*$")


def read_readme_labels(path: str | Path) -> dict[str, dict[int, str]]:
    """Label names from a TU ``README.txt``: the tables under ``Node labels:`` / ``Edge labels:``.

    Returns ``{"node": {0: "In", 1: "P", …}, "edge": {0: "triple", …}}`` (a section absent from
    the README is an empty dict). A table is the ``<int> <name>`` lines after its header, up to
    the first other non-blank line.
    """
    path = Path(path)
    out: dict[str, dict[int, str]] = {"node": {}, "edge": {}}
    section = None
    for line in path.read_text().splitlines():
        head = line.strip().lower()
        if head in ("node labels:", "edge labels:"):
            section = head.split()[0]
            continue
        if section is None or not line.strip():
            continue
        m = _LABEL_LINE.match(line)
        if m:
            out[section][int(m.group(1))] = m.group(2)
        else:
            section = None
    return out


# ------------------------------------------------------------------------------- CV splits
def stratified_kfold(labels: Sequence[Any] | np.ndarray, k: int = 10,
                     seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` stratified cross-validation folds: ``[(train_idx, test_idx), …]``.

    Each class's indices are shuffled (``numpy.random.default_rng(seed)``) and the classes are
    laid end to end; position ``p`` of that list goes to fold ``p mod k``. So the test folds
    partition ``0..N-1``, every fold holds ``⌊n_c/k⌋`` or ``⌈n_c/k⌉`` members of each class
    ``c`` and ``⌊N/k⌋`` or ``⌈N/k⌉`` examples in all. Indices are returned sorted, int64.
    A class with fewer than ``k`` members is absent from some test folds (allowed).
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"stratified_kfold: labels must be 1-D (N,), got shape {y.shape}")
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
        raise ValueError(f"stratified_kfold: k must be an integer >= 2, got {k!r}")
    if k > y.size:
        raise ValueError(f"stratified_kfold: k={k} folds need at least {k} examples, got {y.size}")
    rng = np.random.default_rng(seed)
    laid = np.concatenate([rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)])
    fold = np.empty(y.size, dtype=np.int64)
    fold[laid] = np.arange(y.size) % k
    all_idx = np.arange(y.size, dtype=np.int64)
    return [(all_idx[fold != f], all_idx[fold == f]) for f in range(k)]
