"""Tests for jaxlift.references: every reference choice, its shapes, and its invariants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxlift import references as R


# ------------------------------------------------------------------------------- zeros / blur
def test_zeros_like_shape_dtype_and_value():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    z = R.zeros_like(x)
    assert z.shape == x.shape and z.dtype == jnp.float32
    assert not np.any(np.asarray(z))


def test_blur_matrix_rows_sum_to_one_and_reflect_at_edges():
    b = R.blur_matrix(5, sigma=1.0)
    np.testing.assert_allclose(b.sum(axis=1), 1.0, atol=1e-12)
    w = R.gaussian_kernel(1.0)  # radius 4
    # w[4] is offset 0. Row 0 under edge-repeating reflection: offsets 0 and -1 land on
    # sample 0, offsets +1 and -2 on sample 1.
    assert b[0, 0] == pytest.approx(w[4] + w[3])
    assert b[0, 1] == pytest.approx(w[5] + w[2])


@pytest.mark.parametrize("sigma", [0.6, 2.0, 25.0])
def test_blurred_matches_scipy_reflect(sigma):
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).random((2, 11, 7, 3)).astype(np.float32)
    y = np.asarray(R.blurred(x, sigma))
    expected = scipy_ndimage.gaussian_filter(x.astype(np.float64), sigma=(0, sigma, sigma, 0), mode="reflect")
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_blurred_per_axis_sigma_and_negative_axes():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(1).random((1, 9, 12, 1)).astype(np.float32)
    y = np.asarray(R.blurred(x, (1.0, 3.0), spatial_axes=(-3, -2)))
    expected = scipy_ndimage.gaussian_filter(x.astype(np.float64), sigma=(0, 1.0, 3.0, 0), mode="reflect")
    np.testing.assert_allclose(y, expected, atol=1e-5)


def test_blurred_default_is_heavy_and_keeps_constants():
    x = np.full((1, 32, 32, 1), 0.25, np.float32)
    np.testing.assert_allclose(np.asarray(R.blurred(x)), 0.25, atol=1e-6)
    # a checkerboard (all high-frequency) nearly vanishes to its mean under the default blur
    checker = (np.indices((32, 32)).sum(0) % 2).astype(np.float32)[None, :, :, None]
    y = np.asarray(R.blurred(checker))
    assert np.abs(y - 0.5).max() < 0.01
    assert y.dtype == np.float32


def test_blurred_integer_input_becomes_float():
    x = np.ones((1, 4, 4, 1), np.uint8)
    assert jnp.issubdtype(R.blurred(x, 1.0).dtype, jnp.floating)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sigma=0.0), "sigma"),
        (dict(sigma=-1.0), "sigma"),
        (dict(sigma=(1.0,)), "2 spatial axes"),
        (dict(sigma=1.0, spatial_axes=(1, 7)), "out of range"),
        (dict(sigma=1.0, spatial_axes=(1, 1)), "repeated"),
    ],
)
def test_blurred_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        R.blurred(np.zeros((1, 4, 4, 1)), **kwargs)


# ---------------------------------------------------------------------------------- shuffled
def test_shuffled_is_a_permutation_of_each_input():
    x = np.random.default_rng(2).random((3, 4, 5)).astype(np.float32)
    out = np.asarray(R.shuffled(x, jax.random.key(0), num=6))
    assert out.shape == (3, 6, 4, 5)
    for n in range(3):
        for k in range(6):
            np.testing.assert_array_equal(np.sort(out[n, k].ravel()), np.sort(x[n].ravel()))
    # different references are different permutations (20! makes a collision impossible in practice)
    assert len({out[0, k].tobytes() for k in range(6)}) == 6
    # deterministic in the key, different across keys
    np.testing.assert_array_equal(out, np.asarray(R.shuffled(x, jax.random.key(0), num=6)))
    assert not np.array_equal(out, np.asarray(R.shuffled(x, jax.random.key(1), num=6)))


def test_shuffled_along_axis_keeps_rows_one_hot():
    seq = np.eye(4, dtype=np.float32)[np.random.default_rng(3).integers(0, 4, (2, 30))]
    out = np.asarray(R.shuffled(seq, jax.random.PRNGKey(5), num=4, axis=1))  # raw uint32 key
    assert out.shape == (2, 4, 30, 4)
    np.testing.assert_array_equal(out.sum(-1), 1.0)
    np.testing.assert_array_equal(out.sum(2), np.repeat(seq.sum(1)[:, None], 4, axis=1))


def test_shuffled_bad_input():
    with pytest.raises(ValueError, match="rank >= 2"):
        R.shuffled(np.zeros(5), jax.random.key(0))
    with pytest.raises(ValueError, match="num"):
        R.shuffled(np.zeros((2, 5)), jax.random.key(0), num=0)
    with pytest.raises(ValueError, match="batch axis"):
        R.shuffled(np.zeros((2, 5)), jax.random.key(0), axis=0)


# -------------------------------------------------------------------- dinucleotide shuffle
def _onehot(seq: str, alphabet: str = "ACGT") -> np.ndarray:
    return np.array([[1.0 if c == a else 0.0 for a in alphabet] for c in seq], np.float32)


def _decode(oh: np.ndarray, alphabet: str = "ACGT") -> str:
    return "".join(alphabet[r.argmax()] if r.sum() else "N" for r in oh)


@settings(max_examples=60, deadline=None)
@given(
    seq=st.text(alphabet="ACGTN", min_size=1, max_size=60),
    seed=st.integers(0, 2**32 - 1),
    num=st.integers(1, 4),
)
def test_dinucleotide_shuffle_preserves_counts_and_one_hot(seq, seed, num):
    oh = _onehot(seq)
    out = R.dinucleotide_shuffle(oh, seed, num=num)
    assert out.shape == (num, len(seq), 4) and out.dtype == oh.dtype
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert np.all(out.sum(-1) <= 1)  # one-hot rows, or all-zero rows for N
    d0 = R.dinucleotide_counts(oh)
    for s in out:
        np.testing.assert_array_equal(R.dinucleotide_counts(s), d0)
        np.testing.assert_array_equal(s.sum(0), oh.sum(0))  # mononucleotides too
        assert _decode(s)[0] == seq[0] and _decode(s)[-1] == seq[-1]


def test_dinucleotide_counts_hand_made():
    d = R.dinucleotide_counts(_onehot("AACGA"))
    expected = np.zeros((5, 5), np.int64)
    expected[0, 0] = expected[0, 1] = expected[1, 2] = expected[2, 0] = 1
    np.testing.assert_array_equal(d, expected)


def test_dinucleotide_shuffle_is_uniform_over_all_valid_sequences():
    seq = "ACAGACTAGC"
    target = R.dinucleotide_counts(_onehot(seq))
    # brute force: every sequence of the same length with the same first letter and counts
    tails = np.stack(np.meshgrid(*[np.arange(4)] * (len(seq) - 1), indexing="ij"), -1).reshape(-1, len(seq) - 1)
    syms = np.concatenate([np.full((len(tails), 1), "ACGT".index(seq[0])), tails], axis=1)
    counts = R.dinucleotide_counts(np.eye(4, dtype=np.int8)[syms])
    keep = np.all(counts == target, axis=(1, 2))
    valid = {"".join("ACGT"[i] for i in row) for row in syms[keep]}
    assert len(valid) > 5
    draws = 300 * len(valid)
    out = R.dinucleotide_shuffle(_onehot(seq), np.random.default_rng(0), num=draws)
    got = [_decode(s) for s in out]
    assert set(got) == valid  # only valid sequences, and every one of them reached
    counts = np.array([got.count(v) for v in sorted(valid)])
    # each count ~ Binomial(draws, 1/|valid|): mean 300, sd ~17; 6 sd leaves no room for bias
    assert np.all(np.abs(counts - 300) < 6 * np.sqrt(300))


def test_dinucleotide_shuffle_accepts_jax_keys_and_is_reproducible():
    oh = _onehot("ACGTTGCAACGGTACCA")
    a = R.dinucleotide_shuffle(oh, jax.random.key(3), num=5)
    b = R.dinucleotide_shuffle(oh, jax.random.key(3), num=5)
    c = R.dinucleotide_shuffle(oh, jax.random.PRNGKey(3), num=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)  # typed and raw keys with the same data agree


def test_dinucleotide_shuffle_bad_input():
    with pytest.raises(ValueError, match="shape"):
        R.dinucleotide_shuffle(np.zeros(4), 0)
    bad = _onehot("ACGT")
    bad[2] = [1, 1, 0, 0]
    with pytest.raises(ValueError, match="row 2 is not one-hot"):
        R.dinucleotide_shuffle(bad, 0)
    with pytest.raises(ValueError, match="PRNG key"):
        R.dinucleotide_shuffle(_onehot("ACGT"), "seed")


# ------------------------------------------------------------------------------ near_uniform
def test_near_uniform_sigmoid_picks_closest_to_half():
    data = np.arange(10, dtype=np.float32)[:, None]  # feature = index
    probs = np.array([0.9, 0.1, 0.52, 0.49, 0.7, 0.5, 0.05, 0.6, 0.45, 0.99], np.float32)
    predict = lambda xb: probs[xb[:, 0].astype(int)]  # noqa: E731
    refs, scores = R.near_uniform(predict, data, num=3, batch_size=4)
    np.testing.assert_array_equal(refs[:, 0], [5, 3, 2])
    np.testing.assert_allclose(scores, [0.0, 0.01, 0.02], atol=1e-6)
    res = R.near_uniform(lambda xb: probs[xb[:, 0].astype(int)][:, None], data, num=2, return_indices=True)
    np.testing.assert_array_equal(res.indices, [5, 3])


def test_near_uniform_softmax_distances():
    probs = np.array(
        [
            [0.6, 0.2, 0.2],  # max_abs 0.2667, kl ln(1/3)-mean log p
            [0.4, 0.3, 0.3],  # max_abs 0.0667
            [0.5, 0.5, 0.0],  # max_abs 0.3333, kl = inf
            [1 / 3, 1 / 3, 1 / 3],  # 0
        ]
    )
    data = np.arange(4)[:, None]
    predict = lambda xb: probs[xb[:, 0]]  # noqa: E731
    refs, scores = R.near_uniform(predict, data, num=4)
    np.testing.assert_array_equal(refs[:, 0], [3, 1, 0, 2])
    np.testing.assert_allclose(scores, [0, 1 / 15, 4 / 15, 1 / 3], atol=1e-9)
    refs, scores = R.near_uniform(predict, data, num=4, distance="kl")
    np.testing.assert_array_equal(refs[:, 0], [3, 1, 0, 2])
    assert np.isinf(scores[-1])
    kl = np.mean(np.log(1 / 3) - np.log(probs[1]))
    assert scores[1] == pytest.approx(kl)
    # logits: the uniform logits row wins
    logits = np.log(probs[:2]) + 5.0
    refs, _ = R.near_uniform(lambda xb: logits[xb[:, 0]], data[:2], num=1, from_logits=True)
    assert refs[0, 0] == 1


def test_near_uniform_bad_input():
    data = np.zeros((4, 2))
    with pytest.raises(ValueError, match="from_logits"):
        R.near_uniform(lambda xb: np.full((len(xb),), 3.0), data, num=1)
    with pytest.raises(ValueError, match="sum to 1"):
        R.near_uniform(lambda xb: np.full((len(xb), 3), 0.5), data, num=1)
    with pytest.raises(ValueError, match="only 4 inputs"):
        R.near_uniform(lambda xb: np.full((len(xb),), 0.5), data, num=5)
    with pytest.raises(ValueError, match="unknown distance"):
        R.near_uniform(lambda xb: np.full((len(xb),), 0.5), data, num=1, distance="l7")
    with pytest.raises(ValueError, match="returned shape"):
        R.near_uniform(lambda xb: np.full((1,), 0.5), data, num=1)


# ------------------------------------------------------------------------ reference callables
def test_ref_fns_shapes():
    x = np.random.default_rng(4).random((2, 8, 8, 1)).astype(np.float32)
    key = jax.random.key(0)
    assert R.as_ref_fn("zeros")(x, key).shape == (1, 8, 8, 1)
    assert R.as_ref_fn("blur", sigma=2.0)(x, key).shape == (2, 1, 8, 8, 1)
    assert R.as_ref_fn("shuffle", num=3)(x, key).shape == (2, 3, 8, 8, 1)
    refs, _ = R.near_uniform(lambda xb: np.full((len(xb),), 0.5), x, num=2)
    assert R.as_ref_fn(refs)(x, key).shape == (2, 8, 8, 1)
    assert R.as_ref_fn(refs[0])(x, key).shape == (1, 8, 8, 1)
    for fn in ["zeros", "blur", "shuffle"]:
        out = R.broadcast_references(R.as_ref_fn(fn)(x, key), x)
        assert out.shape[0] == 2 and out.shape[2:] == (8, 8, 1)
    seqs = np.eye(4, dtype=np.float32)[np.random.default_rng(5).integers(0, 4, (3, 20))]
    d = R.as_ref_fn("dinucleotide", num=2)(seqs, key)
    assert d.shape == (3, 2, 20, 4)
    np.testing.assert_array_equal(R.dinucleotide_counts(d), R.dinucleotide_counts(seqs)[:, None].repeat(2, 1))
    # input n is seeded by (key, n): the first row of a smaller batch gets the same references
    np.testing.assert_array_equal(R.as_ref_fn("dinucleotide", num=2)(seqs[:1], key), d[:1])


def test_ref_fn_callable_is_shape_checked_and_jittable():
    x = jnp.ones((2, 5))
    good = R.as_ref_fn(lambda x, key: jnp.zeros((3, 5)))
    assert good(x, None).shape == (3, 5)
    bad = R.as_ref_fn(lambda x, key: jnp.zeros((3, 4)))
    with pytest.raises(ValueError, match="do not fit"):
        bad(x, None)
    jitted = jax.jit(R.as_ref_fn("shuffle", num=2))
    assert jitted(x, jax.random.key(0)).shape == (2, 2, 5)


def test_broadcast_references():
    x = np.zeros((3, 4))
    assert R.broadcast_references(np.ones(4), x).shape == (3, 1, 4)
    assert R.broadcast_references(np.ones((2, 4)), x).shape == (3, 2, 4)
    assert R.broadcast_references(np.ones((3, 2, 4)), x).shape == (3, 2, 4)
    with pytest.raises(ValueError, match="do not fit"):
        R.broadcast_references(np.ones((2, 2, 4)), x)
    with pytest.raises(ValueError, match="unknown reference"):
        R.as_ref_fn("gray")
    with pytest.raises(ValueError, match="only apply to named"):
        R.as_ref_fn(np.zeros(3), num=2)


def test_blurred_under_jit_matches_eager():
    x = np.random.default_rng(6).random((2, 6, 5, 2)).astype(np.float32)
    eager = np.asarray(R.blurred(x, 1.5))
    jitted = np.asarray(jax.jit(lambda v: R.blurred(v, 1.5))(x))
    np.testing.assert_allclose(jitted, eager, atol=1e-6)
    assert not np.allclose(eager, x)  # it did blur
