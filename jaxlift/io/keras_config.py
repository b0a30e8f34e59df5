"""Keras model files, the format-independent part: config → ``ModelGraph``, weight order,
assignment to Flax variables, shape checks, the Keras 3 config written back, ``summarize``.

The readers of the two file formats sit beside this module: ``keras_h5`` (legacy HDF5,
Keras 2 and 3) and ``keras_v3`` (Keras 3's ``.keras`` zip archive); ``keras_files.load_keras``
picks one by the file's content. Each reader supplies the decoded model config, whether it
is a Keras 2 config, and the raw weights of each layer in Keras's order
(``{layer name: [(weight name, array), ...]}``); :func:`assign_variables` does the rest.

Any layer class, option or file defect that jaxlift cannot read raises ``KerasFormatError``
naming the file, and the layer (name and class) where there is one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from jaxlift.errors import JaxliftError
from jaxlift.io.keras_shapes import layer_shapes
from jaxlift.models.graph import (ACTIVATION_NAMES, MERGE_MODES, NOOP_LAYERS, RNN_KINDS,
                                  LayerSpec, ModelGraph, TensorRef, freeze)


__all__ = ["KerasFormatError", "parse_model_config", "layer_weights", "WEIGHT_ORDER",
           "SUPPORTED_LAYERS", "assign_variables", "flat_weights", "trace_shapes", "infer_shapes",
           "model_config",
           "summarize"]


class KerasFormatError(JaxliftError, ValueError):
    """A Keras file that jaxlift cannot read (or a model it cannot write) — the message names
    the file and, where there is one, the layer and its class."""


PathLike = str | os.PathLike

# --------------------------------------------------------------------------- small helpers


def existing_file(path: PathLike) -> Path:
    """``path`` as a ``Path``; ``FileNotFoundError`` if it is missing, ``KerasFormatError`` if
    it is not a regular file (a directory …)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such Keras file: {path}")
    if not p.is_file():
        raise KerasFormatError(f"{path}: not a file")
    return p


def locate(path: PathLike, spec: LayerSpec | None = None) -> str:
    """``FILE: layer 'NAME' (Class)`` (or just the file): where an error is, for messages."""
    return f"{path}: layer {spec.name!r} ({spec.class_name})" if spec else f"{path}"


def _tuple(v: Any, n: int, what: str, where: str) -> tuple[int, ...]:
    """An int or a list of ints → a tuple of ``n`` ints (a 1-list is repeated)."""
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    if isinstance(v, (list, tuple)) and len(v) in (1, n) and all(isinstance(i, int) for i in v):
        return tuple(int(i) for i in v) * (n if len(v) == 1 else 1)
    raise KerasFormatError(f"{where}: cannot read {what}={v!r} (expected an int or {n} ints)")


def _pairs(v: Any, n: int, what: str, where: str) -> tuple[tuple[int, int], ...]:
    """Keras's padding/cropping forms → ``n`` (before, after) pairs."""
    if isinstance(v, int):
        return ((v, v),) * n
    if isinstance(v, (list, tuple)):
        if n == 1 and len(v) == 2 and all(isinstance(i, int) for i in v):
            return ((int(v[0]), int(v[1])),)
        if len(v) == n and all(isinstance(i, int) for i in v):
            return tuple((int(i), int(i)) for i in v)
        if len(v) == n and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in v):
            return tuple((int(a), int(b)) for a, b in v)
    raise KerasFormatError(f"{where}: cannot read {what}={v!r}")


def _choice(cfg: Mapping, key: str, allowed: tuple, default: Any, where: str) -> Any:
    value = cfg.get(key, default)
    if value is None:
        value = default
    if value not in allowed:
        raise KerasFormatError(f"{where}: {key}={value!r} is not supported (supported: "
                               f"{', '.join(map(str, allowed))})")
    return value


def _activation(value: Any, keras2: bool, where: str) -> str:
    """A Keras activation entry (a name, or Keras 3's serialized-function dict) → our name."""
    name = value
    if isinstance(value, Mapping):
        cfg = value.get("config")
        name = cfg if isinstance(cfg, str) else value.get("registered_name") or value.get(
            "class_name")
    if name is None:
        name = "linear"
    if not isinstance(name, str) or name not in ACTIVATION_NAMES or name == "hard_sigmoid_keras2":
        known = ", ".join(a for a in sorted(ACTIVATION_NAMES) if a != "hard_sigmoid_keras2")
        raise KerasFormatError(f"{where}: activation {value!r} is not supported "
                               f"(supported: {known})")
    if name == "hard_sigmoid" and keras2:
        return "hard_sigmoid_keras2"
    return name


# --------------------------------------------------------------------------- config → options


def _rank(class_name: str) -> int:
    return int(class_name[-2])


def _data_format(cfg: Mapping, where: str) -> str:
    return _choice(cfg, "data_format", ("channels_last", "channels_first"), "channels_last",
                   where)


def _opt_dense(cfg, k2, w):
    return {"units": int(cfg["units"]), "activation": _activation(cfg.get("activation"), k2, w),
            "use_bias": bool(cfg.get("use_bias", True))}


def _opt_conv(cfg, k2, w, rank):
    pads = ("valid", "same", "causal") if rank == 1 else ("valid", "same")
    return {"filters": int(cfg["filters"]),
            "kernel_size": _tuple(cfg["kernel_size"], rank, "kernel_size", w),
            "strides": _tuple(cfg.get("strides", 1), rank, "strides", w),
            "padding": _choice(cfg, "padding", pads, "valid", w),
            "data_format": _data_format(cfg, w),
            "dilation_rate": _tuple(cfg.get("dilation_rate", 1), rank, "dilation_rate", w),
            "groups": int(cfg.get("groups", 1) or 1),
            "activation": _activation(cfg.get("activation"), k2, w),
            "use_bias": bool(cfg.get("use_bias", True))}


