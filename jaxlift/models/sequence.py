"""Flax linen layers for sequences, with Keras 3's semantics and weight layouts.

Shapes follow Keras: sequences are (N, T, F) (batch, time, features). Every recurrent layer
runs its steps as one ``jax.lax.scan`` over time (never a Python unroll), so its jaxpr — and
its compile time — does not grow with T, and jaxlift's ``scan`` rule explains it.

Weights (Keras's names and layouts, so ``.h5`` weights load as they are; U = units):

- ``Embedding``: ``embeddings`` (input_dim, output_dim)
- ``SimpleRNN``: ``kernel`` (F, U), ``recurrent_kernel`` (U, U), ``bias`` (U,)
- ``LSTM``: ``kernel`` (F, 4U), ``recurrent_kernel`` (U, 4U), ``bias`` (4U,); gates i, f, c, o
- ``GRU``: ``kernel`` (F, 3U), ``recurrent_kernel`` (U, 3U), ``bias`` (2, 3U) with
  ``reset_after`` (input bias, recurrent bias), else (3U,); gates z, r, h
- ``Bidirectional``: the wrapped layer's weights twice, prefixed ``forward_`` and ``backward_``
- ``LayerNorm``: ``gamma``, ``beta`` (the normalised axes' shape)
- ``MultiHeadAttention``: ``{query,key,value}_kernel`` (D, H, K), ``{query,key,value}_bias``
  (H, K); ``output_kernel`` (H, V, D_out), ``output_bias`` (D_out,)

Sigmoid gates use ``jax.nn.sigmoid`` (the ``logistic`` primitive), which jaxlift's gating rule
recognises as a gate.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxlift.errors import InputValueError
from jaxlift.models.graph import MERGE_MODES, RNN_KINDS  # noqa: F401  (re-exported)
from jaxlift.models.layers import get_activation

Array = jax.Array
Params = Mapping[str, Array]


# --------------------------------------------------------------------------- cells (pure)


def simple_rnn_step(p: Params, act: Callable, xw: Array, h: Array) -> Array:
    """``h' = act(xw + h @ recurrent_kernel)``, ``xw = x @ kernel + bias`` precomputed.
    (N, U), (N, U) → (N, U)."""
    return act(xw + jnp.dot(h, p["recurrent_kernel"]))


def lstm_step(p: Params, act: Callable, rec: Callable, xw: Array, carry: tuple[Array, Array]
              ) -> tuple[Array, Array]:
    """Keras's LSTM cell, gates in kernel order i, f, c, o::

        z = xw + h @ recurrent_kernel            (xw = x @ kernel + bias; (N, 4U))
        i, f, o = rec(z_i), rec(z_f), rec(z_o)
        c' = f · c + i · act(z_c);   h' = o · act(c')

    Returns ``(h', c')``."""
    h, c = carry
    z = xw + jnp.dot(h, p["recurrent_kernel"])
    zi, zf, zc, zo = jnp.split(z, 4, axis=-1)
    c = rec(zf) * c + rec(zi) * act(zc)
    return rec(zo) * act(c), c


def gru_step(p: Params, act: Callable, rec: Callable, reset_after: bool, xw: Array, h: Array
             ) -> Array:
    """Keras's GRU cell, gates in kernel order z (update), r (reset), h (candidate)::

        xw = x @ kernel + input_bias                        (N, 3U), precomputed
        reset_after:  u = h @ recurrent_kernel + recurrent_bias
                      z = rec(xw_z + u_z), r = rec(xw_r + u_r), ĥ = act(xw_h + r · u_h)
        else:         u = h @ recurrent_kernel[:, :2U]
                      z = rec(xw_z + u_z), r = rec(xw_r + u_r),
                      ĥ = act(xw_h + (r · h) @ recurrent_kernel[:, 2U:])
        h' = z · h + (1 − z) · ĥ
    """
    rk = p["recurrent_kernel"]
    units = rk.shape[0]
    xz, xr, xh = jnp.split(xw, 3, axis=-1)
    if reset_after:
        u = jnp.dot(h, rk)
        if "bias" in p:
            u = u + p["bias"][1]
        uz, ur, uh = jnp.split(u, 3, axis=-1)
        z, r = rec(xz + uz), rec(xr + ur)
        hh = act(xh + r * uh)
    else:
        u = jnp.dot(h, rk[:, :2 * units])
        uz, ur = jnp.split(u, 2, axis=-1)
        z, r = rec(xz + uz), rec(xr + ur)
        hh = act(xh + jnp.dot(r * h, rk[:, 2 * units:]))
    return z * h + (1.0 - z) * hh


def input_projection(kind: str, p: Params, x: Array, reset_after: bool = True) -> Array:
    """``x @ kernel + (input) bias`` for all steps at once: (N, T, F) → (N, T, G·U)."""
    xw = jnp.dot(x, p["kernel"])
    if "bias" in p:
        bias = p["bias"][0] if kind == "GRU" and reset_after else p["bias"]
        xw = xw + bias
    return xw


def run_rnn(kind: str, p: Params, x: Array, *, activation: str = "tanh",
            recurrent_activation: str = "sigmoid", reset_after: bool = True,
            go_backwards: bool = False, return_sequences: bool = False) -> Array:
    """A Keras recurrent layer over a whole sequence as one ``lax.scan``.

    (N, T, F) → (N, T, U) with ``return_sequences`` (in processing order: reversed in time
    when ``go_backwards``, as Keras returns it), else the last state (N, U). The state starts
    at zeros.
    """
    act = get_activation(activation)
    rec = get_activation(recurrent_activation)
    units = p["recurrent_kernel"].shape[0]
    xw = jnp.swapaxes(input_projection(kind, p, x, reset_after), 0, 1)  # (T, N, G·U)
    if go_backwards:
        xw = jnp.flip(xw, axis=0)
    h0 = jnp.zeros((x.shape[0], units), xw.dtype)
    if kind == "LSTM":
        def step(carry, xt):
            h, c = lstm_step(p, act, rec, xt, carry)
            return (h, c), h
        carry0 = (h0, h0)
    elif kind == "GRU":
        def step(carry, xt):
            h = gru_step(p, act, rec, reset_after, xt, carry)
            return h, h
        carry0 = h0
    elif kind == "SimpleRNN":
        def step(carry, xt):
            h = simple_rnn_step(p, act, xt, carry)
            return h, h
        carry0 = h0
    else:
        raise InputValueError(f"unknown recurrent layer kind {kind!r} (known: {', '.join(RNN_KINDS)})")
    _, hs = lax.scan(step, carry0, xw)
    return jnp.swapaxes(hs, 0, 1) if return_sequences else hs[-1]


def rnn_weight_shapes(kind: str, n_in: int, units: int, use_bias: bool, reset_after: bool
                      ) -> dict[str, tuple[int, ...]]:
    """Keras's weight shapes of a recurrent layer with ``n_in`` input features."""
    g = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[kind]
    shapes = {"kernel": (n_in, g * units), "recurrent_kernel": (units, g * units)}
    if use_bias:
        shapes["bias"] = (2, g * units) if kind == "GRU" and reset_after else (g * units,)
    return shapes


def _rnn_params(module: nn.Module, prefix: str, kind: str, n_in: int, o: Mapping
                ) -> dict[str, Array]:
    shapes = rnn_weight_shapes(kind, n_in, o["units"], o["use_bias"], o.get("reset_after", True))
    init = {"kernel": nn.initializers.glorot_uniform(),
            "recurrent_kernel": nn.initializers.orthogonal(), "bias": nn.initializers.zeros}
    return {k: module.param(prefix + k, init[k], s) for k, s in shapes.items()}


def _rnn_kwargs(o: Mapping) -> dict:
    return {"activation": o["activation"],
            "recurrent_activation": o.get("recurrent_activation", "sigmoid"),
            "reset_after": o.get("reset_after", True), "go_backwards": o["go_backwards"],
            "return_sequences": o["return_sequences"]}


# --------------------------------------------------------------------------- modules


class Embedding(nn.Module):
    """Keras ``Embedding``: integer ids (N, …) → ``embeddings[ids]`` (N, …, output_dim).
    Float ids are cast to int32 first, as Keras does."""

    input_dim: int
    output_dim: int

    @nn.compact
    def __call__(self, ids: Array, *, logits: bool = False, train: bool = False) -> Array:
        table = self.param("embeddings", nn.initializers.uniform(0.1),
                           (self.input_dim, self.output_dim))
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            ids = ids.astype(jnp.int32)
        return jnp.take(table, ids, axis=0)


class Recurrent(nn.Module):
    """Keras ``SimpleRNN`` / ``LSTM`` / ``GRU`` (``kind``) at inference; see :func:`run_rnn`.
    ``options`` holds units, activation, recurrent_activation, use_bias, reset_after (GRU),
    go_backwards, return_sequences (sorted (key, value) pairs)."""

    kind: str
    options: tuple

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        o = dict(self.options)
        p = _rnn_params(self, "", self.kind, x.shape[-1], o)
        return run_rnn(self.kind, p, x, **_rnn_kwargs(o))


class Bidirectional(nn.Module):
    """Keras ``Bidirectional`` around a recurrent layer: ``y`` = forward layer on x, ``y'`` =
    backward layer (``go_backwards``) on x, flipped back in time when it returns sequences;
    merged by ``merge_mode``: concat (on features), sum, mul or ave ((y + y')/2).
    ``forward``/``backward``: (kind, options) of the two wrapped layers."""

    forward: tuple
    backward: tuple
    merge_mode: str = "concat"

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        outs = []
        for prefix, (kind, options) in (("forward_", self.forward), ("backward_", self.backward)):
            o = dict(options)
            p = _rnn_params(self, prefix, kind, x.shape[-1], o)
            outs.append(run_rnn(kind, p, x, **_rnn_kwargs(o)))
        y, y_rev = outs
        if dict(self.backward[1])["return_sequences"]:
            y_rev = jnp.flip(y_rev, axis=1)
        if self.merge_mode == "concat":
            return jnp.concatenate([y, y_rev], axis=-1)
        if self.merge_mode == "sum":
            return y + y_rev
        if self.merge_mode == "mul":
            return y * y_rev
        if self.merge_mode == "ave":
            return (y + y_rev) / 2.0
        raise InputValueError(f"merge_mode {self.merge_mode!r} is not supported "
                              f"(supported: {', '.join(MERGE_MODES)})")


class LayerNorm(nn.Module):
    """Keras ``LayerNormalization`` over ``axis``: with mean μ and variance σ² over those axes,
    ``y = x · a + (β − μ · a)``, ``a = γ / sqrt(σ² + ε)``; with ``rms_scaling`` (Keras 3's
    formula, which also uses the variance) ``y = x · γ / sqrt(σ² + ε)``. Same shape out."""

    axis: tuple[int, ...] = (-1,)
    epsilon: float = 1e-3
    center: bool = True
    scale: bool = True
    rms_scaling: bool = False

    @nn.compact
    def __call__(self, x: Array, *, logits: bool = False, train: bool = False) -> Array:
        axes = tuple(sorted(a % x.ndim for a in self.axis))
        shape = tuple(x.shape[a] for a in axes)
        bshape = tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim))
        var = jnp.var(x, axis=axes, keepdims=True)
        inv = lax.rsqrt(var + self.epsilon)
        gamma = self.param("gamma", nn.initializers.ones, shape).reshape(bshape) \
            if self.scale else None
        if self.rms_scaling:
            y = x * inv
            return y if gamma is None else y * gamma
        if gamma is not None:
            inv = inv * gamma
        res = -jnp.mean(x, axis=axes, keepdims=True) * inv
        if self.center:
            res = res + self.param("beta", nn.initializers.zeros, shape).reshape(bshape)
        return x * inv + res


