"""The models of the first-call benchmark (benchmarks/bench_compile.py): each a function
``make() -> (fn, params, x, refs, target, layer)`` with 16 inputs × 4 references by default.

* ``mnist``: the seeds' MNIST CNN (trained weights when experiments/results/mnist_cnn.h5 is
  there), a Flax linen module;
* ``cats_dogs``: the cats-vs-dogs CNN's architecture (256×256×1; seeded weights, or the real
  Keras file when ../shared/data/catsordogs/model.h5 is there: ``benchmarks.models.CATS``);
* ``decoder``: a 2-block decoder transformer on token ids (causal mask, LayerNorm, GELU MLP),
  explained at its embeddings (``layer="emb"``), target the next token's logit;
* ``lstm``: ``nn.RNN(nn.LSTMCell)`` over T = 100 steps, a dense head;
* ``bert``: a BERT-like encoder (2 blocks) with an attention mask passed beside the ids, held
  fixed per example (``jaxlift.references.hold``), explained at the word embeddings.
"""
from __future__ import annotations


import jax
import jax.numpy as jnp
import flax.linen as nn

import jaxlift

N, K = 16, 4


def mnist():
    from benchmarks.models import mnist_model
    fn, variables, _ = mnist_model()
    x = jax.random.uniform(jax.random.PRNGKey(1), (N, 28, 28, 1))
    refs = jnp.zeros((K, 28, 28, 1)) + jnp.linspace(0, 0.3, K)[:, None, None, None]
    return fn, variables, x, refs, 3, None


def cats_dogs():
    from benchmarks.models import cats_model
    fn, variables, _ = cats_model(seeded_if_missing=True)
    x = jax.random.uniform(jax.random.PRNGKey(1), (N // 4, 256, 256, 1))
    refs = jnp.zeros((K // 2, 256, 256, 1)) + jnp.linspace(0, 0.3, K // 2)[:, None, None, None]
    return fn, variables, x, refs, 0, None


class Block(nn.Module):
    width: int
    heads: int
    causal: bool

    @nn.compact
    def __call__(self, h, mask=None):
        a = nn.LayerNorm()(h)
        if self.causal:
            mask = nn.make_causal_mask(jnp.ones(h.shape[:-1]))
        elif mask is not None:
            mask = nn.make_attention_mask(mask, mask)
        h = h + nn.MultiHeadDotProductAttention(num_heads=self.heads)(a, a, mask=mask)
        a = nn.LayerNorm()(h)
        return h + nn.Dense(self.width)(nn.gelu(nn.Dense(2 * self.width)(a)))


class Decoder(nn.Module):
    vocab: int = 64
    width: int = 32
    length: int = 16

    @nn.compact
    def __call__(self, ids):
        h = nn.Embed(self.vocab, self.width)(ids)
        h = jaxlift.layer(h + self.param("pos", nn.initializers.normal(0.02),
                                         (self.length, self.width)), "emb")
        for _ in range(2):
            h = Block(self.width, 4, True)(h)
        return nn.Dense(self.vocab)(nn.LayerNorm()(h))[:, -1]  # the next token's logits


def decoder():
    model = Decoder()
    ids = jax.random.randint(jax.random.PRNGKey(1), (N, 16), 1, 64)
    params = model.init(jax.random.PRNGKey(0), ids)
    return model.apply, params, ids, jnp.zeros((K, 16), ids.dtype), 5, "emb"


class LSTMClassifier(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.RNN(nn.LSTMCell(32))(x)
        return nn.Dense(4)(h[:, -1])


def lstm():
    model = LSTMClassifier()
    x = jax.random.normal(jax.random.PRNGKey(1), (N, 100, 8))
    params = model.init(jax.random.PRNGKey(0), x[:1])
    return model.apply, params, x, jnp.zeros((K, 100, 8)), 1, None


class Encoder(nn.Module):
    vocab: int = 64
    width: int = 32

    @nn.compact
    def __call__(self, x):
        h = jaxlift.layer(nn.Embed(self.vocab, self.width)(x["ids"]), "emb")
        h = nn.LayerNorm()(h + self.param("pos", nn.initializers.normal(0.02),
                                          (x["ids"].shape[-1], self.width)))
        for _ in range(2):
            h = Block(self.width, 4, False)(h, x["mask"])
        return nn.Dense(2)(jnp.tanh(nn.Dense(self.width)(h[:, 0])))


def bert():
    model = Encoder()
    ids = jax.random.randint(jax.random.PRNGKey(1), (N, 16), 3, 64)
    mask = (jnp.arange(16)[None] < jax.random.randint(jax.random.PRNGKey(2), (N, 1), 6, 17))
    ids = jnp.where(mask, ids, 0)
    x = {"ids": ids, "mask": mask.astype(jnp.float32)}
    params = model.init(jax.random.PRNGKey(0), x)
    refs = jaxlift.references.hold(x, {"ids": jnp.zeros((K, 16), ids.dtype)}, keys=("mask",))
    return model.apply, params, x, refs, 1, "emb"


MODELS = {"mnist": mnist, "cats_dogs": cats_dogs, "decoder": decoder, "lstm": lstm,
          "bert": bert}