def _opt_pool(cfg, k2, w, rank):
    strides = cfg.get("strides")
    return {"pool_size": _tuple(cfg.get("pool_size", 2), rank, "pool_size", w),
            "strides": None if strides is None else _tuple(strides, rank, "strides", w),
            "padding": _choice(cfg, "padding", ("valid", "same"), "valid", w),
            "data_format": _data_format(cfg, w)}


def _opt_global(cfg, k2, w):
    return {"data_format": _data_format(cfg, w), "keepdims": bool(cfg.get("keepdims", False))}


def _opt_bn(cfg, k2, w):
    axis = cfg.get("axis", -1)
    axis = tuple(int(a) for a in axis) if isinstance(axis, (list, tuple)) else (int(axis),)
    for key in ("renorm",):
        if cfg.get(key):
            raise KerasFormatError(f"{w}: {key}=True is not supported")
    return {"axis": axis, "epsilon": float(cfg.get("epsilon", 1e-3)),
            "center": bool(cfg.get("center", True)), "scale": bool(cfg.get("scale", True))}


def _opt_relu(cfg, k2, w):
    mv = cfg.get("max_value")
    return {"max_value": None if mv is None else float(mv),
            "negative_slope": float(cfg.get("negative_slope", 0.0) or 0.0),
            "threshold": float(cfg.get("threshold", 0.0) or 0.0)}


def _opt_leaky(cfg, k2, w):
    slope = cfg.get("negative_slope", cfg.get("alpha", 0.3))
    return {"negative_slope": float(0.3 if slope is None else slope)}


def _opt_prelu(cfg, k2, w):
    sa = cfg.get("shared_axes")
    sa = None if sa is None else tuple(int(a) for a in ([sa] if isinstance(sa, int) else sa))
    return {"shared_axes": sa}


def _opt_pad(key, rank):
    def parse(cfg, k2, w):
        out = {key: _pairs(cfg.get(key, 1 if key == "padding" else 0), rank, key, w)}
        if rank > 1:
            out["data_format"] = _data_format(cfg, w)
        return out
    return parse


def _opt_softmax(cfg, k2, w):
    axis = cfg.get("axis", -1)
    return {"axis": tuple(axis) if isinstance(axis, list) else int(axis)}


def _refuse(cfg: Mapping, where: str, **harmless: Any) -> None:
    """Refuse options that change the model's math: each ``key`` must be absent, None or
    its ``harmless`` value."""
    for key, ok in harmless.items():
        value = cfg.get(key)
        if value is not None and value != ok:
            raise KerasFormatError(f"{where}: {key}={value!r} is not supported")


def _opt_embedding(cfg, k2, w):
    _refuse(cfg, w, mask_zero=False, lora_rank=None, quantization_config=None, sparse=False)
    return {"input_dim": int(cfg["input_dim"]), "output_dim": int(cfg["output_dim"])}


def _opt_rnn(kind: str) -> Callable:
    """Options of ``SimpleRNN``/``LSTM``/``GRU`` (dropouts and ``unroll`` do not change the
    inference math; state-carrying and mask-dependent options are refused)."""
    def parse(cfg, k2, w):
        _refuse(cfg, w, stateful=False, return_state=False, time_major=False)
        out = {"units": int(cfg["units"]),
               "activation": _activation(cfg.get("activation", "tanh"), k2, w),
               "use_bias": bool(cfg.get("use_bias", True)),
               "go_backwards": bool(cfg.get("go_backwards", False)),
               "return_sequences": bool(cfg.get("return_sequences", False))}
        if kind != "SimpleRNN":
            out["recurrent_activation"] = _activation(cfg.get("recurrent_activation", "sigmoid"),
                                                      k2, w)
        if kind == "GRU":
            out["reset_after"] = bool(cfg.get("reset_after", True))
        return out
    return parse


def _opt_bidirectional(cfg, k2, w):
    mode = cfg.get("merge_mode", "concat")
    if mode not in MERGE_MODES:
        raise KerasFormatError(f"{w}: merge_mode={mode!r} is not supported (supported: "
                               f"{', '.join(MERGE_MODES)})")
    _refuse(cfg, w, return_state=False)

    def inner(entry: Any, which: str) -> tuple[str, dict]:
        if not isinstance(entry, Mapping) or entry.get("class_name") not in RNN_KINDS:
            cls = entry.get("class_name") if isinstance(entry, Mapping) else entry
            raise KerasFormatError(f"{w}: wraps {which} layer {cls!r}; supported: "
                                   f"{', '.join(RNN_KINDS)}")
        sub = f"{w} ({which} layer {entry.get('config', {}).get('name')!r})"
        return entry["class_name"], _opt_rnn(entry["class_name"])(entry.get("config") or {},
                                                                   k2, sub)

    fwd = inner(cfg["layer"], "forward")
    if cfg.get("backward_layer") is not None:
        bwd = inner(cfg["backward_layer"], "backward")
    else:
        bwd = (fwd[0], {**fwd[1], "go_backwards": not fwd[1]["go_backwards"]})
    if fwd[1]["return_sequences"] != bwd[1]["return_sequences"]:
        raise KerasFormatError(f"{w}: the forward and backward layers disagree on "
                               "return_sequences")
    return {"merge_mode": mode, "forward": fwd, "backward": bwd}


