"""The completeness certificate and layer cuts (issue "Exact or refused, by construction").

A returned DeepLIFT score is a score that sums: every pair's |ΣC − Δt| is checked inside the
compiled program against a rounding bound, and a pair over it is refused with a
``CompletenessError`` that says why. The cases below are the families of models that found
silently wrong scores before the certificate (a path around a marked layer, a −inf mask on live
attention scores, complex products under RevealCancel, a marked pytree); each is exact now, and
each is caught by the certificate if its fix is taken out.
"""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift import _ops, certificate, interpreter
from jaxlift.errors import CompletenessError, CompletenessWarning, UnsupportedPrimitiveError
from jaxlift.methods import interpreted
from jaxlift.rules import registry, rescale
from jaxlift.rules.composites import Composite, is_nonlinearity
from jaxlift.rules.registry import Rule

import zoo

pytestmark = pytest.mark.usefixtures("x64")


def sums(scores, delta):
    total = sum(jnp.sum(l.reshape(l.shape[0], -1), 1) for l in jax.tree_util.tree_leaves(scores))
    np.testing.assert_allclose(total, delta, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# A deliberately wrong rule is caught on every model of the zoo

def _off_by_one_percent(ctx, m_out):
    (m,) = m_out
    ratio = rescale.rescale_multiplier(ctx) * 1.01
    return [m.map(lambda v: v * ratio)]


OFF = Composite("rescale_off_by_1pc", ((is_nonlinearity, Rule("off", backward=_off_by_one_percent)),))

ZOO_SPECS = {
    "mlp": (zoo.build_mlp, dict(d_in=3, layers=[dict(act="tanh", residual=True, gate=True),
                                              dict(act="relu", residual=False, gate=False)],
                              width=4, n_out=2, seed=3)),
    "cnn": (zoo.build_cnn, dict(hw=6, c_in=1, convs=[dict(features=2, k=3, stride=1, padding="SAME",
                                                         act="softplus", pool="max")],
                              residual=False, n_out=2, seed=5)),
    "rnn": (zoo.build_rnn, dict(cell="gru", act="tanh", steps=3, d_in=2, hidden=3, reverse=False,
                              unroll=1, read="both", fori=1, cond=True, n_out=2, seed=7)),
}


@functools.lru_cache(maxsize=None)
def zoo_model(name):
    """``(fn, params, x_shape)``, built under x64 (float64 parameters)."""
    build, spec = ZOO_SPECS[name]
    return build(spec)


@pytest.mark.parametrize("name", sorted(ZOO_SPECS))
def test_a_rule_off_by_one_percent_is_refused_on_every_zoo_model(name):
    fn, params, shape = zoo_model(name)
    x, refs = zoo.inputs_and_refs(11, shape, n=2, k=2)
    scores, delta = jaxlift.attribute(fn, params, x, refs, target=1, return_delta=True)
    sums(scores, delta)  # the registry's own rules are exact here
    with pytest.raises(CompletenessError, match="nonlinearity|'scan'") as info:
        jaxlift.attribute(fn, params, x, refs, target=1, mode=OFF)
    err = info.value
    assert err.pairs >= 1 and err.gap > err.bound > 0
    assert "does not conserve" in err.cause and "your own composite" in err.cause
    with pytest.warns(CompletenessWarning, match="do not sum to Δt"):
        warned = jaxlift.attribute(fn, params, x, refs, target=1, mode=OFF,
                                   check_completeness="warn")
    silent = jaxlift.attribute(fn, params, x, refs, target=1, mode=OFF, check_completeness="off")
    np.testing.assert_array_equal(warned, silent)


def test_a_padded_small_call_names_the_worst_pair_among_its_own_inputs():
    """Five inputs run on six rows (a program for six has run: ``chunking.one_chunk_rows``),
    the sixth repeating the fifth, the only input apart from its reference: the error names
    input 4 and counts one failing pair, not its padded copy."""
    fn, params, shape = zoo_model("mlp")
    x, refs = zoo.inputs_and_refs(3, shape, n=5, k=1)
    x = np.repeat(np.asarray(refs), 6, axis=0)
    jaxlift.attribute(fn, params, x, refs, target=1, mode=OFF)  # Δ = 0: nothing to fail
    x[4] += 1.0
    with pytest.raises(CompletenessError) as info:
        jaxlift.attribute(fn, params, x[:5], refs, target=1, mode=OFF)
    assert info.value.worst[:2] == (4, 0) and info.value.pairs == 1


def test_a_call_on_repeated_references_counts_and_names_its_own_pairs():
    """Three inputs against two references run on the two repeated in turn up to four (a
    program for four has run): the pairs apart from their reference fail — the second
    reference's, and the third input's — and the error counts those four, not their copies,
    named by the call's own reference."""
    fn, params, shape = zoo_model("mlp")
    _, refs = zoo.inputs_and_refs(5, shape, n=1, k=1)
    same = np.repeat(np.asarray(refs), 4, axis=0)
    x = same[:3].copy()
    jaxlift.attribute(fn, params, x, same, target=1, mode=OFF)  # Δ = 0: nothing to fail
    two = np.concatenate([same[:1], same[:1] + 1.0])
    x[2] += 2.0
    with pytest.raises(CompletenessError) as info:
        jaxlift.attribute(fn, params, x, two, target=1, mode=OFF)
    assert info.value.pairs == 4 and info.value.worst[1] in (0, 1)


def test_a_call_in_pieces_names_the_worst_pair_by_its_own_input():
    """Three inputs run as two runs of a program for two (``chunking.one_chunk_rows``); only
    the third is apart from its reference: the error names input 2 and counts one pair."""
    fn, params, shape = zoo_model("mlp")
    _, refs = zoo.inputs_and_refs(7, shape, n=1, k=1)
    x = np.repeat(np.asarray(refs), 3, axis=0)
    jaxlift.attribute(fn, params, x[:2], refs, target=1, mode=OFF)  # Δ = 0: nothing to fail
    x[2] += 1.0
    with pytest.raises(CompletenessError) as info:
        jaxlift.attribute(fn, params, x, refs, target=1, mode=OFF)
    assert info.value.worst[:2] == (2, 0) and info.value.pairs == 1


def test_multipliers_are_certified_too():
    fn, params, shape = zoo_model("mlp")
    x, refs = zoo.inputs_and_refs(2, shape, n=2, k=1)
    with pytest.raises(CompletenessError):
        jaxlift.multipliers(fn, params, x, refs, target=0, mode=OFF)


def test_inside_a_callers_jit_a_failing_pair_is_nan_not_a_wrong_number():
    fn, params, shape = zoo_model("mlp")
    x, refs = zoo.inputs_and_refs(4, shape, n=2, k=2)
    wrong = jax.jit(lambda x: jaxlift.attribute(fn, params, x, refs, target=0, mode=OFF))(x)
    assert np.isnan(np.asarray(wrong)).all()
    right = jax.jit(lambda x: jaxlift.attribute(fn, params, x, refs, target=0))(x)
    assert np.isfinite(np.asarray(right)).all()


def test_methods_that_do_not_promise_completeness_are_never_refused():
    fn, params, shape = zoo_model("cnn")
    x, refs = zoo.inputs_and_refs(6, shape, n=2, k=2)
    for mode, kw in (("integrated_gradients", {"mode_options": {"steps": 2}}),
                     ("grad_times_input", {}), ("rescale", {"max_mode": "gradient"})):
        scores, delta = jaxlift.attribute(fn, params, x, refs, target=0, mode=mode,
                                          return_delta=True, **kw)
        gap = np.abs(np.asarray(jaxlift.completeness_gap(scores, delta)))
        assert gap.max() > 1e-6  # not exact, and returned all the same


def test_check_completeness_values():
    assert certificate.check_mode(True) == "raise" and certificate.check_mode(False) == "off"
    with pytest.raises(ValueError, match="check_completeness"):
        jaxlift.attribute(lambda p, x: x, None, jnp.ones((1, 1)), jnp.zeros((1, 1)),
                          check_completeness="maybe")


def test_the_bound_is_rounding_sized():
    """float64: 1e-9 of the scores' size plus 64 ulps of |t(x)| + |t(r)| + Σ|m|(|v| + |v0|)."""
    gap, bound = certificate.pair_bound(jnp.float64(1.0), jnp.float64(2.0), jnp.float64(10.0),
                                        jnp.float64(1.5), jnp.float64)
    assert float(gap) == 0.5
    np.testing.assert_allclose(float(bound), 1e-9 * 2.0 + 64 * 2.0 ** -52 * 10.0)


def test_the_bound_never_exceeds_the_resolution_of_t():
    """Whatever the size of the scores, a gap stays within ``(rtol + 64·eps)·s``, ``s`` the
    scale t is computed at (|t(x)| + |t(r)| and its linear tail): scores of 1e6 for a Δt of 0.2
    cannot pass with a gap of 0.1 because 1e-4 of 1e6 is 100."""
    gap, bound = certificate.pair_bound(jnp.float32(0.3), jnp.float32(1e6), jnp.float32(1e6),
                                        jnp.float32(0.2), jnp.float32, scale=jnp.float32(0.5))
    np.testing.assert_allclose(float(bound), (1e-4 + 64 * 2.0 ** -23) * 0.5, rtol=1e-6)
    assert float(gap) > float(bound)
    # where the scores are no larger than t's scale, the bound is the rounding-sized one above
    _, small = certificate.pair_bound(jnp.float32(0.3), jnp.float32(0.5), jnp.float32(0.5),
                                      jnp.float32(0.3), jnp.float32, scale=jnp.float32(0.5))
    np.testing.assert_allclose(float(small), 1e-4 * 0.5 + 64 * 2.0 ** -23 * 0.5, rtol=1e-6)


class _NormOfAZeroBiasLayer(nn.Module):
    """A dense layer without bias, then a LayerNorm with BERT's and BEiT's epsilon of 1e-12: a
    constant reference gives the layer norm a variance of exactly 0, so 1/√(var + ε) = 1e6
    on the reference's side (Hugging Face's BEiT at a black image)."""

    epsilon: float = 1e-12

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(16, use_bias=False)(x)
        h = nn.LayerNorm(epsilon=self.epsilon)(h)
        return nn.Dense(3)(nn.gelu(nn.Dense(16)(h)))


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_scores_that_cancel_beyond_what_float32_resolves_are_refused(mode):
    """The Shapley product of the layer norm splits Δ into terms of ~1e5 that cancel to Δt of
    ~0.2: every rule conserves Σ m·Δ to its rounding, and ΣC missed Δt by 5-50 % while its
    gap stayed under 1e-4 of Σ|C| — returned before the bound was capped at t's own scale."""
    net = _NormOfAZeroBiasLayer()
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(4, 8)), jnp.float32)
    params = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32),
                                    net.init(jax.random.key(1), x))
    with pytest.raises(CompletenessError, match="cancel beyond what float32 resolves") as info:
        jaxlift.attribute(net.apply, params, x, jnp.zeros((1, 8), jnp.float32), target=0,
                          mode=mode)
    assert "'mul' at" in str(info.value) and "normalization.py" in str(info.value)
    # RevealCancel's own fix is named in its mode only
    assert ("mode='rescale'" in str(info.value)) == (mode == "reveal_cancel")
    assert "a constant reference gives" in str(info.value) and "noise" in str(info.value)
    # a reference that varies, but barely: refused too, and not told to use noise
    barely = jnp.asarray(1e-7 * np.random.default_rng(2).uniform(size=(1, 8)), jnp.float32)
    with pytest.raises(CompletenessError, match="cancel beyond what float32 resolves") as info:
        jaxlift.attribute(net.apply, params, x, barely, target=0, mode=mode)
    assert "reference is not constant" in str(info.value) and "noise" not in str(info.value)
    # references whose features vary keep the layer norm away from its pole: the scores sum
    refs = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 8)), jnp.float32)
    scores, delta = jaxlift.attribute(net.apply, params, x, refs, target=0, mode=mode,
                                      return_delta=True)
    np.testing.assert_allclose(scores.sum(1), delta, rtol=1e-4, atol=1e-6)
    # and float64 resolves the cancellation itself, to its rtol (terms of 1e6: 1e-10 of Δt)
    wide = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    scores, delta = jaxlift.attribute(net.apply, wide, x.astype(jnp.float64),
                                      jnp.zeros((1, 8)), target=0, mode=mode,
                                      return_delta=True)
    np.testing.assert_allclose(scores.sum(1), delta, rtol=1e-9)


