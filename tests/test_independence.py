"""The proof that fn keeps the examples of a batch apart (jaxlift/independence.py,
docs/design.md §20.7): proven where the jaxpr says so plainly, never where fn mixes them (those
keep the in-program comparison, which refuses them), and a proven call holds no batch of two."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlift
from jaxlift import independence

W = jax.random.normal(jax.random.key(0), (6, 4))


def struct(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def proven(fn, example=None, params=W):
    return independence.proven_independent(fn, params, struct(6) if example is None else example)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):  # (B, L, F): attention over the sequence, a causal mask, layernorm
        h = nn.LayerNorm()(x)
        mask = nn.make_causal_mask(jnp.ones(x.shape[:-1]))
        h = x + nn.MultiHeadDotProductAttention(num_heads=2)(h, h, mask=mask)
        return nn.Dense(3)(nn.gelu(nn.Dense(8)(h)))[:, -1]


class Recurrent(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2)(nn.RNN(nn.LSTMCell(5))(x)[:, -1])


class Conv(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        return nn.Dense(3)(h.reshape(h.shape[0], -1))


@pytest.mark.parametrize("module,example", [
    (Block(), struct(5, 4)), (Recurrent(), struct(7, 3)), (Conv(), struct(12, 12, 1)),
], ids=["attention", "lstm", "conv"])
def test_models_that_keep_examples_apart_are_proven(module, example):
    params = module.init(jax.random.key(1), jnp.zeros((2,) + example.shape))
    assert independence.why_not_proven(module.apply, params, example) is None


def test_sorts_and_cumulative_sums_along_features_are_proven():
    def fn(p, x):
        return (jnp.sort(x, axis=1) + jnp.cumsum(x, axis=1)) @ p
    assert independence.why_not_proven(fn, W, struct(6)) is None


def test_token_models_with_embeddings_and_positions_are_proven():
    table = jax.random.normal(jax.random.key(2), (10, 4))
    pos = jax.random.normal(jax.random.key(3), (5, 4))

    def fn(p, ids):  # embedding gather, a position table broadcast, a token picked per row
        h = jnp.take(p[0], ids, axis=0) + p[1][jnp.arange(ids.shape[1])]
        return (h @ p[0].T)[:, 0]
    assert independence.why_not_proven(fn, (table, pos), jax.ShapeDtypeStruct((5,), jnp.int32)) \
        is None


MIXING = {
    "mean over the batch": lambda p, x: (x - x.mean(0)) @ p,
    "sum over everything": lambda p, x: x @ p * jnp.sum(x),
    "the first example": lambda p, x: (x - x[:1]) @ p,
    "roll over the batch": lambda p, x: jnp.roll(x, 1, axis=0) @ p,
    "attention across the batch": lambda p, x: jax.nn.softmax(x @ x.T) @ x @ p,
    "the row's position": lambda p, x: (x + jnp.arange(x.shape[0])[:, None]) @ p,
    "a flattened batch": lambda p, x: jnp.tanh(x.reshape(-1)).reshape(x.shape) @ p,
    "a cumulative sum over the batch": lambda p, x: jnp.cumsum(x, axis=0) @ p,
    "a sort over the batch": lambda p, x: jnp.sort(x, axis=0) @ p,
    "a scan over the batch": lambda p, x: jax.lax.scan(lambda c, r: (c + r, c + r),
                                                     jnp.zeros(6), x)[1] @ p,
    "a branch on the data": lambda p, x: jax.lax.cond(x.sum() > 0, lambda: x, lambda: -x) @ p,
    "a loop on the data": lambda p, x: jax.lax.while_loop(lambda v: v.sum() < 10, lambda v: v + 1,
                                                          x) @ p,
    "a batch-size branch": lambda p, x: (x if x.shape[0] == 1 else 2 * x) @ p,
    "the batch size as a number": lambda p, x: x * x.shape[0] @ p,
    "a sum over the batch's positions": lambda p, x: x * jnp.arange(x.shape[0]).sum() @ p,
    "copies of each example summed": lambda p, x: (x[:, None, :] * jnp.ones((1, x.shape[0], 1)))
    .sum(1) @ p,
    "the last of the batch's positions": lambda p, x: (
        x[:, None, :] * jnp.arange(x.shape[0])[None, :, None])[:, -1] @ p,
    "the best example": lambda p, x: x[jnp.argmax(x[:, 0])][None] * jnp.ones_like(x) @ p,
    "an outer product": lambda p, x: jnp.einsum("if,jf->ij", x @ p, x @ p),
}


@pytest.mark.parametrize("name", list(MIXING))
def test_functions_that_mix_or_may_mix_examples_are_not_proven(name):
    assert not proven(MIXING[name])


def test_batchnorm_in_training_mode_is_not_proven():
    bn = nn.BatchNorm(use_running_average=False)
    variables = bn.init(jax.random.key(0), jnp.ones((2, 6)))

    def fn(v, x):
        return bn.apply(v, x, mutable=["batch_stats"])[0]
    assert not proven(fn, params=variables)


def test_a_proven_call_holds_no_batch_of_two_and_settles():
    """The first call of a proven fn traces it at one example and at a symbolic batch, never at
    a batch of two, and the next call with these shapes is the one dispatch."""
    seen = []

    def fn(p, xb):
        seen.append(xb.shape[0])
        return jax.nn.relu(xb @ p) @ jnp.ones((4, 2))
    x = jax.random.normal(jax.random.key(4), (3, 6))
    first = jaxlift.attribute(fn, W, x, jnp.zeros((2, 6)), target=1)
    assert 2 not in seen and 1 in seen
    seen.clear()
    again = jaxlift.attribute(fn, W, x, jnp.zeros((2, 6)), target=1)
    assert seen == []  # the one-dispatch path: nothing traced
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))


def test_no_program_holds_the_comparison(monkeypatch):
    """jaxlift's programs return only their own checks (the finite flag, the certificate's gap
    and bound), proven fn or not: each constant of a comparison that never runs was one more
    output XLA stores with a kernel of its own (five on the MNIST CNN), and a comparison that
    does run is a program of its own (``targets.batch_comparison``): an unprovable fn is
    compared, once, and a mixing one refused."""
    from jaxlift import pipeline
    from jaxlift.methods import interpreted
    from jaxlift.rules.composites import COMPOSITES

    def checks_of(fn):
        run = interpreted.compiled_program(fn, 1, COMPOSITES["rescale"], "contributions", None,
                                           False, True, "default", True, True)
        x, refs = jnp.ones((3, 6)), jnp.zeros((2, 6))
        return set(jax.eval_shape(run.jitted, W, x, refs)[2])

    def kept_apart(p, xb):
        return jax.nn.relu(xb @ p) @ jnp.ones((4, 2))
    assert checks_of(kept_apart) == checks_of(MIXING["mean over the batch"]) == {
        "finite", "gap", "bound"}

    compared = []
    real_compare = pipeline.batch_comparison
    monkeypatch.setattr(pipeline, "batch_comparison",
                        lambda *a: compared.append(a[0]) or real_compare(*a))
    x = jax.random.normal(jax.random.key(6), (3, 6))

    def make_unprovable():
        def unprovable(p, xb):  # keeps the examples apart, but through a cumulative sum over
            h = jnp.cumsum(jax.nn.relu(xb @ p), axis=0)  # the batch, which the proof does not
            return h - jnp.concatenate([jnp.zeros((1, 4)), h[:-1]])  # follow
        return unprovable
    unprovable = make_unprovable()
    for fn in (kept_apart, unprovable, unprovable):
        jaxlift.attribute(fn, W, x, jnp.zeros((2, 6)), target=1)
    assert compared == [unprovable]  # settled by the first comparison
    # each input's predicted class, and one input against its reference (a fn of its own each,
    # so that nothing has settled): compared, not refused
    for xs, target in ((x[:2] + 1, "pred"), (x[:1] + 2, "pred"), (x[:1] + 3, 0)):
        jaxlift.attribute(make_unprovable(), W, xs, jnp.zeros((2, 6)), target=target)
    assert len(compared) == 4
    with pytest.raises(ValueError, match="must not mix examples"):
        jaxlift.attribute(MIXING["mean over the batch"], W, x + 1, jnp.zeros((2, 6)), target=1)


def test_a_mixing_fn_is_still_refused():
    x = jax.random.normal(jax.random.key(5), (3, 6))
    with pytest.raises(ValueError, match="must not mix examples"):
        jaxlift.attribute(MIXING["mean over the batch"], W, x, jnp.zeros((2, 6)), target=1)


def test_hugging_face_bert_and_gpt2_are_proven():
    """Library models taken as they are: BERT with an attention mask, GPT-2 (whose position ids
    are broadcast to the batch: an equation at a batch, none at one example)."""
    transformers = pytest.importorskip("transformers")
    bert = transformers.FlaxBertForSequenceClassification(transformers.BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16), seed=0)
    gpt2 = transformers.FlaxGPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16), seed=0)
    ids = jax.ShapeDtypeStruct((8,), jnp.int32)

    def bert_fn(p, x):
        return bert(input_ids=x["ids"], attention_mask=x["mask"], params=p).logits

    def gpt2_fn(p, x):
        return gpt2(input_ids=x, params=p).logits[:, -1]
    assert independence.why_not_proven(bert_fn, bert.params, {"ids": ids, "mask": ids}) is None
    assert independence.why_not_proven(gpt2_fn, gpt2.params, ids) is None
