"""Output and weight shapes of Keras layers from their options alone — no JAX, no Flax.

``jaxlift info`` prints each layer's output shape and parameter count; working them out by
tracing the model through Flax costs the import of JAX and a compile per layer. Here each
supported layer class has a small shape rule::

    out_shape, weights = layer_shapes("Conv2D", opts, [(None, 28, 28, 1)])
    # (None, 13, 13, 8), {"params": {"kernel": (4, 4, 1, 8), "bias": (8,)}}

Shapes include the batch dimension (``None``); any dimension the config leaves open is
``None`` and stays ``None`` through the layers it reaches. ``opts`` are the normalised
options of ``keras_config.OPTION_PARSERS`` (a layer's ``LayerSpec.opts``). A rule that cannot
apply (an input of the wrong rank, shapes a merge cannot join, a window larger than its
input) raises ``ValueError`` saying why; ``keras_config.infer_shapes`` adds the file and the
layer. tests/test_keras_shapes.py checks every rule against the traced Flax model.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

from jaxlift.errors import InputValueError
from jaxlift.models.graph import NOOP_LAYERS, RNN_KINDS

__all__ = ["Shape", "Weights", "SHAPE_RULES", "layer_shapes", "window_out", "rnn_weights"]

Shape = tuple  # of int | None, batch dimension first
Weights = dict  # {collection: {weight name: shape}}, collections without weights left out
Rule = Callable[[Mapping, Sequence[Shape]], tuple[Shape, Weights]]


# --------------------------------------------------------------------------- helpers


def _one(shapes: Sequence[Shape]) -> Shape:
    if len(shapes) != 1:
        raise InputValueError(f"takes one input, got {len(shapes)}")
    return tuple(shapes[0])


def _known(d: int | None, what: str) -> int:
    if d is None:
        raise InputValueError(f"needs a known {what} (the config leaves it open)")
    return int(d)


def _spatial_axes(ndim: int, data_format: str) -> tuple[int, ...]:
    return tuple(range(1, ndim - 1)) if data_format == "channels_last" else tuple(range(2, ndim))


def _channel_axis(ndim: int, data_format: str) -> int:
    return ndim - 1 if data_format == "channels_last" else 1


def _rank_check(x: Shape, rank: int) -> None:
    if len(x) != rank + 2:
        raise InputValueError(f"expects inputs of rank {rank + 2} (batch, {rank} spatial, channels), "
                              f"got shape {_fmt(x)}")


def _fmt(s: Shape) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in s) + ")"


def _weights(**collections: dict) -> Weights:
    return {c: w for c, w in collections.items() if w}


def window_out(n: int | None, k: int, s: int, padding: str, d: int = 1) -> int | None:
    """Length of one spatial axis after a window ``k`` (dilation ``d``) with stride ``s``:
    ``ceil(n / s)`` for "same" and "causal", ``(n − (k−1)·d − 1) // s + 1`` for "valid";
    ``ValueError`` when the window does not fit."""
    if n is None:
        return None
    if padding in ("same", "causal"):
        return -(-n // s)
    eff = (k - 1) * d + 1
    if n < eff:
        raise InputValueError(f"a window of {eff} does not fit an axis of length {n}")
    return (n - eff) // s + 1


def _seq(v: Sequence[int], r: int) -> tuple[int, ...]:
    return tuple(v) * r if len(v) == 1 else tuple(v)


# --------------------------------------------------------------------------- rules


def _dense(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    x = _one(shapes)
    n_in = _known(x[-1], "last dimension")
    w = {"kernel": (n_in, o["units"])}
    if o["use_bias"]:
        w["bias"] = (o["units"],)
    return (*x[:-1], o["units"]), _weights(params=w)


def _conv(rank: int) -> Rule:
    def rule(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
        x = _one(shapes)
        _rank_check(x, rank)
        ks, st, dl = (_seq(o[k], rank) for k in ("kernel_size", "strides", "dilation_rate"))
        out = list(x)
        for a, k, s, d in zip(_spatial_axes(len(x), o["data_format"]), ks, st, dl):
            out[a] = window_out(x[a], k, s, o["padding"], d)
        ch = _channel_axis(len(x), o["data_format"])
        c_in = _known(x[ch], "channel count")
        if c_in % o["groups"]:
            raise InputValueError(f"{c_in} input channels do not split into {o['groups']} groups")
        out[ch] = o["filters"]
        w = {"kernel": (*ks, c_in // o["groups"], o["filters"])}
        if o["use_bias"]:
            w["bias"] = (o["filters"],)
        return tuple(out), _weights(params=w)
    return rule


def _pool(rank: int) -> Rule:
    def rule(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
        x = _one(shapes)
        _rank_check(x, rank)
        pool = _seq(o["pool_size"], rank)
        st = pool if o["strides"] is None else _seq(o["strides"], rank)
        out = list(x)
        for a, k, s in zip(_spatial_axes(len(x), o["data_format"]), pool, st):
            out[a] = window_out(x[a], k, s, o["padding"])
        return tuple(out), {}
    return rule


def _global(rank: int) -> Rule:
    def rule(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
        x = _one(shapes)
        _rank_check(x, rank)
        axes = _spatial_axes(len(x), o["data_format"])
        if o["keepdims"]:
            return tuple(1 if a in axes else d for a, d in enumerate(x)), {}
        return tuple(d for a, d in enumerate(x) if a not in axes), {}
    return rule


def _size(dims: Sequence[int | None]) -> int | None:
    return None if any(d is None for d in dims) else math.prod(dims)


def _flatten(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    x = _one(shapes)
    return (x[0], _size(x[1:])), {}


def _reshape(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    x = _one(shapes)
    target = tuple(o["target_shape"])
    if sum(d == -1 for d in target) > 1:
        raise InputValueError(f"target_shape {target} has more than one -1")
    size, rest = _size(x[1:]), math.prod(d for d in target if d != -1)
    if -1 in target:
        if size is None:
            return (x[0], *(None if d == -1 else d for d in target)), {}
        if rest == 0 or size % rest:
            raise InputValueError(f"cannot reshape {_fmt(x)} to {target}")
        return (x[0], *(size // rest if d == -1 else d for d in target)), {}
    if size is not None and size != rest:
        raise InputValueError(f"cannot reshape {_fmt(x)} ({size} values) to {target} ({rest})")
    return (x[0], *target), {}


def _permute(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    x = _one(shapes)
    dims = tuple(o["dims"])
    if sorted(dims) != list(range(1, len(x))):
        raise InputValueError(f"dims {dims} is not a permutation of the axes 1..{len(x) - 1}")
    return (x[0], *(x[d] for d in dims)), {}


def _same(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    return _one(shapes), {}


def _prelu(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    x = _one(shapes)
    alpha = list(x[1:])
    for a in o["shared_axes"] or ():
        alpha[a - 1] = 1
    if any(d is None for d in alpha):
        raise InputValueError("needs the non-shared input dimensions known (the config leaves "
                              "one open)")
    return x, _weights(params={"alpha": tuple(alpha)})


def _feature_shape(x: Shape, axis: Sequence[int]) -> tuple[int, ...]:
    axes = sorted(a % len(x) for a in axis)
    if 0 in axes:
        raise InputValueError(f"axis {tuple(axis)} includes the batch axis")
    return tuple(_known(x[a], f"size of axis {a}") for a in axes)


def _batch_norm(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    x = _one(shapes)
    f = tuple(_known(x[a % len(x)], f"size of axis {a}") for a in o["axis"])
    params = {**({"gamma": f} if o["scale"] else {}), **({"beta": f} if o["center"] else {})}
    return x, _weights(params=params, batch_stats={"moving_mean": f, "moving_variance": f})


def _layer_norm(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    x = _one(shapes)
    f = _feature_shape(x, o["axis"])
    params = {**({"gamma": f} if o["scale"] else {}), **({"beta": f} if o["center"] else {})}
    return x, _weights(params=params)


def _pad(key: str, sign: int) -> Rule:
    def rule(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
        x = _one(shapes)
        pairs = o[key]
        out = list(x)
        axes = _spatial_axes(len(x), o.get("data_format", "channels_last"))
        if len(axes) != len(pairs):
            raise InputValueError(f"expects {len(pairs)} spatial axes, got shape {_fmt(x)}")
        for a, (lo, hi) in zip(axes, pairs):
            if x[a] is not None:
                out[a] = x[a] + sign * (lo + hi)
                if out[a] < 1:
                    raise InputValueError(f"cropping {(lo, hi)} leaves nothing of an axis of "
                                          f"length {x[a]}")
        return tuple(out), {}
    return rule


def _broadcast(a: int | None, b: int | None) -> int | None:
    if a == b or b == 1:
        return a
    if a == 1:
        return b
    if a is None or b is None:
        return a if b is None else b
    raise InputValueError(f"cannot join dimensions {a} and {b}")


def _several_of_one_rank(shapes: Sequence[Shape], verb: str) -> None:
    """Refuse fewer than two inputs, or inputs of different ranks, to a merging layer."""
    if len(shapes) < 2:
        raise InputValueError(f"{verb} two or more inputs, got {len(shapes)}")
    if len({len(s) for s in shapes}) != 1:
        raise InputValueError(f"inputs of different ranks: {', '.join(map(_fmt, shapes))}")


def _merge(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    _several_of_one_rank(shapes, "merges")
    out = tuple(shapes[0])
    for s in shapes[1:]:
        out = tuple(_broadcast(a, b) for a, b in zip(out, s))
    return out, {}


def _concatenate(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    _several_of_one_rank(shapes, "concatenates")
    n = len(shapes[0])
    axis = o["axis"] % n
    out = []
    for a in range(n):
        dims = [s[a] for s in shapes]
        if a == axis:
            out.append(None if None in dims else sum(dims))
        elif len({d for d in dims if d is not None}) > 1:
            raise InputValueError(f"inputs differ off the concatenation axis: "
                                  f"{', '.join(map(_fmt, shapes))}")
        else:
            out.append(next((d for d in dims if d is not None), None))
    return tuple(out), {}


def _embedding(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    x = _one(shapes)
    return (*x, o["output_dim"]), _weights(
        params={"embeddings": (o["input_dim"], o["output_dim"])})


def rnn_weights(kind: str, n_in: int, o: Mapping, prefix: str = "") -> dict[str, tuple]:
    """Keras's weight shapes of a ``SimpleRNN``/``LSTM``/``GRU`` with ``n_in`` input features
    (names prefixed, as ``Bidirectional`` stores them)."""
    g = {"SimpleRNN": 1, "LSTM": 4, "GRU": 3}[kind]
    u = o["units"]
    w = {"kernel": (n_in, g * u), "recurrent_kernel": (u, g * u)}
    if o["use_bias"]:
        w["bias"] = (2, g * u) if kind == "GRU" and o.get("reset_after", True) else (g * u,)
    return {prefix + k: s for k, s in w.items()}


def _sequence_input(x: Shape) -> int:
    if len(x) != 3:
        raise InputValueError(f"expects (batch, time, features) inputs, got shape {_fmt(x)}")
    return _known(x[2], "feature count")


def _rnn(kind: str) -> Rule:
    def rule(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
        x = _one(shapes)
        n_in = _sequence_input(x)
        out = (x[0], x[1], o["units"]) if o["return_sequences"] else (x[0], o["units"])
        return out, _weights(params=rnn_weights(kind, n_in, o))
    return rule


def _bidirectional(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    x = _one(shapes)
    n_in = _sequence_input(x)
    (fk, fo), (bk, bo) = ((k, dict(v)) for k, v in (o["forward"], o["backward"]))
    if o["merge_mode"] == "concat":
        units = fo["units"] + bo["units"]
    elif fo["units"] != bo["units"]:
        raise InputValueError(f"merge_mode {o['merge_mode']!r} needs equal units, got "
                              f"{fo['units']} and {bo['units']}")
    else:
        units = fo["units"]
    out = (x[0], x[1], units) if fo["return_sequences"] else (x[0], units)
    return out, _weights(params={**rnn_weights(fk, n_in, fo, "forward_"),
                                 **rnn_weights(bk, n_in, bo, "backward_")})


def _attention(o: Mapping, shapes: Sequence[Shape]) -> tuple[Shape, Weights]:
    if not 2 <= len(shapes) <= 3:
        raise InputValueError(f"takes query, value and optionally key, got {len(shapes)} input(s)")
    query, value = shapes[0], shapes[1]
    key = shapes[2] if len(shapes) == 3 else value
    for what, s in (("query", query), ("value", value), ("key", key)):
        if len(s) != 3:
            raise InputValueError(f"takes (batch, time, features) inputs here, got {what} "
                                  f"{_fmt(s)}")
    d_q, d_v, d_k = (_known(s[2], f"{what} feature count")
                     for what, s in (("query", query), ("value", value), ("key", key)))
    h, kd, vd = o["num_heads"], o["key_dim"], o["value_dim"]
    d_out = o["output_dim"] or d_q
    w = {}
    for part, d_in, size in (("query", d_q, kd), ("key", d_k, kd), ("value", d_v, vd)):
        w[f"{part}_kernel"] = (d_in, h, size)
        if o["use_bias"]:
            w[f"{part}_bias"] = (h, size)
    w["output_kernel"] = (h, vd, d_out)
    if o["use_bias"]:
        w["output_bias"] = (d_out,)
    return (query[0], query[1], d_out), _weights(params=w)


SHAPE_RULES: dict[str, Rule] = {
    "Dense": _dense,
    **{f"Conv{r}D": _conv(r) for r in (1, 2, 3)},
    **{f"{kind}Pooling{r}D": _pool(r) for kind in ("Max", "Average") for r in (1, 2, 3)},
    **{f"Global{kind}Pooling{r}D": _global(r) for kind in ("Max", "Average") for r in (1, 2, 3)},
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Permute": _permute,
    **{k: _same for k in NOOP_LAYERS},
    **{k: _same for k in ("Activation", "Softmax", "ReLU", "LeakyReLU", "ELU")},
    "PReLU": _prelu,
    "BatchNormalization": _batch_norm,
    **{f"ZeroPadding{r}D": _pad("padding", +1) for r in (1, 2, 3)},
    **{f"Cropping{r}D": _pad("cropping", -1) for r in (1, 2, 3)},
    **{k: _merge for k in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")},
    "Concatenate": _concatenate,
    "Embedding": _embedding,
    **{k: _rnn(k) for k in RNN_KINDS},
    "Bidirectional": _bidirectional,
    "LayerNormalization": _layer_norm,
    "MultiHeadAttention": _attention,
}
"""Keras class name → ``(options, input shapes) -> (output shape, weight shapes)``."""


def layer_shapes(class_name: str, opts: Mapping, in_shapes: Sequence[Shape]
                 ) -> tuple[Shape, Weights]:
    """The output shape and weight shapes of one layer call; ``ValueError`` saying why when
    the layer cannot take these inputs, ``KeyError`` for a class without a rule."""
    if class_name not in SHAPE_RULES:
        raise KeyError(f"no shape rule for layer class {class_name!r}")
    if class_name == "Subtract" and len(in_shapes) != 2:
        raise InputValueError(f"Subtract takes exactly 2 inputs, got {len(in_shapes)}")
    out, weights = SHAPE_RULES[class_name](opts, [tuple(s) for s in in_shapes])
    return tuple(out), weights