def test_a_cancellation_names_the_operation_that_makes_the_terms_not_one_they_pass():
    """Two normalizations at their pole with a layer between (equimo's Mlla: GroupNorm, a
    convolution, GroupNorm): walking back from the target, the terms cross the onset of
    1e3·Δt's scale at the layer between, which only passes them on (it hands back terms of
    about the size it was given); the refusal names the normalization's 'mul' that multiplies
    them by 60, where the first crossing named the layer."""
    from types import SimpleNamespace as Op
    ops = [Op(primitive=p, where=w, sub=None) for p, w in (
        ("dot_general", "head.py:1"), ("mul", "norm.py:2"), ("sub", "norm.py:3"),
        ("conv_general_dilated", "conv.py:4"), ("reshape", "conv.py:5"),
        ("mul", "norm.py:6"), ("sub", "norm.py:7"))]
    scales = np.array([2.0, 120.0, 400.0, 2500.0, 2600.0, 9.6e4, 1.9e5])
    grows = np.array([1.0, 20.0, 1.1, 1.3, 1.0, 60.0, 1.0])
    losses = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1e-3, 0.0])  # rounding: every rule conserves
    flags = np.zeros(len(ops), bool)
    words = interpreted.cause_of(None, ops, losses, scales, flags, flags, 0.0, 1.0, None,
                                 grows=grows)
    assert "cancel beyond what float32 resolves" in words
    assert "From primitive 'mul' at norm.py:6" in words, words
    # without the growth of each operation, the first crossing is the layer between
    first = interpreted.cause_of(None, ops, losses, scales, flags, flags, 0.0, 1.0, None)
    assert "From primitive 'conv_general_dilated' at conv.py:4" in first, first