def _opt_layer_norm(cfg, k2, w):
    axis = cfg.get("axis", -1)
    axis = tuple(int(a) for a in axis) if isinstance(axis, (list, tuple)) else (int(axis),)
    rms = bool(cfg.get("rms_scaling", False))
    return {"axis": axis, "epsilon": float(cfg.get("epsilon", 1e-3)),
            "center": bool(cfg.get("center", True)) and not rms,
            "scale": bool(cfg.get("scale", True)) or rms, "rms_scaling": rms}


def _opt_mha(cfg, k2, w):
    _refuse(cfg, w, use_gate=False, sliding_window=None)
    axes = cfg.get("attention_axes")
    if axes is not None and tuple(axes if isinstance(axes, (list, tuple)) else [axes]) \
            not in ((1,), (-2,)):
        raise KerasFormatError(f"{w}: attention_axes={axes!r} is not supported (attention over "
                               "the time axis of (N, T, D) inputs only)")
    out = cfg.get("output_shape")
    if isinstance(out, (list, tuple)):
        if len(out) != 1:
            raise KerasFormatError(f"{w}: output_shape={out!r} is not supported (an int only)")
        out = out[0]
    key_dim = int(cfg["key_dim"])
    value_dim = cfg.get("value_dim")
    return {"num_heads": int(cfg["num_heads"]), "key_dim": key_dim,
            "value_dim": key_dim if value_dim is None else int(value_dim),
            "output_dim": None if out is None else int(out),
            "use_bias": bool(cfg.get("use_bias", True)), "use_causal_mask": False}


def _keep(*keys: str, **defaults: Any) -> Callable:
    """Options copied as they are (with defaults)."""
    def parse(cfg, k2, w):
        return {k: freeze(cfg.get(k, defaults.get(k))) for k in keys}
    return parse


OPTION_PARSERS: dict[str, Callable[[Mapping, bool, str], dict]] = {
    "Dense": _opt_dense,
    **{f"Conv{r}D": (lambda rank: lambda c, k, w: _opt_conv(c, k, w, rank))(r) for r in (1, 2, 3)},
    **{f"{kind}Pooling{r}D": (lambda rank: lambda c, k, w: _opt_pool(c, k, w, rank))(r)
       for kind in ("Max", "Average") for r in (1, 2, 3)},
    **{f"Global{kind}Pooling{r}D": _opt_global for kind in ("Max", "Average") for r in (1, 2, 3)},
    "Flatten": lambda c, k, w: {"data_format": _data_format(c, w)},
    "Reshape": lambda c, k, w: {"target_shape": tuple(int(i) for i in c["target_shape"])},
    "Permute": lambda c, k, w: {"dims": tuple(int(i) for i in c["dims"])},
    "Dropout": lambda c, k, w: {"rate": float(c.get("rate", 0.0))},
    "SpatialDropout1D": lambda c, k, w: {"rate": float(c.get("rate", 0.0))},
    "SpatialDropout2D": lambda c, k, w: {"rate": float(c.get("rate", 0.0)),
                                         "data_format": _data_format(c, w)},
    "SpatialDropout3D": lambda c, k, w: {"rate": float(c.get("rate", 0.0)),
                                         "data_format": _data_format(c, w)},
    "GaussianNoise": _keep("stddev", stddev=0.0),
    "GaussianDropout": _keep("rate", rate=0.0),
    "AlphaDropout": _keep("rate", rate=0.0),
    "ActivityRegularization": _keep("l1", "l2", l1=0.0, l2=0.0),
    "Activation": lambda c, k, w: {"activation": _activation(c.get("activation"), k, w)},
    "Softmax": _opt_softmax,
    "ReLU": _opt_relu,
    "LeakyReLU": _opt_leaky,
    "ELU": lambda c, k, w: {"alpha": float(c.get("alpha", 1.0))},
    "PReLU": _opt_prelu,
    "BatchNormalization": _opt_bn,
    **{f"ZeroPadding{r}D": _opt_pad("padding", r) for r in (1, 2, 3)},
    **{f"Cropping{r}D": _opt_pad("cropping", r) for r in (1, 2, 3)},
    **{k: (lambda c, k2, w: {}) for k in ("Add", "Subtract", "Multiply", "Average", "Maximum",
                                           "Minimum")},
    "Concatenate": lambda c, k, w: {"axis": int(c.get("axis", -1))},
    "Embedding": _opt_embedding,
    **{k: _opt_rnn(k) for k in RNN_KINDS},
    "Bidirectional": _opt_bidirectional,
    "LayerNormalization": _opt_layer_norm,
    "MultiHeadAttention": _opt_mha,
}
"""Keras class name → ``(config, is_keras2, where) -> options`` (Keras 3 config names); the
same classes as ``jaxlift.models.generic.LAYER_BUILDERS`` and ``keras_shapes.SHAPE_RULES``
(tests/test_keras_shapes.py checks both)."""

SUPPORTED_LAYERS = ("InputLayer",) + tuple(sorted(OPTION_PARSERS))

def _rnn_order(prefix: str, o: Mapping) -> list[tuple[str, str]]:
    names = ["kernel", "recurrent_kernel"] + (["bias"] if o["use_bias"] else [])
    return [("params", prefix + n) for n in names]


