"""Molecules as histograms of labelled subgraph patterns, and pattern scores back on atoms.

A **pattern** is a small labelled subgraph, written as its canonical label sequence:

=============  ======  ===============================================  =====================
kind           bonds   labels                                           canonical form
=============  ======  ===============================================  =====================
``atom``       0       ``(a,)``                                         —
``bond``       1       ``(a, b, c)``: atom, bond, atom                  min over reversal
``path2``      2       ``(a, b1, c, b2, d)``                            min over reversal
``path3``      3       ``(a, b1, c, b2, d, b3, e)``, 4 distinct atoms   min over reversal
``triangle``   3       ``(a0, b01, a1, b12, a2, b20)``: a 3-cycle       min over 3 rotations
                                                                        × 2 directions
=============  ======  ===============================================  =====================

("min" is lexicographic on the integer labels.) An **occurrence** is the tuple of atom
indices, listed along the canonical orientation; every simple path and every triangle is
counted once (a path is the same occurrence read from either end). Paths are simple: their
atoms are distinct, so a triangle also contains three ``path2`` occurrences.

``max_size`` (number of bonds) picks the patterns: 0 atoms, 1 + bonds, 2 + two-bond paths
(default), 3 + three-bond paths and (``triangles=True``) triangles.

Attribution: with ``S_p`` the score of vocabulary pattern ``p`` (e.g. DeepLIFT on the histogram
input), ``occ_p(G)`` its occurrences in graph ``G`` and ``c_p = |occ_p(G)|``, atom ``a`` gets

    s_a = Σ_{p : c_p > 0}  Σ_{o ∈ occ_p(G), a ∈ o}  S_p / (c_p · |o|)

— each pattern's score is split equally over its occurrences and each occurrence's share
equally over its atoms, so ``Σ_a s_a = Σ_{p : c_p > 0} S_p`` exactly (:func:`atom_scores`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from .tu import Graph

__all__ = [
    "Pattern",
    "enumerate_patterns",
    "PatternVocabulary",
    "atom_scores",
    "BOND_SYMBOLS",
]

KINDS = ("atom", "bond", "path2", "path3", "triangle")
_SIZE = {"atom": 0, "bond": 1, "path2": 2, "path3": 3, "triangle": 3}
#: display symbols for bond names found in TU READMEs
BOND_SYMBOLS = {"single": "-", "double": "=", "triple": "#", "aromatic": ":"}

Occurrence = tuple[int, ...]


@dataclass(frozen=True, order=False)
class Pattern:
    """A labelled subgraph pattern (see the module docstring for ``kind``/``labels``)."""

    kind: str
    labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.kind not in _SIZE:
            raise ValueError(f"Pattern: unknown kind {self.kind!r}; known: {KINDS}")
        expected = {"atom": 1, "bond": 3, "path2": 5, "path3": 7, "triangle": 6}[self.kind]
        if len(self.labels) != expected:
            raise ValueError(f"Pattern: a {self.kind} has {expected} labels, got {self.labels}")

    @property
    def size(self) -> int:
        """Number of bonds."""
        return _SIZE[self.kind]

    @property
    def atoms(self) -> tuple[int, ...]:
        """Atom labels along the pattern (every other label, starting with the first)."""
        return self.labels[0::2]

    @property
    def bonds(self) -> tuple[int, ...]:
        """Bond labels along the pattern."""
        return self.labels[1::2]

    def sort_key(self) -> tuple:
        """Vocabulary order: (sorted atom-label multiset, bonds, kind, labels); see
        :class:`PatternVocabulary`."""
        return (tuple(sorted(self.atoms)), self.size, KINDS.index(self.kind), self.labels)

    def describe(self, atom_names: Mapping[int, str] | None = None, bond_names: Mapping[int, str] | None = None) -> str:
        """Readable form, e.g. ``C-C=O`` or ``triangle(C-C-N-)``; bond names found in
        :data:`BOND_SYMBOLS` print as symbols, others as ``[name]``."""

        def atom(x: int) -> str:
            return str(atom_names.get(x, x)) if atom_names else str(x)

        def bond(x: int) -> str:
            if bond_names is None:
                return f"[{x}]"
            name = bond_names.get(x, str(x))
            return BOND_SYMBOLS.get(name, f"[{name}]")

        parts = [atom(x) if i % 2 == 0 else bond(x) for i, x in enumerate(self.labels)]
        text = "".join(parts)
        return f"triangle({text})" if self.kind == "triangle" else text


# ------------------------------------------------------------------------ enumeration
def _canonical_path(labels: tuple[int, ...], atoms: Occurrence) -> tuple[tuple[int, ...], Occurrence]:
    rev = labels[::-1]
    return (rev, atoms[::-1]) if rev < labels else (labels, atoms)


def _canonical_cycle(atom_l: Sequence[int], bond_l: Sequence[int],
                     atoms: Occurrence) -> tuple[tuple[int, ...], Occurrence]:
    """Cycle ``atoms[0] -bond_l[0]- atoms[1] -bond_l[1]- … -bond_l[-1]- atoms[0]``."""
    n = len(atoms)
    best = None
    for direction in (1, -1):
        for r in range(n):
            idx = [(r + direction * t) % n for t in range(n)]
            # bond between idx[t] and idx[t+1]: forward uses bond_l[idx[t]], backward bond_l[idx[t+1]]
            bs = [bond_l[idx[t]] if direction == 1 else bond_l[idx[(t + 1) % n]] for t in range(n)]
            labels = tuple(x for t in range(n) for x in (atom_l[idx[t]], bs[t]))
            occ = tuple(atoms[i] for i in idx)
            if best is None or labels < best[0]:
                best = (labels, occ)
    return best  # type: ignore[return-value]


def _atom_labels(graph: Graph) -> list[int]:
    if graph.node_labels is None:
        return [-1] * graph.num_nodes
    return graph.node_labels.tolist()


def enumerate_patterns(graph: Graph, max_size: int = 2, *, triangles: bool = True) -> dict[Pattern, list[Occurrence]]:
    """All pattern occurrences in ``graph`` up to ``max_size`` bonds.

    Returns ``{pattern: [occurrence, …]}``, each occurrence a tuple of atom indices (see the
    module docstring); occurrences are listed in discovery order (deterministic). Unlabelled
    atoms/bonds (no label file) have label ``-1``. Self-loops are ignored.
    """
    _check_max_size(max_size)
    lab = _atom_labels(graph)
    nbrs = [[(j, b) for j, b in lst if j != i] for i, lst in enumerate(graph.neighbours())]
    out: dict[Pattern, list[Occurrence]] = {}

    def add(kind: str, labels: tuple[int, ...], occ: Occurrence) -> None:
        out.setdefault(Pattern(kind, labels), []).append(occ)

    for i, a in enumerate(lab):
        add("atom", (a,), (i,))
    if max_size >= 1:
        for i in range(len(lab)):
            for j, b in nbrs[i]:
                if i < j:
                    add("bond", *_canonical_path((lab[i], b, lab[j]), (i, j)))
    if max_size >= 2:
        for j in range(len(lab)):  # centre atom
            for x in range(len(nbrs[j])):
                for y in range(x + 1, len(nbrs[j])):
                    (i, b1), (k, b2) = nbrs[j][x], nbrs[j][y]
                    add("path2", *_canonical_path((lab[i], b1, lab[j], b2, lab[k]), (i, j, k)))
    if max_size >= 3:
        for j in range(len(lab)):  # middle bond j-k, each undirected bond once (j < k)
            for k, b2 in nbrs[j]:
                if k <= j:
                    continue
                for i, b1 in nbrs[j]:
                    if i == k:
                        continue
                    for m, b3 in nbrs[k]:
                        if m == j or m == i:
                            continue
                        labels = (lab[i], b1, lab[j], b2, lab[k], b3, lab[m])
                        add("path3", *_canonical_path(labels, (i, j, k, m)))
        if triangles:
            bond_of = {(i, j): b for i in range(len(lab)) for j, b in nbrs[i]}
            for i in range(len(lab)):
                for j, bij in nbrs[i]:
                    if j <= i:
                        continue
                    for k, bjk in nbrs[j]:
                        if k <= j or (i, k) not in bond_of:
                            continue
                        labels, occ = _canonical_cycle((lab[i], lab[j], lab[k]), (bij, bjk, bond_of[(k, i)]), (i, j, k))
                        add("triangle", labels, occ)
    return out


def _check_max_size(max_size: int) -> None:
    if not isinstance(max_size, (int, np.integer)) or isinstance(max_size, bool) or not 0 <= max_size <= 3:
        raise ValueError(f"max_size must be an integer in 0..3 (number of bonds), got {max_size!r}")


# ---------------------------------------------------------------------------- vocabulary
class PatternVocabulary:
    """A fixed, ordered list of patterns: the feature axis of the histogram model.

    ``fit`` keeps the patterns seen at least ``min_count`` times in the training graphs —
    counting occurrences (``by="occurrences"``, default) or graphs containing the pattern
    (``by="graphs"``).

    **Order** (so that patterns sharing atoms sit side by side, which a 1-D convolution over
    the histogram can exploit): patterns are sorted by

    1. the sorted multiset of their atom labels, compared lexicographically as tuples. So the
       patterns whose sorted atoms start the same way form one contiguous block: all patterns
       whose smallest atom label is ``O`` (2 in PTC_MR) sit together, inside that block those
       with a second ``O`` come first, and so on; a pattern always comes after the patterns
       built from a prefix of its sorted atoms (PTC_MR: ``P``, ``P=O``, ``P-O``, ``O=P-O``,
       ``O-P-O``, ``O=P-N`` …);
    2. then the number of bonds; 3. then the kind (path before triangle); 4. then the full
       canonical label tuple (so bond-label variants of the same atoms are adjacent).

    The order depends only on the set of patterns kept, not on the order of the graphs.
    """

    def __init__(self, max_size: int = 2, min_count: int = 1, *, triangles: bool = True, by: str = "occurrences"):
        _check_max_size(max_size)
        if not isinstance(min_count, (int, np.integer)) or isinstance(min_count, bool) or min_count < 1:
            raise ValueError(f"PatternVocabulary: min_count must be a positive integer, got {min_count!r}")
        if by not in ("occurrences", "graphs"):
            raise ValueError(f"PatternVocabulary: by must be 'occurrences' or 'graphs', got {by!r}")
        self.max_size = int(max_size)
        self.min_count = int(min_count)
        self.triangles = bool(triangles)
        self.by = by
        self.patterns: tuple[Pattern, ...] | None = None
        self._index: dict[Pattern, int] = {}

    # -- fitting
    def fit(self, graphs: Iterable[Graph]) -> "PatternVocabulary":
        """Choose and order the vocabulary from training ``graphs``; returns ``self``."""
        totals: Counter[Pattern] = Counter()
        count = 0
        for g in graphs:
            count += 1
            occ = self._enumerate(g)
            totals.update({p: (len(o) if self.by == "occurrences" else 1) for p, o in occ.items()})
        if count == 0:
            raise ValueError("PatternVocabulary.fit: no graphs given")
        kept = [p for p, c in totals.items() if c >= self.min_count]
        if not kept:
            raise ValueError(
                f"PatternVocabulary.fit: no pattern is seen >= min_count={self.min_count} times in {count} graphs"
            )
        self.patterns = tuple(sorted(kept, key=Pattern.sort_key))
        self._index = {p: i for i, p in enumerate(self.patterns)}
        return self

    def _enumerate(self, graph: Graph) -> dict[Pattern, list[Occurrence]]:
        return enumerate_patterns(graph, self.max_size, triangles=self.triangles)

    def _require_fitted(self) -> tuple[Pattern, ...]:
        if self.patterns is None:
            raise ValueError("PatternVocabulary: call fit(train_graphs) first")
        return self.patterns

    def __len__(self) -> int:
        return len(self._require_fitted())

    def __contains__(self, pattern: object) -> bool:
        return pattern in self._index

    def index(self, pattern: Pattern) -> int:
        """Position of ``pattern`` on the feature axis (``KeyError`` if not in the vocabulary)."""
        self._require_fitted()
        return self._index[pattern]

    def names(self, atom_names: Mapping[int, str] | None = None,
              bond_names: Mapping[int, str] | None = None) -> list[str]:
        """``V`` readable pattern names (:meth:`Pattern.describe`)."""
        return [p.describe(atom_names, bond_names) for p in self._require_fitted()]

    # -- features
    def transform(self, graphs: Iterable[Graph]) -> np.ndarray:
        """Histogram ``(N, V)`` float32: ``X[n, v]`` = occurrences of pattern ``v`` in graph ``n``.

        Patterns outside the vocabulary are dropped. (The PTC model takes ``log1p(X)``.)
        """
        pats = self._require_fitted()
        rows = []
        for g in graphs:
            row = np.zeros(len(pats), dtype=np.float32)
            for p, occ in self._enumerate(g).items():
                i = self._index.get(p)
                if i is not None:
                    row[i] = len(occ)
            rows.append(row)
        return np.stack(rows) if rows else np.zeros((0, len(pats)), np.float32)

    def fit_transform(self, graphs: Sequence[Graph]) -> np.ndarray:
        """``fit(graphs)`` then ``transform(graphs)``."""
        return self.fit(graphs).transform(graphs)

    def occurrences(self, graph: Graph) -> list[list[Occurrence]]:
        """For each of the ``V`` vocabulary patterns, the atom-index tuples of its occurrences
        in ``graph`` (an empty list where it does not occur); ``len(out[v]) == transform([graph])[0, v]``."""
        pats = self._require_fitted()
        occ = self._enumerate(graph)
        return [list(occ.get(p, [])) for p in pats]

    def atom_scores(self, graph: Graph, pattern_scores: np.ndarray) -> np.ndarray:
        """Per-atom scores ``(n,)`` from pattern scores ``(V,)`` — see :func:`atom_scores`."""
        scores = np.asarray(pattern_scores)
        if scores.shape != (len(self),):
            raise ValueError(
                f"atom_scores: pattern_scores must have shape ({len(self)},) — one per vocabulary pattern — "
                f"got {scores.shape}"
            )
        return atom_scores(self.occurrences(graph), scores, graph.num_nodes)


def atom_scores(occurrences: Sequence[Sequence[Occurrence]], pattern_scores: np.ndarray, num_atoms: int) -> np.ndarray:
    """Distribute pattern scores over atoms.

    For patterns ``p = 0..V-1`` with occurrences ``occ_p`` (``c_p = len(occ_p)``) and scores
    ``S_p``, atom ``a`` of the ``num_atoms`` atoms gets::

        s_a = Σ_{p : c_p > 0}  Σ_{o ∈ occ_p, a ∈ o}  S_p / (c_p · |o|)

    Args:
      occurrences: ``V`` lists of atom-index tuples (:meth:`PatternVocabulary.occurrences`).
      pattern_scores: ``(V,)``.
      num_atoms: ``n``.

    Returns:
      ``(n,)`` float64 with ``Σ_a s_a = Σ_{p : c_p > 0} S_p`` (up to rounding); patterns absent
      from the graph contribute nothing.
    """
    s = np.asarray(pattern_scores, dtype=np.float64)
    if s.ndim != 1 or s.shape[0] != len(occurrences):
        raise ValueError(
            f"atom_scores: pattern_scores must have shape ({len(occurrences)},), got {np.shape(pattern_scores)}"
        )
    out = np.zeros(num_atoms, dtype=np.float64)
    for p, occ in enumerate(occurrences):
        if not occ:
            continue
        per_occurrence = s[p] / len(occ)
        for o in occ:
            if not o:
                raise ValueError(f"atom_scores: pattern {p} has an empty occurrence")
            if min(o) < 0 or max(o) >= num_atoms:
                raise ValueError(f"atom_scores: occurrence {tuple(o)} of pattern {p} is outside 0..{num_atoms - 1}")
            share = per_occurrence / len(o)
            for a in o:
                out[a] += share
    return out