def test_float64_is_not_offered_where_it_would_not_resolve_the_cancellation():
    """With ε = 1e-20 the layer norm's 1/√(0 + ε) at a constant reference is 1e10: the terms
    outgrow what float64's bound resolves too (equimo's Mlla GroupNorm at a black image), so the
    float32 refusal does not send the user to float64, and float64 refuses as well, without
    suggesting itself."""
    net = _NormOfAZeroBiasLayer(epsilon=1e-20)
    x = jnp.asarray(np.random.default_rng(3).uniform(size=(2, 8)), jnp.float32)
    params = net.init(jax.random.key(4), x)
    with pytest.raises(CompletenessError, match="float64 will not resolve it either"):
        jaxlift.attribute(net.apply, params, x, jnp.zeros((1, 8), jnp.float32), target=0)
    wide = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), params)
    with pytest.raises(CompletenessError, match="beyond what float64 resolves") as info:
        jaxlift.attribute(net.apply, wide, x.astype(jnp.float64), jnp.zeros((1, 8)), target=0)
    assert "float64 resolves it" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Cuts: layer= where part of Δt goes around the marked value

RNG = np.random.default_rng(0)  # NumPy float64: float64 under x64 whenever the tests run
E = RNG.normal(size=(10, 4))


def masked_embedding(E, x):
    """A padding mask computed from the same ids as the marked embedding (BERT's
    attention_mask=(ids != pad))."""
    ids = x["ids"] if isinstance(x, dict) else x
    h = jaxlift.layer(jnp.asarray(E)[ids], "emb")
    mask = x["mask"] if isinstance(x, dict) else (ids != 0)
    h = jnp.tanh(h) * mask[..., None]
    return h.sum((1, 2))[:, None]