class MultiHeadAttention(nn.Module):
    """Keras ``MultiHeadAttention`` on (N, T, D) queries and (N, S, D') values (keys default to
    the values), attention over the time axis::

        q = query @ Wq + bq  (N, T, H, K);  k = key @ Wk + bk,  v = value @ Wv + bv  (N, S, H, ·)
        A = softmax_s(q · k / sqrt(K))  (N, H, T, S)   (causal: s > t masked out)
        y = Σ_h (A v)_h @ Wo[h] + bo   (N, T, D_out)
    """

    num_heads: int
    key_dim: int
    value_dim: int
    output_dim: int | None = None
    use_bias: bool = True
    use_causal_mask: bool = False

    def _proj(self, name: str, x: Array, size: int) -> Array:
        w = self.param(f"{name}_kernel", nn.initializers.glorot_uniform(),
                       (x.shape[-1], self.num_heads, size))
        y = jnp.einsum("ntd,dhk->nthk", x, w)
        if self.use_bias:
            y = y + self.param(f"{name}_bias", nn.initializers.zeros, (self.num_heads, size))
        return y

    @nn.compact
    def __call__(self, query: Array, value: Array, key: Array | None = None, *,
                 logits: bool = False, train: bool = False) -> Array:
        if query.ndim != 3 or value.ndim != 3:
            raise InputValueError(f"MultiHeadAttention takes (N, T, D) inputs here, got "
                                  f"{query.shape} and {value.shape}")
        key = value if key is None else key
        q = self._proj("query", query, self.key_dim) * (1.0 / math.sqrt(float(self.key_dim)))
        k = self._proj("key", key, self.key_dim)
        v = self._proj("value", value, self.value_dim)
        scores = jnp.einsum("nshk,nthk->nhts", k, q)
        if self.use_causal_mask:
            t, s = scores.shape[-2:]
            allowed = jnp.arange(t)[:, None] >= jnp.arange(s)[None, :]
            scores = scores + jnp.where(allowed, 0.0, -1e9).astype(scores.dtype)
        attn = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("nhts,nshv->nthv", attn, v)
        d_out = self.output_dim or query.shape[-1]
        wo = self.param("output_kernel", nn.initializers.glorot_uniform(),
                        (self.num_heads, self.value_dim, d_out))
        y = jnp.einsum("nthv,hvo->nto", out, wo)
        if self.use_bias:
            y = y + self.param("output_bias", nn.initializers.zeros, (d_out,))
        return y