WEIGHT_ORDER: dict[str, Callable[[dict], list[tuple[str, str]]]] = {
    "Dense": lambda o: [("params", "kernel")] + ([("params", "bias")] if o["use_bias"] else []),
    **{f"Conv{r}D": (lambda o: [("params", "kernel")]
                     + ([("params", "bias")] if o["use_bias"] else [])) for r in (1, 2, 3)},
    "BatchNormalization": lambda o: ([("params", "gamma")] if o["scale"] else [])
    + ([("params", "beta")] if o["center"] else [])
    + [("batch_stats", "moving_mean"), ("batch_stats", "moving_variance")],
    "PReLU": lambda o: [("params", "alpha")],
    "Embedding": lambda o: [("params", "embeddings")],
    **{k: (lambda o: _rnn_order("", o)) for k in RNN_KINDS},
    "Bidirectional": lambda o: (_rnn_order("forward_", dict(o["forward"][1]))
                                + _rnn_order("backward_", dict(o["backward"][1]))),
    "LayerNormalization": lambda o: ([("params", "gamma")] if o["scale"] else [])
    + ([("params", "beta")] if o["center"] else []),
    "MultiHeadAttention": lambda o: [
        ("params", f"{part}_{w}") for part in ("query", "key", "value", "output")
        for w in (("kernel", "bias") if o["use_bias"] else ("kernel",))],
}
"""Keras class → its weights as (Flax collection, name), in the order Keras stores them."""


def layer_weights(spec: LayerSpec) -> list[tuple[str, str]]:
    """The weights of a layer, (collection, name), in Keras's order; [] for weightless ones."""
    fn = WEIGHT_ORDER.get(spec.class_name)
    return fn(spec.opts) if fn else []


def _input_dtype(dtype: Any) -> dict:
    """``{"dtype": "int32"}`` for an integer input (token ids), ``{}`` for a float one (all
    float inputs are computed in float32)."""
    if isinstance(dtype, Mapping):  # a Keras 3 DTypePolicy
        dtype = (dtype.get("config") or {}).get("name")
    if isinstance(dtype, str) and (dtype.startswith("int") or dtype.startswith("uint")):
        return {"dtype": dtype}
    return {}


def _parse_layer(entry: Mapping, keras2: bool, path: PathLike) -> LayerSpec:
    cls = entry.get("class_name")
    cfg = entry.get("config") or {}
    name = cfg.get("name") or entry.get("name")
    probe = LayerSpec(str(cls), str(name))
    if cls in ("Sequential", "Functional", "Model"):
        raise KerasFormatError(f"{locate(path, probe)}: nested models are not supported; "
                               "flatten the model before saving")
    if cls == "InputLayer":
        shape = cfg.get("batch_shape", cfg.get("batch_input_shape"))
        if shape is None and cfg.get("shape") is not None:
            shape = [None, *cfg["shape"]]
        if shape is None:
            raise KerasFormatError(f"{locate(path, probe)}: no input shape in the config")
        return LayerSpec(cls, name, freeze({"batch_shape": tuple(shape),
                                            **_input_dtype(cfg.get("dtype"))}))
    if cls not in OPTION_PARSERS:
        raise KerasFormatError(f"{locate(path, probe)}: layer class {cls!r} is not supported "
                               f"(supported: {', '.join(SUPPORTED_LAYERS)})")
    try:
        opts = OPTION_PARSERS[cls](cfg, keras2, locate(path, probe))
    except KeyError as e:
        raise KerasFormatError(f"{locate(path, probe)}: config lacks {e}") from None
    except (TypeError, ValueError) as e:
        if isinstance(e, KerasFormatError):
            raise
        raise KerasFormatError(f"{locate(path, probe)}: bad config: {e}") from None
    return LayerSpec(cls, name, freeze(opts))


def _refs_k3(arg: Any, where: str) -> list[TensorRef]:
    if isinstance(arg, Mapping):
        if arg.get("class_name") == "__keras_tensor__":
            lname, node, tensor = arg["config"]["keras_history"]
            return [(lname, int(node), int(tensor))]
        raise KerasFormatError(f"{where}: a non-tensor layer argument is not supported: {arg}")
    if isinstance(arg, (list, tuple)):
        return [r for a in arg for r in _refs_k3(a, where)]
    raise KerasFormatError(f"{where}: a constant layer argument is not supported: {arg!r}")


CALL_TENSORS = {"MultiHeadAttention": ("query", "value", "key")}
"""Layers whose call takes several named tensors, in positional order."""
CALL_OPTIONS = {"MultiHeadAttention": ("use_causal_mask",)}
"""Boolean call arguments that become layer options (the same for every call)."""
IGNORED_CALL_ARGS = ("training", "mask", "return_attention_scores", "initial_state")


def _node_refs(cls: str, args: list[TensorRef], tensors: Mapping[str, list[TensorRef]],
               where: str) -> list[TensorRef]:
    """Positional tensors plus tensors passed by name (``mha(query=…, value=…)``)."""
    refs = list(args)
    for i, name in enumerate(CALL_TENSORS.get(cls, ())):
        if name in tensors:
            if len(refs) != i:
                raise KerasFormatError(f"{where}: cannot place call argument {name!r}")
            refs.extend(tensors[name])
    unknown = set(tensors) - set(CALL_TENSORS.get(cls, ()))
    if unknown:
        raise KerasFormatError(f"{where}: tensor call arguments {sorted(unknown)} are not "
                               "supported")
    return refs


def _call_kwargs(cls: str, kwargs: Mapping, tensors: dict, options: dict, where: str,
                 k3: bool) -> None:
    """Sort a call's keyword arguments into tensors, layer options, ignorable and refused."""
    extra = {}
    for k, v in (kwargs or {}).items():
        is_tensor = (isinstance(v, Mapping) and v.get("class_name") == "__keras_tensor__") \
            if k3 else (isinstance(v, (list, tuple)) and len(v) >= 3 and isinstance(v[0], str))
        if is_tensor:
            tensors[k] = _refs_k3(v, where) if k3 else [(v[0], int(v[1]), int(v[2]))]
        elif k in CALL_OPTIONS.get(cls, ()):
            options[k] = bool(v)
        elif k in ("return_attention_scores", "initial_state") and v:
            extra[k] = v
        elif v is not None and k not in IGNORED_CALL_ARGS:
            extra[k] = v
    if extra:
        raise KerasFormatError(f"{where}: call arguments {extra} are not supported")