IDS = jnp.array([[3, 5, 7, 0], [2, 0, 0, 0]])
PAD = jnp.zeros((1, 4), IDS.dtype)


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_a_mask_from_the_same_ids_is_refused_naming_the_comparison(mode):
    with pytest.raises(CompletenessError) as info:
        jaxlift.attribute(masked_embedding, E, IDS, PAD, layer="emb", mode=mode)
    cause = info.value.cause
    assert "around layer 'emb'" in cause and "'ne'" in cause and "test_certificate.py" in cause
    assert "jaxlift.references.hold" in cause and "layer_bypass='credit'" in cause


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_a_mask_held_fixed_per_example_makes_the_cut_exact(mode):
    x = {"ids": IDS, "mask": (IDS != 0).astype(jnp.float64)}
    refs = jaxlift.references.hold(x, {"ids": PAD}, keys=("mask",))
    assert refs["mask"].shape == (2, 1, 4) and refs["ids"].shape == (2, 1, 4)
    scores, delta = jaxlift.attribute(masked_embedding, E, x, refs, layer="emb", mode=mode,
                                      return_delta=True)
    assert scores.shape == (2, 4, 4)
    sums(scores, delta)
    # with the reference's own (all-pad) mask, the mask carries part of Δt: refused
    shared = {"ids": PAD, "mask": jnp.zeros((1, 4))}
    with pytest.raises(CompletenessError, match=r"x\['mask'\]"):
        jaxlift.attribute(masked_embedding, E, x, shared, layer="emb", mode=mode)


def test_credit_returns_the_inputs_share_beside_the_layers():
    x = {"ids": IDS, "mask": (IDS != 0).astype(jnp.float64)}
    shared = {"ids": PAD, "mask": jnp.zeros((1, 4))}
    (layer, around), delta = jaxlift.attribute(masked_embedding, E, x, shared, layer="emb",
                                               layer_bypass="credit", return_delta=True)
    assert layer.shape == (2, 4, 4) and set(around) == {"ids", "mask"}
    assert np.abs(np.asarray(around["mask"])).sum() > 0
    np.testing.assert_array_equal(around["ids"], 0)  # the ids reach t only through the layer
    sums((layer, around), delta)


W, V, U = RNG.normal(size=(4, 4)), RNG.normal(size=4), RNG.normal(size=4)


def residual_around(p, x):
    h = jaxlift.layer(jax.nn.relu(x @ W), "h")
    return (h @ V + x @ U)[:, None]


def test_a_residual_around_the_marked_block_is_refused_or_credited():
    x, r = jnp.ones((2, 4)), jnp.zeros((1, 4))
    with pytest.raises(CompletenessError, match="'add' at .*dot_general"):
        jaxlift.attribute(residual_around, None, x, r, layer="h")
    (layer, around), delta = jaxlift.attribute(residual_around, None, x, r, layer="h",
                                               layer_bypass="credit", return_delta=True)
    np.testing.assert_allclose(around, x * U, rtol=1e-12)  # the skip path's own share
    sums((layer, around), delta)


def test_a_second_input_beside_the_embedding_marked_as_one_cut():
    w = RNG.normal(size=11)

    def fn(p, x):
        h = jaxlift.layer(jnp.asarray(E)[x["ids"]], "inputs").reshape(x["ids"].shape[0], -1)[:, :8]
        num = jaxlift.layer(x["num"], "inputs")  # a second site of the same name
        return (jnp.tanh(jnp.concatenate([h, num], -1)) @ w)[:, None]

    x = {"ids": jnp.array([[3, 5]]), "num": jnp.array([[1.0, 2.0, 3.0]])}
    r = {"ids": jnp.array([[0, 0]]), "num": jnp.zeros((1, 3))}
    (emb, num), delta = jaxlift.attribute(fn, None, x, r, layer="inputs", return_delta=True)
    assert emb.shape == (1, 2, 4) and num.shape == (1, 3)
    sums((emb, num), delta)


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_a_marked_pytree_is_one_cut_and_comes_back_as_that_pytree(mode):
    Ea, Eb, wd = RNG.normal(size=(10, 3)), RNG.normal(size=(10, 3)), RNG.normal(size=6)

    def fn(p, x):
        h = jaxlift.layer({"a": jnp.asarray(Ea)[x["i"]], "b": jnp.asarray(Eb)[x["j"]]}, "emb")
        return (jnp.tanh(jnp.concatenate([h["a"], h["b"]], -1)) @ wd)[:, None]

    x = {"i": jnp.array([1, 2]), "j": jnp.array([3, 4])}
    r = {"i": jnp.array([0]), "j": jnp.array([0])}
    scores, delta = jaxlift.attribute(fn, None, x, r, layer="emb", mode=mode, return_delta=True)
    assert set(scores) == {"a", "b"} and scores["a"].shape == (2, 3)
    sums(scores, delta)


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_an_integer_mask_of_the_ids_around_the_cut_is_refused_with_the_fix(mode):
    """An end-of-sequence mask computed from the ids meets the marked embeddings in an einsum,
    read as integers (Hugging Face's BART pools this way): refused naming the comparison and
    the fix, which then holds — the mask as a float input of its own, held per example."""
    def fn(E, ids):
        h = jaxlift.layer(E[ids], "emb")
        return jnp.einsum("btd,bt->bd", jnp.tanh(h), (ids == 3).astype(jnp.int32))

    ids = jnp.array([[1, 2, 3, 0], [4, 3, 5, 6]])
    with pytest.raises(UnsupportedPrimitiveError, match="mask computed from the token ids") as info:
        jaxlift.attribute(fn, E, ids, jnp.zeros((1, 4), ids.dtype), target=0, layer="emb",
                          mode=mode)
    assert "'eq' at" in str(info.value) and "references.hold" in str(info.value)

    def held(E, x):
        h = jaxlift.layer(E[x["ids"]], "emb")
        return jnp.einsum("btd,bt->bd", jnp.tanh(h), x["eos"])

    x = {"ids": ids, "eos": (ids == 3).astype(jnp.float64)}
    refs = jaxlift.references.hold(x, {"ids": jnp.zeros((1, 4), ids.dtype)}, keys=["eos"])
    scores, delta = jaxlift.attribute(held, E, x, refs, target=0, layer="emb", mode=mode,
                                      return_delta=True)
    sums(scores, delta)


