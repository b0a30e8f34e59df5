"""Concepts read off DeepLIFT scores — seed 000's "types of concepts one can extract".

1. **Important features** of one prediction: the features whose score passes a threshold, or
   the ``k`` best (:func:`top_features`, :func:`top_feature_indices`).
2. **Class-distinguishing features**: scores for class ``a`` minus scores for class ``b``,
   then thresholded as in 1 (:func:`score_difference`, :func:`score_difference_top`).
3. **Essence of a class**: over the correctly predicted members of class ``c``, how often each
   feature is important for class ``c``'s score *and not* for any other class's score of the
   same input (seed 000's note on uniqueness); the features with the highest counts
   (:func:`essence`).

Scores are arrays ``(N, *F)``: ``N`` examples, feature shape ``F`` (``(V,)`` subgraph
patterns, ``(H, W, C)`` pixels …). Features are ranked by their signed score (a large positive
contribution is "important"); pass ``absolute=True`` to rank by magnitude instead. Everything
here is plain numpy on the host; jax arrays are accepted.
"""
from __future__ import annotations

from typing import Any, Hashable, Mapping, NamedTuple, Sequence

import numpy as np

from jaxlift._lazy import renamed_attributes
from jaxlift.errors import InputValueError

Array = Any

__all__ = [
    "top_features",
    "top_feature_indices",
    "score_difference",
    "score_difference_top",
    "essence",
    "Essence",
]

# renamed (issue 27): jaxlift.class_difference is the target o[a] − o[b]; here it is scores
__getattr__ = renamed_attributes(__name__, globals(), {
    "class_difference": "score_difference", "class_difference_top": "score_difference_top"})


def _as_scores(scores: Array, who: str) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim < 2:
        raise InputValueError(f"{who}: scores must be (N, *features) with rank >= 2, got shape {s.shape}")
    if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
        raise InputValueError(f"{who}: scores must be real numbers, got dtype {s.dtype}")
    if np.issubdtype(s.dtype, np.floating) and np.isnan(s).any():
        raise InputValueError(f"{who}: scores contain NaN")
    return s


def top_feature_indices(scores: Array, k: int, *, absolute: bool = False) -> np.ndarray:
    """The ``k`` highest-scoring features of each example, best first.

    ``scores: (N, *F)`` → ``(N, k)`` int64 indices into the flattened features
    (``np.unravel_index(i, F)`` recovers positions). Ranking key: ``s`` (or ``|s|`` with
    ``absolute=True``), descending; ties go to the lower index.
    """
    s = _as_scores(scores, "top_feature_indices")
    flat = s.reshape(s.shape[0], -1)
    _check_k(k, flat.shape[1], "top_feature_indices")
    key = np.abs(flat) if absolute else flat
    # stable argsort of the negated key: descending score, ascending index among ties
    return np.argsort(-key.astype(np.float64), axis=1, kind="stable")[:, :k].astype(np.int64)


def _check_k(k: Any, num_features: int, who: str) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= num_features:
        raise InputValueError(f"{who}: k must be an integer in [1, {num_features}] (the number of features), got {k!r}")


def top_features(
    scores: Array,
    *,
    k: int | None = None,
    threshold: float | None = None,
    absolute: bool = False,
) -> np.ndarray:
    """Boolean mask of the important features of each example.

    ``scores: (N, *F)`` → ``(N, *F)`` bool. Exactly one criterion:

    * ``threshold=τ``: important iff ``s > τ`` (strictly; ``|s| > τ`` with ``absolute=True``);
    * ``k``: the ``k`` features with the highest ``s`` (or ``|s|``) per example, ties to the
      lower flat index — exactly ``k`` per example (see :func:`top_feature_indices`).
    """
    s = _as_scores(scores, "top_features")
    if (k is None) == (threshold is None):
        raise InputValueError("top_features: give exactly one of k= or threshold=")
    if threshold is not None:
        if not np.isfinite(threshold):
            raise InputValueError(f"top_features: threshold must be a finite number, got {threshold!r}")
        return (np.abs(s) if absolute else s) > threshold
    idx = top_feature_indices(s, k, absolute=absolute)
    mask = np.zeros((s.shape[0], int(np.prod(s.shape[1:]))), dtype=bool)
    np.put_along_axis(mask, idx, True, axis=1)
    return mask.reshape(s.shape)


def score_difference(scores_a: Array, scores_b: Array) -> np.ndarray:
    """``S_a − S_b``: per-feature scores for class ``a`` minus those for class ``b``.

    Both ``(N, *F)`` with equal shapes; returns ``(N, *F)``. Positive entries push the
    prediction towards ``a`` rather than ``b``. (Because DeepLIFT is linear in the target,
    this equals the scores of the target ``t_a − t_b`` on the same references.)
    """
    a = _as_scores(scores_a, "score_difference")
    b = _as_scores(scores_b, "score_difference")
    if a.shape != b.shape:
        raise InputValueError(f"score_difference: scores_a {a.shape} and scores_b {b.shape} differ in shape")
    return a - b