def _inbound(nodes: Any, where: str, cls: str = ""
             ) -> tuple[tuple[tuple[TensorRef, ...], ...], dict]:
    """``inbound_nodes`` of either dialect → (one tuple of tensor refs per node, the options
    that the calls set, e.g. ``{"use_causal_mask": True}``)."""
    out, options = [], {}
    for node in nodes or []:
        tensors: dict[str, list[TensorRef]] = {}
        opts: dict[str, Any] = {}
        if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
            args = _refs_k3(node.get("args", []), where)
            _call_kwargs(cls, node.get("kwargs") or {}, tensors, opts, where, k3=True)
        else:  # Keras 2: [[layer, node, tensor, kwargs], ...]
            args = [(t[0], int(t[1]), int(t[2])) for t in node]
            if cls in CALL_TENSORS and node and len(node[0]) > 3:
                _call_kwargs(cls, node[0][3] or {}, tensors, opts, where, k3=False)
        refs = _node_refs(cls, args, tensors, where)
        if out and opts != options:
            raise KerasFormatError(f"{where}: calls with different options {options} and "
                                   f"{opts} are not supported")
        options = opts
        out.append(tuple(refs))
    return tuple(out), options


def _io_refs(v: Any) -> tuple[TensorRef, ...]:
    if v and isinstance(v[0], str):
        v = [v]
    return tuple((t[0], int(t[1]), int(t[2])) for t in v)


def parse_model_config(config: Mapping, keras2: bool, path: PathLike = "<config>") -> ModelGraph:
    """A Keras model config (the decoded ``model_config`` JSON) → ``ModelGraph``."""
    cls = config.get("class_name")
    cfg = config.get("config") or {}
    name = cfg.get("name", "model")
    entries = cfg.get("layers")
    if not isinstance(entries, list):
        raise KerasFormatError(f"{path}: model config of class {cls!r} has no layer list")
    if cls == "Sequential":
        specs = [_parse_layer(e, keras2, path) for e in entries]
        if not specs or specs[0].class_name != "InputLayer":
            first = entries[0].get("config", {}) if entries else {}
            shape = first.get("batch_input_shape", first.get("batch_shape",
                                                              cfg.get("build_input_shape")))
            if shape is None:
                raise KerasFormatError(f"{path}: the Sequential model's input shape is not in "
                                       "its config")
            iname = f"{first.get('name', 'layer')}_input"
            specs.insert(0, LayerSpec("InputLayer", iname, freeze({"batch_shape": tuple(shape)})))
        chained = [specs[0]]
        for prev, spec in zip(specs, specs[1:]):
            if spec.class_name == "InputLayer":
                raise KerasFormatError(f"{locate(path, spec)}: an InputLayer inside a Sequential")
            chained.append(LayerSpec(spec.class_name, spec.name, spec.options,
                                     (((prev.name, 0, 0),),)))
        return _check_graph(ModelGraph(name, tuple(chained), (specs[0].name,),
                                       ((specs[-1].name, 0, 0),), sequential=True), path)
    if cls in ("Functional", "Model"):
        specs = []
        for e in entries:
            spec = _parse_layer(e, keras2, path)
            inbound, call_opts = _inbound(e.get("inbound_nodes"), locate(path, spec),
                                          spec.class_name)
            options = freeze({**spec.opts, **call_opts}) if call_opts else spec.options
            specs.append(LayerSpec(spec.class_name, spec.name, options, inbound))
        inputs = tuple(r[0] for r in _io_refs(cfg.get("input_layers", [])))
        return _check_graph(ModelGraph(name, tuple(_topological(specs, path)), inputs,
                                       _io_refs(cfg.get("output_layers", []))), path)
    raise KerasFormatError(f"{path}: model class {cls!r} is not supported "
                           "(Sequential and functional models are)")


def _topological(specs: list[LayerSpec], path: PathLike) -> list[LayerSpec]:
    """Layers reordered so every layer comes after those its first node reads."""
    done: set[str] = set()
    out, pending = [], list(specs)
    while pending:
        ready = [s for s in pending if all(r[0] in done for refs in s.inbound[:1] for r in refs)]
        if not ready:
            raise KerasFormatError(f"{path}: the layer graph has a cycle or a dangling input "
                                   f"(at layer {pending[0].name!r})")
        for s in ready:
            done.add(s.name)
            out.append(s)
        pending = [s for s in pending if s.name not in done]
    return out


def _check_graph(g: ModelGraph, path: PathLike) -> ModelGraph:
    nodes = {(s.name, i) for s in g.layers for i in range(max(1, len(s.inbound)))}
    names = [s.name for s in g.layers]
    if len(set(names)) != len(names):
        raise KerasFormatError(f"{path}: duplicate layer names in the config")
    for s in g.layers:
        if s.class_name == "InputLayer":
            continue
        if not s.inbound:
            raise KerasFormatError(f"{locate(path, s)}: the layer is never called")
        for refs in s.inbound:
            if not refs:
                raise KerasFormatError(f"{locate(path, s)}: a call without inputs")
            for r in refs:
                if (r[0], r[1]) not in nodes or r[2] != 0:
                    raise KerasFormatError(f"{locate(path, s)}: reads unknown tensor {r}")
            if s.class_name in CALL_TENSORS:
                if not 2 <= len(refs) <= len(CALL_TENSORS[s.class_name]):
                    raise KerasFormatError(
                        f"{locate(path, s)}: takes {', '.join(CALL_TENSORS[s.class_name])} "
                        f"(the last optional), got {len(refs)} input(s)")
            elif not _is_merge(s) and len(refs) != 1:
                raise KerasFormatError(f"{locate(path, s)}: takes one input, got {len(refs)}")
    if not g.inputs or not g.outputs:
        raise KerasFormatError(f"{path}: the model config names no inputs or outputs")
    for n in g.inputs:
        if n not in names or g.layer(n).class_name != "InputLayer":
            raise KerasFormatError(f"{path}: model input {n!r} is not an InputLayer")
    for r in g.outputs:
        if (r[0], r[1]) not in nodes or r[2] != 0:
            raise KerasFormatError(f"{path}: model output {r} is not a layer's output")
    return g