P_TOK, P_POS, P_W = RNG.normal(size=(10, 4)), RNG.normal(size=(8, 4)), RNG.normal(size=(4,))


def _positioned(p, x):
    """Token embeddings (marked) plus position embeddings looked up by integer positions:
    given (``x["pos"]``) or computed from an integer mask (OPT's cumsum of the mask)."""
    e = jaxlift.layer(jnp.asarray(P_TOK)[x["ids"]], "emb")
    pos = x["pos"] if "pos" in x else jnp.cumsum(x["mask"], axis=1) * x["mask"]
    h = (e + jnp.asarray(P_POS)[pos]) * (x["mask"][..., None] if "mask" in x else 1)
    return jnp.tanh(h).sum(1) @ jnp.asarray(P_W)[:, None]


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
@pytest.mark.parametrize("held_key", ["pos", "mask"])
def test_integer_inputs_held_in_every_pair_are_read_as_fixed(held_key, mode):
    """Positions (given, or a cumsum of the mask) index a table around the marked embeddings:
    indices computed from a live input have no rule. Held equal to the input's own in every
    pair (references.hold) they carry nothing, and the program reads them as fixed per input:
    the cut is exact, and the held input's scores (with layer_bypass="credit") are 0."""
    ids = jnp.array([[1, 2, 3, 0], [4, 5, 6, 7]])
    x = {"ids": ids, held_key: (jnp.array([[0, 1, 2, 3], [2, 3, 4, 5]]) if held_key == "pos"
                                else jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]]))}
    refs = jaxlift.references.hold(x, {"ids": jnp.zeros((2, 4), ids.dtype)}, keys=[held_key])
    assert jaxlift.references.held_leaves(x, refs) == (False, True)
    scores, delta = jaxlift.attribute(_positioned, None, x, refs, target=0, layer="emb",
                                      mode=mode, return_delta=True, layer_bypass="credit")
    sums((scores.layer, scores.bypass), delta)
    assert np.all(np.asarray(scores.bypass[held_key]) == 0)
    # the same shapes with the positions not held: indices computed from the input, refused
    # (a call like the held one must not reuse the held one's program)
    moved = dict(refs, **{held_key: refs[held_key][..., ::-1]})
    assert jaxlift.references.held_leaves(x, moved) == ()
    with pytest.raises(UnsupportedPrimitiveError, match="references.hold"):
        jaxlift.attribute(_positioned, None, x, moved, target=0, layer="emb", mode=mode,
                          layer_bypass="credit")


def test_held_leaves_of_jax_arrays_compile_nothing():
    """Every call with per-input references asks which leaves are held: on the CPU the jax
    arrays are read in place, where cutting their first pair eagerly compiled a slice program
    per shape (four on a BERT-like first call, 0.08 s)."""
    x = {"ids": jnp.arange(21).reshape(3, 7) % 5, "v": jnp.ones((3, 7)) * 0.5}
    refs = jaxlift.references.hold(x, {"v": jnp.zeros((2, 7))}, keys=["ids"])
    compiled = []

    def listen(name, *_, **__):
        if name.endswith("backend_compile_duration"):
            compiled.append(name)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        assert jaxlift.references.held_leaves(x, refs) == (True, False)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert compiled == [] or jax.default_backend() != "cpu"


def test_held_leaves_are_integer_leaves_equal_to_their_references_in_every_pair():
    x = {"a": np.arange(6).reshape(2, 3), "b": np.ones((2, 3)), "c": np.zeros((2, 3), int)}
    refs = {k: np.repeat(v[:, None], 2, axis=1) for k, v in x.items()}
    assert jaxlift.references.held_leaves(x, refs) == (True, False, True)  # floats: live
    assert jaxlift.references.held_leaves(x, refs, floats=True) == ()      # all: none held
    assert not jaxlift.references.floats_held("multipliers", None, "refuse")
    assert not jaxlift.references.floats_held("multipliers", "emb", "credit")
    assert jaxlift.references.floats_held("multipliers", "emb", "refuse")
    assert jaxlift.references.floats_held("contributions", None, "refuse")
    refs["c"][1, 1, 0] = 1
    assert jaxlift.references.held_leaves(x, refs) == (True, False, False)
    shared = {k: v[:1] for k, v in x.items()}                               # (K, *S): none
    assert jaxlift.references.held_leaves(x, shared) == ()


