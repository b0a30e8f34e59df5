"""A Keras model as data, without JAX: ``LayerSpec``, ``ModelGraph`` and the names the config
reader checks against (activations, recurrent kinds, merge modes, inference no-ops).

``jaxlift.models.generic`` runs a ``ModelGraph`` with Flax; this module only describes one, so
that reading a Keras config (``jaxlift info``) needs neither JAX nor Flax.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

__all__ = ["TensorRef", "freeze", "LayerSpec", "ModelGraph", "sequential_graph", "NOOP_LAYERS",
           "ACTIVATION_NAMES", "RNN_KINDS", "MERGE_MODES"]

ACTIVATION_NAMES = frozenset({
    "linear", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "softmax", "log_softmax", "elu",
    "selu", "softplus", "softsign", "swish", "silu", "gelu", "hard_sigmoid",
    "hard_sigmoid_keras2", "hard_silu", "hard_swish", "mish", "exponential"})
"""The activation names ``jaxlift.models.layers.ACTIVATIONS`` implements (checked there)."""

RNN_KINDS = ("SimpleRNN", "LSTM", "GRU")
"""The recurrent layer classes."""

MERGE_MODES = ("concat", "sum", "mul", "ave")
"""``Bidirectional``'s merge modes."""

TensorRef = tuple[str, int, int]
"""A Keras tensor: (layer name, node index, tensor index)."""


def freeze(value: Any) -> Any:
    """Lists → tuples, dicts → sorted tuples of pairs, recursively (hashable options)."""
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, Mapping):
        return tuple(sorted((k, freeze(v)) for k, v in value.items()))
    return value


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One Keras layer: ``class_name`` (Keras's), ``name``, ``options`` (sorted (key, value)
    pairs, Keras 3 config names) and ``inbound``: for each call of the layer, the tensors it
    takes. An ``InputLayer`` has no inbound and the option ``batch_shape``."""

    class_name: str
    name: str
    options: tuple[tuple[str, Any], ...] = ()
    inbound: tuple[tuple[TensorRef, ...], ...] = ()

    @property
    def opts(self) -> dict[str, Any]:
        return dict(self.options)


@dataclasses.dataclass(frozen=True)
class ModelGraph:
    """A Keras model: ``layers`` in topological order (``InputLayer`` s first in use order),
    ``inputs`` (names of the input layers), ``outputs`` (tensor refs), and whether it was a
    ``Sequential`` model (then every layer has one node fed by the layer before it)."""

    name: str
    layers: tuple[LayerSpec, ...]
    inputs: tuple[str, ...]
    outputs: tuple[TensorRef, ...]
    sequential: bool = False

    def layer(self, name: str) -> LayerSpec:
        for spec in self.layers:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def input_shapes(self) -> tuple[tuple[int | None, ...], ...]:
        """Batch shapes of the inputs, e.g. ``((None, 28, 28, 1),)``."""
        return tuple(tuple(self.layer(n).opts["batch_shape"]) for n in self.inputs)

    @property
    def input_dtypes(self) -> tuple[str, ...]:
        """Dtypes of the inputs: ``"float32"`` unless the input layer says an integer type
        (token ids for an ``Embedding``), e.g. ``("int32",)``."""
        return tuple(str(self.layer(n).opts.get("dtype", "float32")) for n in self.inputs)


def sequential_graph(name: str, batch_shape: tuple[int | None, ...],
                     layers: list[tuple[str, str, dict[str, Any]]],
                     input_name: str = "input_layer") -> ModelGraph:
    """A Sequential ``ModelGraph`` from (class_name, name, options) triples."""
    specs = [LayerSpec("InputLayer", input_name, freeze({"batch_shape": batch_shape}))]
    prev: TensorRef = (input_name, 0, 0)
    for cls, lname, opts in layers:
        specs.append(LayerSpec(cls, lname, freeze(opts), ((prev,),)))
        prev = (lname, 0, 0)
    return ModelGraph(name, tuple(specs), (input_name,), (prev,), sequential=True)


NOOP_LAYERS = frozenset({"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
                         "GaussianNoise", "GaussianDropout", "AlphaDropout",
                         "ActivityRegularization"})
"""Layers that are the identity at inference; ``logits=True`` looks through them."""