def is_keras2(version: str) -> bool:
    return not version.startswith("3")


def _assign(graph: ModelGraph, raw: dict[str, list[tuple[str, np.ndarray]]], path: PathLike
            ) -> dict[str, dict]:
    """Raw per-layer weight lists → Flax variables, by Keras's order."""
    import jax.numpy as jnp  # here: reading a config alone needs no JAX
    variables: dict[str, dict] = {}
    for spec in graph.layers:
        if spec.class_name == "InputLayer":
            continue
        wanted = layer_weights(spec)
        got = raw.get(spec.name, [])
        if len(got) != len(wanted):
            raise KerasFormatError(
                f"{locate(path, spec)}: the file holds {len(got)} weight(s) "
                f"{[n for n, _ in got]} but the config implies {len(wanted)} "
                f"{[n for _, n in wanted]}")
        for (coll, wname), (_, arr) in zip(wanted, got):
            if not np.issubdtype(arr.dtype, np.floating):
                raise KerasFormatError(f"{locate(path, spec)}: weight {wname!r} has dtype "
                                       f"{arr.dtype}, not a float")
            variables.setdefault(coll, {}).setdefault(spec.name, {})[wname] = \
                jnp.asarray(arr, jnp.float32)
    return variables


# --------------------------------------------------------------------------- shapes


def _surrogate_shapes(graph: ModelGraph, fill: int) -> list[tuple[int, ...]]:
    return [tuple(1 if i == 0 else (fill if d is None else int(d)) for i, d in enumerate(s))
            for s in graph.input_shapes]


def infer_shapes(graph: ModelGraph, path: PathLike = "<model>"
                 ) -> tuple[dict[TensorRef, tuple[int | None, ...]], dict[str, dict]]:
    """What :func:`trace_shapes` gives — every tensor's shape (batch dim None, dims open in the
    config None) and each layer's weight shapes ``{layer: {collection: {name: shape}}}`` —
    worked out from the layers' options by ``keras_shapes`` without JAX (``jaxlift info``)."""
    shapes: dict[TensorRef, tuple[int | None, ...]] = {
        (n, 0, 0): (None, *s[1:]) for n, s in zip(graph.inputs, graph.input_shapes)}
    var_shapes: dict[str, dict] = {}
    for spec in graph.layers:
        if spec.class_name == "InputLayer":
            continue
        for node, refs in enumerate(spec.inbound):
            args = [shapes[r] for r in refs]
            try:
                out, weights = layer_shapes(spec.class_name, spec.opts, args)
            except ValueError as e:
                raise KerasFormatError(f"{locate(path, spec)}: cannot apply the layer to input "
                                       f"shape(s) {[tuple(a) for a in args]}: {e}") from None
            shapes[(spec.name, node, 0)] = out
            if node == 0:
                var_shapes[spec.name] = weights
    return shapes, var_shapes


def _trace_once(graph: ModelGraph, fill: int, path: PathLike
                ) -> tuple[dict[TensorRef, tuple[int, ...]], dict[str, dict]]:
    """Per-tensor shapes (batch 1) and per-layer variable shapes, layer by layer."""
    import jax  # here: reading a config (``infer_shapes``, ``jaxlift info``) needs no JAX
    import jax.numpy as jnp

    from jaxlift.models.generic import build_layer
    shapes: dict[TensorRef, tuple[int, ...]] = {
        (n, 0, 0): s for n, s in zip(graph.inputs, _surrogate_shapes(graph, fill))}
    dtypes: dict[TensorRef, Any] = {(n, 0, 0): jnp.dtype(d)
                                    for n, d in zip(graph.inputs, graph.input_dtypes)}
    var_shapes: dict[str, dict] = {}
    key = jax.random.key(0)
    for spec in graph.layers:
        if spec.class_name == "InputLayer":
            continue
        module = build_layer(spec)
        for node, refs in enumerate(spec.inbound):
            args = [jax.ShapeDtypeStruct(shapes[r], dtypes.get(r, jnp.float32)) for r in refs]
            try:
                out, vs = jax.eval_shape(lambda *a, module=module: module.init_with_output(key, *a), *args)
            except Exception as e:  # any shape error of the layer itself
                raise KerasFormatError(
                    f"{locate(path, spec)}: cannot apply the layer to input shape(s) "
                    f"{[tuple(a.shape) for a in args]}: {type(e).__name__}: {e}") from None
            shapes[(spec.name, node, 0)] = tuple(out.shape)
            dtypes[(spec.name, node, 0)] = out.dtype
            if node == 0:
                var_shapes[spec.name] = jax.tree.map(lambda a: tuple(a.shape), dict(vs))
    return shapes, var_shapes