def _float_masked(p, x):
    """BLOOM's way: the mask comes as floats and ``fn`` casts it to integers for positions."""
    return _positioned(p, {"ids": x["ids"], "mask": x["mask"].astype(jnp.int32)})


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_a_held_float_mask_cast_to_integers_is_read_as_fixed(mode):
    """A float leaf held in every pair is read as fixed where no multiplier of it is returned
    (contributions; multipliers at a marked layer): the positions cast from it are fixed, and
    the cut is exact (refused before: indices computed from a live input). Multipliers of the
    inputs themselves keep it live: a float's multipliers are its slopes, not zeros."""
    x = {"ids": jnp.array([[1, 2, 3, 0], [4, 5, 6, 7]]),
         "mask": jnp.array([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])}
    refs = jaxlift.references.hold(x, {"ids": jnp.zeros((2, 4), int)}, keys=["mask"])
    assert jaxlift.references.held_leaves(x, refs) == ()
    assert jaxlift.references.held_leaves(x, refs, floats=True) == (False, True)
    scores, delta = jaxlift.attribute(_float_masked, None, x, refs, target=0, layer="emb",
                                      mode=mode, return_delta=True, layer_bypass="credit")
    sums((scores.layer, scores.bypass), delta)
    assert np.all(np.asarray(scores.bypass["mask"]) == 0)
    assert float(jnp.abs(delta).min()) > 1e-3
    m = jaxlift.multipliers(_float_masked, None, x, refs, target=0, layer="emb", mode=mode)
    assert m.shape == (2, 4, P_TOK.shape[1]) and bool(jnp.all(jnp.isfinite(m)))
    with pytest.raises(UnsupportedPrimitiveError, match="'gather'"):
        jaxlift.multipliers(_float_masked, None, x, refs, target=0, mode=mode)


def test_position_ids_computed_from_the_ids_are_refused_naming_the_users_line():
    import flax.linen as nn

    class Embeddings(nn.Module):  # RoBERTa's position ids: a cumulative sum of ids != pad
        @nn.compact
        def __call__(self, ids):
            words = jaxlift.layer(nn.Embed(20, 4, name="word")(ids), "emb")
            mask = (ids != 1).astype(jnp.int32)
            positions = jnp.cumsum(mask, axis=1) * mask + 1
            return (words + nn.Embed(20, 4, name="pos")(positions)).sum((1, 2))[:, None]

    model = Embeddings()
    ids = jnp.array([[0, 5, 6, 1]])
    params = model.init(jax.random.key(0), ids)
    with pytest.raises(UnsupportedPrimitiveError) as info:
        jaxlift.attribute(model.apply, params, ids, jnp.ones((1, 4), ids.dtype), layer="emb")
    msg = str(info.value)
    assert "flax/linen/linear.py" in msg and "called from" in msg  # the library's line and ...
    assert msg.count("test_certificate.py") >= 2  # ... the user's lines: the lookup, the cumsum
    assert "position_ids" in msg


def test_a_pooling_at_the_argmax_of_the_ids_is_refused_naming_argmax_and_the_held_fix():
    """CLIP's text pooler reads the hidden state at the argmax of the ids (the end-of-sequence
    token has the largest id): indices picked from the input around the marked embeddings. The
    refusal names argmax and says to pass the position held; done so, the cut is exact."""
    table = jnp.asarray(P_TOK)

    def pooled(p, x):
        h = jnp.tanh(jaxlift.layer(table[x["ids"]], "emb"))
        at = jnp.argmax(x["ids"], axis=1)[:, None, None] if "at" not in x else x["at"][:, None, None]
        return jnp.take_along_axis(h, at, axis=1)[:, 0] @ jnp.asarray(P_W)[:, None]

    ids = jnp.array([[1, 2, 7, 0], [4, 3, 5, 7]])
    with pytest.raises(UnsupportedPrimitiveError, match=r"'argmax' at .*test_certificate\.py"
                       r".*end-of-sequence.*references\.hold"):
        jaxlift.attribute(pooled, None, {"ids": ids}, {"ids": jnp.zeros((1, 4), int)},
                          target=0, layer="emb")
    x = {"ids": ids, "at": jnp.argmax(ids, axis=1)}
    refs = jaxlift.references.hold(x, {"ids": jnp.zeros((1, 4), int)}, keys=["at"])
    scores, delta = jaxlift.attribute(pooled, None, x, refs, target=0, layer="emb",
                                      return_delta=True)
    sums(scores, delta)
    assert float(jnp.abs(delta).min()) > 1e-3


# ---------------------------------------------------------------------------------------------
# −inf masks, complex products, stack: exact, and caught if the fix is taken out

Wq = RNG.normal(size=(4, 4))


def causal_attention(p, x):
    q, k = x @ Wq, x @ Wq.T
    s = q @ jnp.swapaxes(k, -1, -2)  # live × live
    t = x.shape[-2]
    s = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s, -jnp.inf)
    return (jax.nn.softmax(s, -1) @ x).sum((-1, -2))[..., None]


