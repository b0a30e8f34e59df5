"""A Keras model graph (Sequential or functional) as one Flax linen module.

``ModelGraph`` is a hashable description of a Keras model: its layers in topological order,
each with normalised options (named as in Keras 3's layer configs) and the tensors each call
("node") of the layer consumes. ``KerasModel(graph)`` runs it::

    model = KerasModel(graph)
    variables = model.init(jax.random.key(0), x)        # or read from an .h5 file
    y = model.apply(variables, x)                       # (N, …) → (N, …) outputs
    z = model.apply(variables, x, logits=True)          # pre-activation of the final layer

**Logits.** ``logits=True`` returns, for each model output, the pre-activation of the last
layer that has an activation: walking back from the output through inference no-ops
(Dropout and friends, ``Activation("linear")``), the first layer found returns its value
before its ``activation`` (a ``Dense``/``Conv``) or its input (an ``Activation``/``Softmax``
layer). Any other layer (pooling, merge, ``Dense`` with linear activation, …) returns its
ordinary output, which then *is* the logit. This is what DeepLIFT explains.

Variables: ``{"params": {layer_name: {...}}}`` plus ``{"batch_stats": {...}}`` when the model
has BatchNormalization layers (always used in inference mode). ``train=True`` turns on
Dropout (it needs ``rngs={"dropout": key}``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax

from jaxlift.errors import InputValueError
from jaxlift.models import layers as L
from jaxlift.models import sequence as S
from jaxlift.models.graph import (NOOP_LAYERS, LayerSpec, ModelGraph, TensorRef, freeze,
                                  sequential_graph)

__all__ = ["KerasModel", "LAYER_BUILDERS", "build_layer",
           # defined in jaxlift.models.graph (JAX-free), re-exported from their old home:
           "LayerSpec", "ModelGraph", "TensorRef", "freeze", "sequential_graph", "NOOP_LAYERS"]

# --------------------------------------------------------------------------- layer table


def _conv(rank: int) -> Callable[[dict], nn.Module]:
    keys = ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate",
            "groups", "activation", "use_bias")
    return lambda o, name: L.Conv(rank=rank, **{k: o[k] for k in keys}, name=name)


def _pool(rank: int, op: str) -> Callable[[dict], nn.Module]:
    keys = ("pool_size", "strides", "padding", "data_format")
    return lambda o, name: L.Pool(rank=rank, op=op, **{k: o[k] for k in keys}, name=name)


def _global(op: str) -> Callable[[dict], nn.Module]:
    return lambda o, name: L.GlobalPool(op=op, data_format=o["data_format"],
                                        keepdims=o["keepdims"], name=name)


def _merge(op: str) -> Callable[[dict], nn.Module]:
    return lambda o, name: L.Merge(op=op, axis=o.get("axis", -1), name=name)


def _identity(o: dict, name: str) -> nn.Module:
    return L.Identity(name=name)


LAYER_BUILDERS: dict[str, Callable[[dict, str], nn.Module]] = {
    "Dense": lambda o, name: L.Dense(o["units"], o["activation"], o["use_bias"], name=name),
    "Conv1D": _conv(1), "Conv2D": _conv(2), "Conv3D": _conv(3),
    "MaxPooling1D": _pool(1, "max"), "MaxPooling2D": _pool(2, "max"),
    "MaxPooling3D": _pool(3, "max"),
    "AveragePooling1D": _pool(1, "avg"), "AveragePooling2D": _pool(2, "avg"),
    "AveragePooling3D": _pool(3, "avg"),
    "GlobalAveragePooling1D": _global("avg"), "GlobalAveragePooling2D": _global("avg"),
    "GlobalAveragePooling3D": _global("avg"),
    "GlobalMaxPooling1D": _global("max"), "GlobalMaxPooling2D": _global("max"),
    "GlobalMaxPooling3D": _global("max"),
    "Flatten": lambda o, name: L.Flatten(o["data_format"], name=name),
    "Reshape": lambda o, name: L.Reshape(o["target_shape"], name=name),
    "Permute": lambda o, name: L.Permute(o["dims"], name=name),
    "Dropout": lambda o, name: L.Dropout(o["rate"], name=name),
    "SpatialDropout1D": lambda o, name: L.Dropout(o["rate"], True, "channels_last", name=name),
    "SpatialDropout2D": lambda o, name: L.Dropout(o["rate"], True, o["data_format"], name=name),
    "SpatialDropout3D": lambda o, name: L.Dropout(o["rate"], True, o["data_format"], name=name),
    "GaussianNoise": _identity, "GaussianDropout": _identity, "AlphaDropout": _identity,
    "ActivityRegularization": _identity,
    "Activation": lambda o, name: L.Activation(o["activation"], name=name),
    "Softmax": lambda o, name: L.Softmax(o["axis"], name=name),
    "ReLU": lambda o, name: L.ReLU(o["max_value"], o["negative_slope"], o["threshold"],
                                   name=name),
    "LeakyReLU": lambda o, name: L.LeakyReLU(o["negative_slope"], name=name),
    "ELU": lambda o, name: L.ELU(o["alpha"], name=name),
    "PReLU": lambda o, name: L.PReLU(o["shared_axes"], name=name),
    "BatchNormalization": lambda o, name: L.BatchNorm(o["axis"], o["epsilon"], o["center"],
                                                      o["scale"], name=name),
    "ZeroPadding1D": lambda o, name: L.ZeroPadding(o["padding"], "channels_last", name=name),
    "ZeroPadding2D": lambda o, name: L.ZeroPadding(o["padding"], o["data_format"], name=name),
    "ZeroPadding3D": lambda o, name: L.ZeroPadding(o["padding"], o["data_format"], name=name),
    "Cropping1D": lambda o, name: L.Cropping(o["cropping"], "channels_last", name=name),
    "Cropping2D": lambda o, name: L.Cropping(o["cropping"], o["data_format"], name=name),
    "Cropping3D": lambda o, name: L.Cropping(o["cropping"], o["data_format"], name=name),
    "Add": _merge("add"), "Subtract": _merge("subtract"), "Multiply": _merge("multiply"),
    "Average": _merge("average"), "Maximum": _merge("maximum"), "Minimum": _merge("minimum"),
    "Concatenate": _merge("concatenate"),
    "Embedding": lambda o, name: S.Embedding(o["input_dim"], o["output_dim"], name=name),
    **{k: (lambda kind: lambda o, name: S.Recurrent(kind, tuple(sorted(o.items())), name=name))(k)
       for k in S.RNN_KINDS},
    "Bidirectional": lambda o, name: S.Bidirectional(o["forward"], o["backward"],
                                                     o["merge_mode"], name=name),
    "LayerNormalization": lambda o, name: S.LayerNorm(o["axis"], o["epsilon"], o["center"],
                                                      o["scale"], o["rms_scaling"], name=name),
    "MultiHeadAttention": lambda o, name: S.MultiHeadAttention(
        o["num_heads"], o["key_dim"], o["value_dim"], o["output_dim"], o["use_bias"],
        o["use_causal_mask"], name=name),
}
"""Keras class name → ``(options, name) -> Flax module``. ``InputLayer`` is handled apart."""

def build_layer(spec: LayerSpec) -> nn.Module:
    """The Flax module of one layer (unbound, named after the Keras layer)."""
    return LAYER_BUILDERS[spec.class_name](spec.opts, spec.name)


def _passes_through(spec: LayerSpec) -> bool:
    if spec.class_name in NOOP_LAYERS:
        return True
    return spec.class_name == "Activation" and spec.opts["activation"] == "linear"


def _logit_path(graph: ModelGraph) -> dict[TensorRef, bool]:
    """Tensors computed in logit mode for ``logits=True``: True for a layer that returns its
    pre-activation, False for a pass-through layer between it and a model output."""
    by_name = {s.name: s for s in graph.layers}
    path: dict[TensorRef, bool] = {}
    for lname, node, _ in graph.outputs:
        while True:
            spec = by_name[lname]
            if spec.class_name == "InputLayer":
                raise InputValueError(f"model {graph.name!r}: output {lname!r} is an input; "
                                      "it has no logits")
            if not _passes_through(spec):
                path[(lname, node, 0)] = True
                break
            path[(lname, node, 0)] = False
            (lname, node, _), = spec.inbound[node]
    return path


def _needed(graph: ModelGraph, seeds: list[TensorRef]) -> set[TensorRef]:
    """Tensors whose ordinary values the seeds depend on (the seeds included)."""
    by_name = {s.name: s for s in graph.layers}
    need, todo = set(), list(seeds)
    while todo:
        ref = todo.pop()
        if ref in need:
            continue
        need.add(ref)
        spec = by_name[ref[0]]
        if spec.class_name != "InputLayer":
            todo.extend(spec.inbound[ref[1]])
    return need


def _check_marks(g: ModelGraph, mark: tuple[str, ...], marker: Callable | None) -> None:
    if not mark:
        return
    if marker is None:
        raise InputValueError("mark= needs marker=jaxlift.layer (the function that marks a value)")
    names = [s.name for s in g.layers if s.class_name != "InputLayer"]
    unknown = [m for m in mark if m not in names]
    if unknown:
        raise InputValueError(f"model {g.name!r} has no layer(s) {unknown} to mark; its layers are "
                              f"{', '.join(names)}")


class KerasModel(nn.Module):
    """The Flax module of a ``ModelGraph``; see the module docstring.

    ``__call__(*inputs, logits=False, train=False, mark=(), marker=None)``: one array per
    model input (or one list/tuple of them), each (N, *input_shape) (integer token ids for an
    input of integer dtype); returns one array, or a tuple when the model has several outputs.

    ``mark`` names layers whose (ordinary) outputs are passed through ``marker(value, name)``
    — pass ``marker=jaxlift.layer`` so that ``jaxlift.attribute(..., layer=name)`` can score
    them (a layer called several times: node i > 0 is marked ``"name:i"``). This module does
    not import jaxlift's interpreter; the marker comes from the caller.
    """

    graph: ModelGraph

    def keras_graph(self) -> ModelGraph:
        """The graph to save (the protocol ``save_keras_h5`` uses)."""
        return self.graph

    @nn.compact
    def __call__(self, *inputs: jax.Array, logits: bool = False, train: bool = False,
                 mark: Sequence[str] = (), marker: Callable | None = None):
        g = self.graph
        mark = (mark,) if isinstance(mark, str) else tuple(mark)
        _check_marks(g, mark, marker)
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != len(g.inputs):
            raise InputValueError(f"model {g.name!r} takes {len(g.inputs)} input(s), got {len(inputs)}")
        values: dict[TensorRef, jax.Array] = {(n, 0, 0): x for n, x in zip(g.inputs, inputs)}
        path = _logit_path(g) if logits else {}
        seeds = [r for r, top in path.items() if top]
        seeds = [r for ref in seeds for r in g.layer(ref[0]).inbound[ref[1]]] if logits \
            else list(g.outputs)
        need = _needed(g, seeds)
        logit_values: dict[TensorRef, jax.Array] = {}
        for spec in g.layers:
            if spec.class_name == "InputLayer":
                continue
            module = build_layer(spec)
            for node, refs in enumerate(spec.inbound):
                ref = (spec.name, node, 0)
                if path.get(ref) is True:
                    logit_values[ref] = module(*[values[r] for r in refs], logits=True,
                                               train=train)
                elif path.get(ref) is False:
                    logit_values[ref] = module(logit_values[refs[0]], train=train)
                if ref in need or spec.name in mark:
                    values[ref] = module(*[values[r] for r in refs], train=train)
                    if spec.name in mark:
                        values[ref] = marker(values[ref],
                                             spec.name if node == 0 else f"{spec.name}:{node}")
        table = logit_values if logits else values
        outs = [table[r] for r in g.outputs]
        return outs[0] if len(outs) == 1 else tuple(outs)
