"""Tests for jaxlift.concepts on hand-made score arrays with answers stated exactly."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlift import concepts as C


S = np.array(
    [
        [0.5, -2.0, 3.0, 0.5, 1.0],
        [0.0, 0.0, 0.0, 0.0, 0.0],
        [-1.0, 4.0, -5.0, 2.0, 2.0],
    ]
)


def test_top_features_threshold_is_strict():
    m = C.top_features(S, threshold=0.5)
    np.testing.assert_array_equal(
        m,
        [
            [False, False, True, False, True],
            [False] * 5,
            [False, True, False, True, True],
        ],
    )
    m_abs = C.top_features(S, threshold=1.5, absolute=True)
    np.testing.assert_array_equal(m_abs[0], [False, True, True, False, False])
    np.testing.assert_array_equal(m_abs[2], [False, True, True, True, True])


def test_top_features_k_with_ties_to_lower_index():
    np.testing.assert_array_equal(C.top_feature_indices(S, 2), [[2, 4], [0, 1], [1, 3]])
    m = C.top_features(S, k=2)
    np.testing.assert_array_equal(m.sum(axis=1), [2, 2, 2])
    np.testing.assert_array_equal(np.flatnonzero(m[2]), [1, 3])
    # tie 0.5 / 0.5 at features 0 and 3: k=3 takes feature 0
    np.testing.assert_array_equal(C.top_feature_indices(S, 3)[0], [2, 4, 0])
    np.testing.assert_array_equal(C.top_feature_indices(S, 2, absolute=True)[2], [2, 1])


def test_top_features_keeps_feature_shape_and_accepts_jax():
    s = jnp.arange(2 * 2 * 3, dtype=jnp.float32).reshape(2, 2, 3)
    m = C.top_features(s, k=1)
    assert m.shape == (2, 2, 3)
    assert m[0, 1, 2] and m[1, 1, 2] and m.sum() == 2


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((S,), {}, "exactly one"),
        ((S,), dict(k=2, threshold=0.0), "exactly one"),
        ((S,), dict(k=0), r"k must be an integer in \[1, 5\]"),
        ((S,), dict(k=6), r"k must be an integer in \[1, 5\]"),
        ((S,), dict(threshold=float("nan")), "finite"),
        ((np.ones(3),), dict(k=1), "rank >= 2"),
        ((np.array([[np.nan, 1.0]]),), dict(k=1), "NaN"),
    ],
)
def test_top_features_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        C.top_features(*args, **kwargs)


def test_score_difference_and_its_top_features():
    a = np.array([[3.0, 1.0, 0.0, 2.0]])
    b = np.array([[3.0, -1.0, 2.0, 0.5]])
    np.testing.assert_array_equal(C.score_difference(a, b), [[0.0, 2.0, -2.0, 1.5]])
    np.testing.assert_array_equal(C.score_difference_top(a, b, k=1), [[False, True, False, False]])
    np.testing.assert_array_equal(C.score_difference_top(a, b, threshold=1.0), [[False, True, False, True]])
    # feature 0 is the most important for both classes, and not distinguishing at all
    assert C.top_features(a, k=1)[0, 0] and C.top_features(b, k=1)[0, 0]
    with pytest.raises(ValueError, match="differ in shape"):
        C.score_difference(a, b[:, :3])


def _scores_by_class():
    # N = 4 examples, C = 3 classes, F = 4 features; importance = score > 0.5
    s = np.zeros((4, 3, 4))
    s[0, 0] = [1, 1, 0, 0]  # ex 0, class 0: f0, f1 important
    s[0, 1] = [0, 1, 0, 0]  #   class 1 also claims f1 -> only f0 is unique to class 0
    s[1, 0] = [1, 0, 1, 0]  # ex 1: f0, f2 for class 0, nothing elsewhere
    s[2, 1] = [0, 0, 1, 1]  # ex 2 (label 1, predicted 1): f2, f3 for class 1
    s[2, 2] = [0, 0, 0, 1]  #   class 2 claims f3 -> only f2 unique to class 1
    s[3, 2] = [1, 1, 1, 1]  # ex 3: label 2 but predicted 0 -> not counted anywhere
    labels = np.array([0, 0, 1, 2])
    preds = np.array([0, 0, 1, 0])
    return s, labels, preds


def test_essence_counts_only_correct_and_unique():
    s, labels, preds = _scores_by_class()
    e = C.essence(s, labels, preds, threshold=0.5)
    np.testing.assert_array_equal(
        e.counts,
        [
            [2, 0, 1, 0],  # f0 twice (ex 0, 1); f1 shared with class 1 in ex 0; f2 once (ex 1)
            [0, 0, 1, 0],  # f2 from ex 2; f3 shared with class 2
            [0, 0, 0, 0],  # its only member was mispredicted
        ],
    )
    np.testing.assert_array_equal(e.support, [2, 1, 0])
    np.testing.assert_array_equal(e.ranked[0], [0, 2])
    np.testing.assert_array_equal(e.ranked[1], [2])
    assert e.ranked[2].size == 0
    assert e.classes == (0, 1, 2)


def test_essence_with_k_and_mapping_form():
    s, labels, preds = _scores_by_class()
    names = ("benign", "toxic", "other")
    mapping = {name: s[:, i] for i, name in enumerate(names)}
    named = lambda v: np.array([names[i] for i in v])  # noqa: E731
    e_map = C.essence(mapping, named(labels), named(preds), threshold=0.5)
    e_arr = C.essence(s, labels, preds, threshold=0.5)
    np.testing.assert_array_equal(e_map.counts, e_arr.counts)
    assert e_map.classes == names
    # k = 1: ties to the lower index. ex 0: class 0 -> f0, class 1 -> f1, class 2 (all 0) -> f0,
    # so f0 is shared; ex 1: class 0 -> f0, classes 1, 2 -> f0 as well; ex 2: class 1 -> f2,
    # class 0 -> f0, class 2 -> f3 -> f2 unique.
    e_k = C.essence(s, labels, preds, k=1)
    np.testing.assert_array_equal(e_k.counts, [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])


def test_essence_keeps_feature_shape():
    s = np.zeros((2, 2, 2, 2))
    s[0, 0, 1, 1] = 1.0
    s[1, 1, 0, 0] = 1.0
    e = C.essence(s, [0, 1], [0, 1], threshold=0.5)
    assert e.counts.shape == (2, 2, 2)
    assert e.counts[0, 1, 1] == 1 and e.counts[1, 0, 0] == 1 and e.counts.sum() == 2
    np.testing.assert_array_equal(e.ranked[0], [3])


def test_essence_bad_input():
    s, labels, preds = _scores_by_class()
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        C.essence(s, labels[:3], preds, k=1)
    with pytest.raises(ValueError, match=r"predictions\[1\] = 7 is not one of the classes"):
        C.essence(s, labels, np.array([0, 7, 1, 0]), k=1)
    with pytest.raises(ValueError, match="exactly one"):
        C.essence(s, labels, preds)
    with pytest.raises(ValueError, match=r"\(N, C, \*features\)"):
        C.essence(s[:, 0], labels, preds, k=1)
    with pytest.raises(ValueError, match="differ in shape"):
        C.essence({0: s[:, 0], 1: s[:, 1, :3]}, labels % 2, preds % 2, k=1)


def test_essence_of_a_single_logit_model():
    # one logit score array S; class +1's output is z, class -1's is -z
    s = np.array([[2.0, -1.0, 0.0], [-3.0, 1.0, 0.5], [1.0, 1.0, -2.0]])
    e = C.essence({1: s, -1: -s}, labels=[1, -1, -1], predictions=[1, -1, 1], threshold=0.5)
    # ex 0 (toxic, correct): f0 > 0.5; ex 1 (non-toxic, correct): -S > 0.5 at f0 only;
    # ex 2 mispredicted
    np.testing.assert_array_equal(e.counts, [[1, 0, 0], [1, 0, 0]])
    np.testing.assert_array_equal(e.support, [1, 1])
    assert e.classes == (1, -1)
