"""Loading a Keras ``.h5`` into a hand-written port: check the architecture, rename weights."""
from __future__ import annotations

import os
from typing import Any

from jaxlift.models.generic import NOOP_LAYERS, ModelGraph


def _skeleton(graph: ModelGraph) -> list[tuple[str, Any]]:
    """The layers that matter for the computation: class and options, in order."""
    return [(s.class_name, s.options) for s in graph.layers
            if s.class_name not in NOOP_LAYERS and s.class_name != "InputLayer"]


def load_port_params(port: Any, path: str | os.PathLike) -> dict[str, dict]:
    """Flax variables of ``port`` (a module with ``keras_graph()``) from a Keras ``.h5``.

    The file's layers (InputLayer and inference no-ops such as Dropout aside) must have the
    classes and options of ``port.keras_graph()``, in order, and the same input shape; the
    weights of the i-th weighted layer of the file go to the i-th weighted layer of the port
    (Keras's own rule), whatever the layer names. Raises ``KerasFormatError`` naming the file
    and the first layer that differs.
    """
    from jaxlift.io.keras_h5 import KerasFormatError, layer_weights, read_variables

    graph, variables = read_variables(path)
    want = port.keras_graph()
    have_in, want_in = graph.input_shapes[0][1:], want.input_shapes[0][1:]
    if len(graph.inputs) != 1 or tuple(have_in) != tuple(want_in):
        raise KerasFormatError(f"{path}: input shape {graph.input_shapes} does not match "
                               f"{type(port).__name__}'s {want.input_shapes}")
    a, b = _skeleton(graph), _skeleton(want)
    for i, (x, y) in enumerate(zip(a + [None] * len(b), b + [None] * len(a))):
        if x != y:
            raise KerasFormatError(
                f"{path}: not a {type(port).__name__}: layer {i} (not counting input and "
                f"dropout layers) is {x} in the file but {y} in the port")
        if x is None:
            break
    src = [s for s in graph.layers if layer_weights(s)]
    dst = [s for s in want.layers if layer_weights(s)]
    out: dict[str, dict] = {}
    for s, d in zip(src, dst):
        for coll, _ in layer_weights(s):
            out.setdefault(coll, {})[d.name] = variables[coll][s.name]
    out.setdefault("params", {})
    return out