def naive_difference(a, b):
    return _ops.widen(a) - _ops.widen(b)


@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel"])
def test_a_minus_inf_causal_mask_on_live_scores_is_exact(mode, monkeypatch):
    x = jax.random.normal(jax.random.key(9), (2, 5, 4), jnp.float64)
    r = jnp.full((1, 5, 4), 0.1)
    scores, delta = jaxlift.attribute(causal_attention, None, x, r, mode=mode, return_delta=True)
    sums(scores, delta)
    monkeypatch.setattr(interpreter, "difference", naive_difference)  # −inf − −inf = NaN again
    interpreted.compiled_program.cache_clear()
    with pytest.raises(CompletenessError, match="NaN or Inf"):
        jaxlift.attribute(causal_attention, None, x, r, mode=mode)
    interpreted.compiled_program.cache_clear()


H = 3
LAM = np.exp(-np.exp(np.array([-0.5, 0.1, 0.3])) + 1j * np.array([0.3, -1.2, 2.0]))
B = RNG.normal(size=(H, 2)) + 1j * RNG.normal(size=(H, 2))
C = RNG.normal(size=(1, H)) + 1j * RNG.normal(size=(1, H))


def linear_recurrent_unit(p, xb):
    """A linear recurrent unit: a complex diagonal recurrence, a real readout, a ReLU."""
    def one(x):
        def step(h, xt):
            h = LAM * h + B @ xt.astype(jnp.complex128)
            return h, jax.nn.relu(jnp.real(C @ h))
        return jax.lax.scan(step, jnp.zeros((H,), jnp.complex128), x)[1].sum()[None]
    return jax.vmap(one)(xb)


def complex_product(p, xb):
    return jax.nn.relu(jnp.real((xb * (1 + 1j)) @ B.T)).sum(-1, keepdims=True)


@pytest.mark.parametrize("fn,shape", [(linear_recurrent_unit, (4, 2)), (complex_product, (2,))])
@pytest.mark.parametrize("mode", ["rescale", "reveal_cancel", "genomics_default"])
def test_complex_values_are_exact_in_every_mode(fn, shape, mode):
    x = jax.random.normal(jax.random.key(14), (3,) + shape, jnp.float64)
    scores, delta = jaxlift.attribute(fn, None, x, jnp.zeros((1,) + shape), mode=mode,
                                      return_delta=True)
    sums(scores, delta)


def test_complex_under_reveal_cancel_is_caught_without_its_fix(monkeypatch):
    monkeypatch.setattr(interpreter, "_own_split", lambda rule, op, program: rule is not None
                        and rule.split is not None)
    interpreted.compiled_program.cache_clear()
    x = jax.random.normal(jax.random.key(14), (3, 2), jnp.float64)
    with pytest.raises(CompletenessError):
        jaxlift.attribute(complex_product, None, x, jnp.zeros((1, 2)), mode="reveal_cancel")
    interpreted.compiled_program.cache_clear()


def test_stack_is_linear():
    def fn(p, x):
        return jnp.tanh(jnp.stack([x, 2 * x, x ** 2], 1)).sum((1, 2))[:, None]
    assert "stack" in str(jax.make_jaxpr(lambda x: jnp.stack([x, x]))(jnp.ones(2)))
    x = jax.random.normal(jax.random.key(15), (2, 3), jnp.float64)
    for mode in ("rescale", "reveal_cancel"):
        scores, delta = jaxlift.attribute(fn, None, x, jnp.zeros((1, 3)), mode=mode,
                                          return_delta=True)
        sums(scores, delta)
    assert registry.lookup("stack", (True, True)) is not None


def test_a_bypass_with_its_fix_taken_out_is_caught(monkeypatch):
    """Before cuts were cuts, the backward pass stopped at the marker's producer and whatever
    went around it was lost: the certificate refuses that too."""
    original = interpreter.backward

    def old_walk(fwd, seeds, stop=frozenset(), inspect=None):
        mult = original(fwd, seeds, stop=stop, inspect=inspect)
        return {a: m for a, m in mult.items() if a not in fwd.program.live_inputs}

    monkeypatch.setattr(interpreter, "backward", old_walk)
    interpreted.compiled_program.cache_clear()
    x = {"ids": IDS, "mask": (IDS != 0).astype(jnp.float64)}
    shared = {"ids": PAD, "mask": jnp.zeros((1, 4))}
    with pytest.raises(CompletenessError):
        jaxlift.attribute(masked_embedding, E, x, shared, layer="emb", layer_bypass="credit")
    interpreted.compiled_program.cache_clear()


# ---------------------------------------------------------------------------------------------
# Everywhere a score leaves jaxlift: attribute_dataset and the CLI

@pytest.fixture
def rescale_off_by_one_percent(monkeypatch):
    """The registry's own Rescale rule made wrong by 1% (as a bug in it would be)."""
    right = rescale.rescale_multiplier
    monkeypatch.setattr(rescale, "rescale_multiplier", lambda ctx: right(ctx) * 1.01)
    interpreted.compiled_program.cache_clear()
    yield
    interpreted.compiled_program.cache_clear()