def score_difference_top(
    scores_a: Array,
    scores_b: Array,
    *,
    k: int | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """Mask ``(N, *F)`` of the features that most distinguish class ``a`` from ``b``:
    :func:`top_features` of :func:`score_difference` (signed: features for ``a``, not ``b``)."""
    return top_features(score_difference(scores_a, scores_b), k=k, threshold=threshold)


class Essence(NamedTuple):
    """Result of :func:`essence`.

    counts: ``(C, *F)`` int64 — ``counts[c, f]`` = number of correctly predicted members of
      class ``classes[c]`` for which ``f`` is important for that class and for no other class.
    ranked: ``C`` arrays of flat feature indices with ``count > 0``, by descending count (ties
      to the lower index) — the class's essence, most characteristic first.
    support: ``(C,)`` number of correctly predicted members of each class (the denominator if
      you want frequencies: ``counts / support[:, None]``).
    classes: the class labels, in the order of the first axis.
    """

    counts: np.ndarray
    ranked: list[np.ndarray]
    support: np.ndarray
    classes: tuple


def essence(
    scores_by_class: Array | Mapping[Hashable, Array],
    labels: Array,
    predictions: Array,
    *,
    k: int | None = None,
    threshold: float | None = None,
    absolute: bool = False,
) -> Essence:
    """Essence of each class: features important for it and for no other class.

    With ``S[n, c]`` the scores of example ``n`` for class ``c``'s output and
    ``T[n, c] = top_features(S[:, c], k=…, threshold=…)[n]`` its important-feature mask::

        counts[c, f] = Σ_{n : y_n = ŷ_n = c}  T[n, c, f] · Π_{c' ≠ c} (1 − T[n, c', f])

    i.e. seed 000's count over correctly predicted members of the class, increased only when
    the feature is important for the class *and not for any other class at the same time*.

    Args:
      scores_by_class: ``(N, C, *F)`` with classes ``0..C-1``, or a mapping
        ``{class_label: (N, *F)}`` (then ``labels``/``predictions`` use those keys; classes are
        ordered as the mapping's keys).
      labels: ``(N,)`` true classes. predictions: ``(N,)`` predicted classes.
      k, threshold, absolute: the importance criterion, as in :func:`top_features`.

    Returns:
      an :class:`Essence` (``counts (C, *F)``, ``ranked``, ``support (C,)``, ``classes``).

    A single-logit (sigmoid) model such as the PTC one has one score array ``S`` for the
    logit ``z``; class ``+1``'s output is ``z`` and class ``−1``'s is ``−z``, so pass
    ``{1: S, -1: -S}`` (with ``threshold=τ ≥ 0`` no feature can then count for both).
    """
    if isinstance(scores_by_class, Mapping):
        if not scores_by_class:
            raise InputValueError("essence: scores_by_class is an empty mapping")
        classes = tuple(scores_by_class)
        per_class = [_as_scores(scores_by_class[c], f"essence (class {c!r})") for c in classes]
        shapes = {p.shape for p in per_class}
        if len(shapes) != 1:
            raise InputValueError(f"essence: the classes' score arrays differ in shape: {sorted(shapes)}")
        s = np.stack(per_class, axis=1)
    else:
        s = np.asarray(scores_by_class)
        if s.ndim < 3:
            raise InputValueError(f"essence: scores_by_class must be (N, C, *features), got shape {s.shape}")
        classes = tuple(range(s.shape[1]))
    n, c = s.shape[:2]
    feat = s.shape[2:]
    y = _as_labels(labels, n, classes, "labels")
    y_hat = _as_labels(predictions, n, classes, "predictions")

    # T[n, c, f]: importance of each feature for each class's own scores
    flat = s.reshape(n * c, *feat)
    t = top_features(flat, k=k, threshold=threshold, absolute=absolute).reshape(n, c, -1)
    num_important = t.sum(axis=1)  # (N, F): for how many classes f is important
    unique = t & (num_important[:, None, :] == 1)  # important for c and for no c' ≠ c
    correct = y == y_hat
    counts = np.zeros((c, t.shape[2]), dtype=np.int64)
    support = np.zeros(c, dtype=np.int64)
    for ci in range(c):
        members = correct & (y == ci)
        support[ci] = members.sum()
        counts[ci] = unique[members, ci].sum(axis=0)
    ranked = [_rank(counts[ci]) for ci in range(c)]
    return Essence(counts.reshape(c, *feat), ranked, support, classes)


def _rank(count: np.ndarray) -> np.ndarray:
    order = np.argsort(-count, kind="stable")
    return order[count[order] > 0].astype(np.int64)


def _as_labels(values: Array, n: int, classes: Sequence[Hashable], name: str) -> np.ndarray:
    """Class labels ``(N,)`` → positions ``0..C-1`` in ``classes``."""
    v = np.asarray(values)
    if v.shape != (n,):
        raise InputValueError(f"essence: {name} must have shape ({n},), got {v.shape}")
    lookup = {cl: i for i, cl in enumerate(classes)}
    out = np.empty(n, dtype=np.int64)
    for i, val in enumerate(v.tolist()):
        if val not in lookup:
            raise InputValueError(f"essence: {name}[{i}] = {val!r} is not one of the classes {list(classes)}")
        out[i] = lookup[val]
    return out
