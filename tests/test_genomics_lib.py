"""Genomics library pieces (issue 18): per-pair completeness gaps of the unprojected
contributions, hypothetical and projected scores in one call, a control-track input explained
for the sequence only, and N bases in the dinucleotide shuffle."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift import references as R

L, A, K, N = 12, 4, 3, 2


def conv_model(p, x):                    # (B, L, 4) → (B, 2)
    h = jax.lax.conv_general_dilated(x, p["k"], (1,), "VALID",
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    h = jax.nn.relu(h + p["c"]).reshape(x.shape[0], -1)
    return h @ p["w"]


def control_model(p, xs):                # {"seq": (B, L, 4), "control": (B, L)} → (B, 2)
    h = jax.lax.conv_general_dilated(xs["seq"], p["k"], (1,), "VALID",
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    bias = xs["control"][:, 1:-1, None] * p["v"]            # the control track shifts each unit
    h = jax.nn.relu(h + p["c"] + bias).reshape(h.shape[0], -1)
    return h @ p["w"]


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {"k": jnp.asarray(rng.normal(size=(3, A, 4))), "c": jnp.asarray(rng.normal(size=4)),
            "v": jnp.asarray(rng.normal(size=4)),
            "w": jnp.asarray(rng.normal(size=((L - 2) * 4, 2)))}


def _data(seed=1, unknown="symbol"):
    rng = np.random.default_rng(seed)
    x = np.eye(A)[rng.integers(0, A, size=(N, L))]
    x[0, 4] = 0                                              # an N base
    refs = np.stack([R.dinucleotide_shuffle(s, seed + i, num=K, unknown=unknown) for i, s in enumerate(x)])
    return jnp.asarray(x), jnp.asarray(refs)


def test_gaps_are_sum_of_unprojected_contributions_minus_delta(x64):
    p, (x, refs) = _params(), _data()
    t = lambda v: conv_model(p, v)[:, 1]                     # noqa: E731
    # gradient multipliers do not sum to Δt here, so the gaps are far from zero
    hyp, gaps = jaxlift.hypothetical_contributions(conv_model, p, x, refs, target=1,
                                                   mode="gradient", return_gaps=True)
    grad = jax.grad(lambda v: t(v).sum())(x)                 # (N, L, A)
    c = (x[:, None] - refs) * grad[:, None]                  # unprojected, per pair
    dt = t(x)[:, None] - t(refs.reshape(N * K, L, A)).reshape(N, K)
    want = np.asarray(c.sum((2, 3)) - dt)
    assert gaps.shape == (N, K) and np.abs(want).max() > 1e-2
    np.testing.assert_allclose(gaps, want, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hyp, jaxlift.hypothetical_contributions(
        conv_model, p, x, refs, target=1, mode="gradient"), rtol=0, atol=0)
    # in DeepLIFT each pair sums to its Δt; shared refs and target="all" keep a T axis
    _, g = jaxlift.hypothetical_contributions(conv_model, p, x, refs, target=1,
                                              return_gaps=True)
    c, d = jaxlift.attribute(conv_model, p, x, refs, target=1, average_refs=False,
                             return_delta=True)
    np.testing.assert_allclose(g, c.sum((2, 3)) - d, rtol=0, atol=1e-12)
    assert np.abs(g).max() < 1e-10
    _, g_all = jaxlift.hypothetical_contributions(conv_model, p, x, refs[0], target="all",
                                                  return_gaps=True)
    assert g_all.shape == (N, K, 2) and np.abs(g_all).max() < 1e-10


@pytest.mark.parametrize("per_position", [False, True])
def test_genomics_scores_agree_with_separate_calls(x64, per_position):
    p, (x, refs) = _params(), _data()
    out = jaxlift.genomics_scores(conv_model, p, x, refs, target=0, per_position=per_position)
    hyp = jaxlift.hypothetical_contributions(conv_model, p, x, refs, target=0)
    c = jaxlift.attribute(conv_model, p, x, refs, target=0)  # averaged over refs, (N, L, A)
    np.testing.assert_allclose(out.hypothetical, hyp, rtol=0, atol=1e-14)
    want = np.array(c.sum(-1) if per_position else c.sum(-1, keepdims=True) * x)
    assert out.projected.shape == want.shape
    # the N base projects to zero; attribute gives it −Σ r·m (these shuffles move N away)
    assert np.all(np.asarray(out.projected)[0, 4] == 0) and np.abs(c[0, 4].sum()) > 1e-3
    want[0, 4] = 0
    np.testing.assert_allclose(out.projected, want, rtol=1e-10, atol=1e-12)
    assert out.gaps.shape == (N, K) and np.abs(out.gaps).max() < 1e-10


def test_control_track_explained_for_the_sequence_only(x64):
    p, (x, refs) = _params(), _data(unknown="fixed")
    c = jnp.asarray(np.random.default_rng(5).normal(size=(N, L)))
    xs = {"seq": x, "control": c}
    rs = {"seq": refs, "control": jnp.broadcast_to(c[:, None], (N, K, L))}  # r = x: no Δ
    scores, delta = jaxlift.attribute(control_model, p, xs, rs, target=1, average_refs=False,
                                      return_delta=True)
    assert np.all(np.asarray(scores["control"]) == 0)
    np.testing.assert_allclose(scores["seq"].sum((2, 3)), delta, rtol=1e-10, atol=1e-12)
    t = lambda s: control_model(p, {"seq": s, "control": c})[:, 1]  # noqa: E731
    np.testing.assert_allclose(delta, t(x)[:, None] - jnp.stack(
        [t(refs[:, k]) for k in range(K)], 1), rtol=1e-10)
    out = jaxlift.genomics_scores(control_model, p, xs, rs, target=1, sequence_key="seq",
                                  per_position=True)
    assert out.hypothetical.shape == (N, L, A) and out.gaps.shape == (N, K)
    np.testing.assert_allclose(out.projected.sum(-1), delta.mean(1), rtol=1e-10, atol=1e-12)
    assert np.abs(out.gaps).max() < 1e-10
    with pytest.raises(ValueError, match="sequence_key 'seq' needs x and refs to be dicts"):
        jaxlift.genomics_scores(control_model, p, x, refs, target=1, sequence_key="seq")


# ------------------------------------------------------------------- N in the shuffles
def _symbols(oh):
    return np.where(oh.sum(-1) == 1, oh.argmax(-1), A)


def _known_pairs(oh):
    """Counts of adjacent pairs of known bases only, (A, A)."""
    return R.dinucleotide_counts(oh)[:A, :A]


@pytest.mark.parametrize("seq", ["ACGNNTTGACNAGGTCANT", "NNACGTAGCAN", "ACGTTGCA", "NNNN",
                                 "ANA", "NACCAGTTN"])
def test_shuffle_keeps_n_in_place(seq):
    oh = np.array([[1.0 if ch == a else 0.0 for a in "ACGT"] for ch in seq], np.float32)
    out = R.dinucleotide_shuffle(oh, 7, num=5, unknown="fixed")
    assert out.shape == (5, len(seq), A) and out.dtype == oh.dtype
    is_n = oh.sum(-1) == 0
    for s in out:
        np.testing.assert_array_equal(s.sum(-1) == 0, is_n)   # N stays N, nothing else is
        np.testing.assert_array_equal(_known_pairs(s), _known_pairs(oh))
        np.testing.assert_array_equal(s.sum(0), oh.sum(0))
    # the default treats N as a fifth symbol: N may move, pairs with N are kept too
    moved = R.dinucleotide_shuffle(oh, 7, num=5)
    for s in moved:
        np.testing.assert_array_equal(R.dinucleotide_counts(s), R.dinucleotide_counts(oh))


def test_fixed_n_shuffles_each_run_and_is_reproducible():
    rng = np.random.default_rng(0)
    sym = rng.integers(0, A, 40)
    sym[[10, 11, 25]] = A
    oh = (sym[:, None] == np.arange(A)).astype(np.float64)
    a = R.dinucleotide_shuffle(oh, 3, num=20, unknown="fixed")
    b = R.dinucleotide_shuffle(oh, 3, num=20, unknown="fixed")
    np.testing.assert_array_equal(a, b)
    runs = [(0, 10), (12, 25), (26, 40)]
    for s in a:
        for lo, hi in runs:                                    # each run keeps its own pairs
            np.testing.assert_array_equal(R.dinucleotide_counts(s[lo:hi]),
                                          R.dinucleotide_counts(oh[lo:hi]))
    assert len({_symbols(s).tobytes() for s in a}) > 1        # and it does shuffle
    refs = R.dinucleotide_ref_fn(4, unknown="fixed")(oh[None], jax.random.PRNGKey(0))
    assert refs.shape == (1, 4, 40, A)
    assert np.all(refs[0].sum(-1)[:, [10, 11, 25]] == 0)
    with pytest.raises(ValueError, match="unknown must be 'symbol' or 'fixed'"):
        R.dinucleotide_shuffle(oh, 0, unknown="drop")


def test_hypothetical_scores_with_n_and_fixed_shuffles(x64):
    p, (x, _) = _params(), _data()
    refs = R.dinucleotide_ref_fn(K, unknown="fixed")(x, 0)
    out = jaxlift.genomics_scores(conv_model, p, x, refs, target=0)
    assert np.all(np.asarray(refs)[0, :, 4] == 0)            # reference N where x has N
    # an N base that stays N has Δx = 0 there: its hypothetical scores are the multipliers
    m = jaxlift.multipliers(conv_model, p, x, refs, target=0)
    np.testing.assert_allclose(out.hypothetical[0, 4], m[0, 4], rtol=1e-12, atol=1e-14)
    assert np.all(np.isfinite(np.asarray(out.hypothetical)))
    assert np.abs(out.gaps).max() < 1e-10
    # with N kept in the references the projected scores sum to the mean Δt
    _, d = jaxlift.attribute(conv_model, p, x, refs, target=0, return_delta=True)
    np.testing.assert_allclose(out.projected.sum((1, 2)), d, rtol=1e-10, atol=1e-12)