def test_attribute_dataset_writes_no_chunk_that_fails(tmp_path, rescale_off_by_one_percent):
    fn, params, shape = zoo_model("mlp")
    x, refs = zoo.inputs_and_refs(8, shape, n=4, k=2)
    with pytest.raises(CompletenessError):
        jaxlift.attribute_dataset(fn, params, np.asarray(x), np.asarray(refs), target=0,
                                  out=tmp_path / "store", chunk_size=2, quiet=True)
    assert not list((tmp_path / "store").glob("**/*scores*.npy"))  # nothing stored as good
    with pytest.warns(CompletenessWarning):
        jaxlift.attribute_dataset(fn, params, np.asarray(x), np.asarray(refs), target=0,
                                  out=tmp_path / "warned", chunk_size=2, quiet=True,
                                  check_completeness="warn")
    gaps = np.abs(jaxlift.open_scores(tmp_path / "warned")["gap"])
    assert gaps.max() > 1e-6  # stored with their gaps, as the user asked


def test_the_cli_exits_1_with_one_line(tmp_path, capsys, rescale_off_by_one_percent):
    from jaxlift import cli
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    with np.load(repo / "jaxlift" / "data" / "mnist_digits.npz") as d:
        np.save(tmp_path / "digits.npy", d["x"][:2])
    with jax.enable_x64(False):
        code = cli.main(["attribute", str(repo / "jaxlift" / "data" / "mnist_small.h5"),
                         str(tmp_path / "digits.npy"), "--target", "3", "--mode", "rescale",
                         "--out", str(tmp_path / "s.npz")])
    err = capsys.readouterr().err
    assert code == 1 and "do not sum to Δt" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.npz").exists()


def test_large_features_equal_in_input_and_reference_still_count_in_the_bound():
    """Rounding of features that did not move (Δx = 0) still moves Δt: t = Σ w·x over
    (1e4, x₁, −1e4) rounds x₁ to float32's spacing at 1e4 in t(x) and t(r) differently (a gap
    of 4e-4 against ΣC ≈ −0.38). κ̂ counts |m|·(|x| + |r|) of those features too, so the
    certificate does not refuse this exact call (a κ̂ read off the contributions, |C|/|Δx|,
    would drop them and refuse it)."""
    def fn(w, xb):
        return (xb * w).sum(-1, keepdims=True)
    w = jnp.ones(3, jnp.float32)
    x = jnp.array([[1e4, 0.1234567, -1e4]], jnp.float32)
    r = jnp.array([[1e4, 0.5, -1e4]], jnp.float32)
    c, d = jaxlift.attribute(fn, w, x, r, target=0, return_delta=True)
    gap = abs(float(c.sum()) - float(d.sum()))
    assert gap > 1e-4  # the rounding is really there: the check has teeth
    np.testing.assert_array_equal(np.asarray(c)[0, [0, 2]], 0)


def test_the_host_summary_counts_and_places_the_worst_pair_over_chunks():
    """The certificate's summary is made on the host from each chunk's per-pair gap and τ:
    a NaN gap fails with ratio inf, a zero gap under a zero bound passes, and the worst pair
    is placed over the whole call (chunk start + flat index over K pairs per input)."""
    from jaxlift import certificate
    first = {"gap": np.array([[0.0, 1e-9], [2e-9, 0.0]]), "bound": np.array([[0.0, 1e-8], [1e-8, 1.0]])}
    second = {"gap": np.array([[3e-8, np.nan], [0.0, 5e-9]]), "bound": np.array([[1e-8, 1.0], [1.0, 1e-8]])}
    ratio, failing = certificate.ratios(second["gap"], second["bound"])
    np.testing.assert_array_equal(failing, [True, True, False, False])
    assert np.isinf(ratio[1]) and ratio[0] == pytest.approx(3.0) and ratio[2] == 0.0
    assert certificate.failing_pairs(first) == 0 and certificate.failing_pairs(second) == 2
    summary = certificate.worst_on_host([first, second], starts=[0, 2], pairs_per_input=2)
    assert summary["failing"] == 2
    assert (summary["input"], summary["rest"]) == (2, 1)  # the NaN gap: chunk 2, input 0, ref 1
    assert summary["ratio"] == np.inf


def test_a_padded_last_chunk_counts_only_the_calls_pairs():
    """Chunks of 2 inputs over N = 3: the last chunk runs input 2 twice (padded to the chunks'
    shape); the refusal counts the call's N × K pairs and places the worst among them."""
    fn, params, shape = zoo_model("mlp")
    x, refs = zoo.inputs_and_refs(11, shape, n=3, k=2)
    with pytest.raises(CompletenessError) as whole:
        jaxlift.attribute(fn, params, x, refs, target=1, mode=OFF)
    with pytest.raises(CompletenessError) as chunked:
        jaxlift.attribute(fn, params, x, refs, target=1, mode=OFF, batch_size=4)
    assert whole.value.pairs == chunked.value.pairs == 6
    assert "6 of 6 (input, reference) pair(s)" in str(chunked.value)
    assert chunked.value.worst == whole.value.worst and chunked.value.worst[0] < 3
    from jaxlift import certificate
    padded = {"gap": np.array([[1.0, 0.0], [2.0, 0.0]]), "bound": np.ones((2, 2)) * 0.5}
    summary = certificate.worst_on_host([padded], starts=[2], pairs_per_input=2, n=3)
    assert summary["failing"] == 1 and summary["input"] == 2 and summary["gap"] == 1.0