def trace_shapes(graph: ModelGraph, path: PathLike = "<model>"
                 ) -> tuple[dict[TensorRef, tuple[int | None, ...]], dict[str, dict]]:
    """Output shape of every tensor (batch dim None; dims unknown in the config None) and the
    expected variable shapes of each layer ``{layer: {collection: {name: shape}}}``."""
    known = all(d is not None for s in graph.input_shapes for d in s[1:])
    a, va = _trace_once(graph, 32, path)
    if not known:
        b, _ = _trace_once(graph, 40, path)
        a = {k: tuple(x if x == y else None for x, y in zip(a[k], b[k])) for k in a}
    a = {k: (None, *s[1:]) for k, s in a.items()}
    return a, va


def check_variables(graph: ModelGraph, variables: Mapping, path: PathLike) -> None:
    _, expected = trace_shapes(graph, path)
    for spec in graph.layers:
        for coll, wname in layer_weights(spec):
            want = expected[spec.name][coll][wname]
            have = tuple(variables[coll][spec.name][wname].shape)
            if have != tuple(want):
                raise KerasFormatError(
                    f"{locate(path, spec)}: weight {wname!r} has shape {have} in the file, but "
                    f"the config implies {tuple(want)}")


# ------------------------------------------------------------------- the config written back




def _keras3_config(spec: LayerSpec) -> dict:
    o = spec.opts
    where = f"layer {spec.name!r} ({spec.class_name})"
    if o.get("activation") == "hard_sigmoid_keras2":
        raise KerasFormatError(f"{where}: Keras 2's hard_sigmoid (slope 0.2) has no Keras 3 "
                               "equivalent; cannot save it")
    if spec.class_name == "InputLayer":
        return {"batch_shape": list(o["batch_shape"]), "dtype": o.get("dtype", "float32"),
                "sparse": False, "name": spec.name}
    if spec.class_name == "Bidirectional":
        return {"name": spec.name, "merge_mode": o["merge_mode"],
                "layer": _wrapped_config(o["forward"], f"forward_{spec.name}"),
                "backward_layer": _wrapped_config(o["backward"], f"backward_{spec.name}")}
    cfg: dict[str, Any] = {"name": spec.name}
    for k, v in o.items():
        cfg[k] = json.loads(json.dumps(v))  # tuples → lists
    if spec.class_name == "MultiHeadAttention":
        cfg["output_shape"] = cfg.pop("output_dim")
        for k in CALL_OPTIONS["MultiHeadAttention"]:  # call arguments, not config
            cfg.pop(k)
    if spec.class_name == "BatchNormalization":
        if len(o["axis"]) != 1:
            raise KerasFormatError(f"{where}: Keras 3 BatchNormalization takes one axis, "
                                   f"not {o['axis']}")
        cfg["axis"] = int(o["axis"][0])
    if spec.class_name in ("ZeroPadding1D", "Cropping1D"):
        key = "padding" if spec.class_name.startswith("Zero") else "cropping"
        cfg[key] = list(o[key][0])
    return cfg


def _wrapped_config(kind_opts: tuple, name: str) -> dict:
    """The config of a layer wrapped by ``Bidirectional`` (Keras 3 serialisation)."""
    kind, opts = kind_opts
    return {"module": "keras.layers", "class_name": kind, "registered_name": None,
            "config": {"name": name, **json.loads(json.dumps(dict(opts)))}}


def model_config(graph: ModelGraph) -> dict:
    if graph.sequential:
        layers = [{"class_name": s.class_name, "config": _keras3_config(s)} for s in graph.layers]
        return {"class_name": "Sequential", "config": {"name": graph.name, "layers": layers}}
    shapes, _ = trace_shapes(graph)
    shapes.update({(n, 0, 0): tuple(graph.layer(n).opts["batch_shape"]) for n in graph.inputs})
    dtypes = dict(zip(((n, 0, 0) for n in graph.inputs), graph.input_dtypes))
    tensor = lambda r: _k3_tensor(r, shapes, dtypes.get(r, "float32"))  # noqa: E731
    layers = []
    for s in graph.layers:
        kwargs = {k: s.opts[k] for k in CALL_OPTIONS.get(s.class_name, ()) if s.opts.get(k)}
        nodes = [{"args": [tensor(r) for r in refs] if s.class_name in CALL_TENSORS
                  else [tensor(refs[0]) if len(refs) == 1 and not _is_merge(s)
                        else [tensor(r) for r in refs]], "kwargs": kwargs}
                 for refs in s.inbound]
        layers.append({"class_name": s.class_name, "config": _keras3_config(s), "name": s.name,
                       "inbound_nodes": nodes})
    return {"class_name": "Functional", "config": {
        "name": graph.name, "trainable": True, "layers": layers,
        "input_layers": _k3_io([[n, 0, 0] for n in graph.inputs]),
        "output_layers": _k3_io([list(r) for r in graph.outputs])}}


def _k3_io(refs: list[list]) -> list:
    """Keras 3 writes a single input/output as one flat [layer, node, tensor]."""
    return refs[0] if len(refs) == 1 else refs


def _is_merge(spec: LayerSpec) -> bool:
    return spec.class_name in ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum",
                               "Concatenate")


def _k3_tensor(ref: TensorRef, shapes: Mapping[TensorRef, tuple], dtype: str = "float32"
               ) -> dict:
    return {"class_name": "__keras_tensor__", "config": {
        "shape": list(shapes[ref]), "dtype": dtype, "keras_history": list(ref)}}


def as_variables(graph: ModelGraph, flat: dict[str, list[tuple[str, np.ndarray]]]) -> dict:
    out: dict[str, dict] = {}
    for spec in graph.layers:
        for (coll, wname), (_, arr) in zip(layer_weights(spec), flat.get(spec.name, [])):
            out.setdefault(coll, {}).setdefault(spec.name, {})[wname] = arr
    return out


# --------------------------------------------------------------------------- info




def fmt_shape(s: tuple) -> str:
    return "(" + ", ".join("None" if d is None else str(d) for d in s) + \
        ("," if len(s) == 1 else "") + ")"


_ACTIVATION_LAYERS = {"Softmax": "softmax", "ReLU": "relu", "LeakyReLU": "leaky_relu",
                      "ELU": "elu", "PReLU": "prelu"}


def layer_activation(spec: LayerSpec) -> str:
    """The nonlinearity a layer applies last: its ``activation`` option (Dense, Conv,
    Activation, RNNs: ``"relu"``, ``"softmax"``, ``"linear"``, …), the activation a layer class
    is (``Softmax`` → ``"softmax"``, ``ReLU`` → ``"relu"``, …), or ``""`` for layers without
    one (pooling, reshaping, merges)."""
    if spec.class_name in _ACTIVATION_LAYERS:
        return _ACTIVATION_LAYERS[spec.class_name]
    act = spec.opts.get("activation")
    return act if isinstance(act, str) else ""


def output_activations(graph: ModelGraph) -> list[tuple[str, str]]:
    """For each model output, (the layer that sets it, its activation), looking through the
    layers that are identities at inference (Dropout, ``Activation("linear")``, …): what the
    model ends in — ``softmax`` (classes), ``sigmoid`` (one probability per output), or
    ``linear`` (the output is already the logit)."""
    by_name = {s.name: s for s in graph.layers}
    found = []
    for lname, node, _ in graph.outputs:
        spec = by_name[lname]
        while (spec.class_name in NOOP_LAYERS or layer_activation(spec) == "linear"
               and spec.class_name == "Activation") and spec.inbound:
            (lname, node, _), = spec.inbound[node][:1]
            spec = by_name[lname]
        found.append((spec.name, layer_activation(spec) or "linear"))
    return found


def summarize(graph: ModelGraph, title: str = "") -> str:
    """A ``summary()``-like table of a graph: layer (class), output shape, activation,
    parameters, and a last line saying which activation each model output ends in. Shapes
    come from the layers' options (``infer_shapes``): no JAX."""
    shapes, var_shapes = infer_shapes(graph, title or graph.name)
    rows = [("Layer (type)", "Output Shape", "Activation", "Param #", "Connected to")]
    trainable = non_trainable = 0
    for spec in graph.layers:
        if graph.sequential and spec.class_name == "InputLayer":
            continue
        n_train = n_fixed = 0
        for coll, d in var_shapes.get(spec.name, {}).items():
            for shp in d.values():
                n = int(np.prod(shp))
                if coll == "params":
                    n_train += n
                else:
                    n_fixed += n
        trainable += n_train
        non_trainable += n_fixed
        outs = [fmt_shape(shapes[(spec.name, 0, 0)])] if spec.class_name != "InputLayer" \
            else [fmt_shape(spec.opts["batch_shape"])]
        conn = ", ".join(f"{r[0]}[{r[1]}]" for r in spec.inbound[0]) if spec.inbound else ""
        rows.append((f"{spec.name} ({spec.class_name})", outs[0], layer_activation(spec),
                     f"{n_train + n_fixed:,}", "" if graph.sequential else conn))
    cols = 4 if graph.sequential else 5
    widths = [max(len(r[i]) for r in rows) for i in range(cols)]
    line = lambda r: "  ".join(c.ljust(w) if i != 3 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r[:cols], widths))).rstrip()
    kind = "Sequential" if graph.sequential else "Functional"
    out = [f'Model: "{graph.name}" ({kind})' + (f" — {title}" if title else ""),
           line(rows[0]), "-" * len(line(rows[0]))]
    out += [line(r) for r in rows[1:]]
    out += ["-" * len(line(rows[0])),
            f"Total params: {trainable + non_trainable:,}",
            f"Trainable params: {trainable:,}",
            f"Non-trainable params: {non_trainable:,}"]
    ends = output_activations(graph)
    linear = all(act == "linear" for _, act in ends)
    out.append("Output activation: " + ", ".join(f"{act} ({name})" for name, act in ends)
               + ("; the outputs are the logits jaxlift explains" if linear else
                  "; jaxlift explains the logits, the values before it"))
    return "\n".join(out)



# ------------------------------------------------------------------- the readers' common end


def assign_variables(graph: ModelGraph, raw: dict[str, list[tuple[str, np.ndarray]]],
                     path: PathLike) -> dict[str, dict]:
    """Raw per-layer weights (Keras's order) → Flax variables, shapes checked against the
    config: ``{"params": {layer: {...}}}`` plus ``"batch_stats"`` where there are any."""
    variables = _assign(graph, raw, path)
    check_variables(graph, variables, path)
    variables.setdefault("params", {})
    return variables


def flat_weights(graph: ModelGraph, variables: Mapping[str, Any]
                 ) -> dict[str, list[tuple[str, np.ndarray]]]:
    """Flax variables → per-layer (weight name, float32 array) lists in Keras's order (what a
    writer stores), shapes checked against the config."""
    flat: dict[str, list[tuple[str, np.ndarray]]] = {}
    for spec in graph.layers:
        items = []
        for coll, wname in layer_weights(spec):
            try:
                items.append((wname, np.asarray(variables[coll][spec.name][wname], np.float32)))
            except KeyError:
                raise KerasFormatError(f"layer {spec.name!r} ({spec.class_name}): variables "
                                       f"lack {coll}/{spec.name}/{wname}") from None
        flat[spec.name] = items
    return flat
