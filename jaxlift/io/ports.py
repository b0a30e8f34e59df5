"""Keras ``.h5`` files into the hand-written Flax ports of the seeds' three CNNs
(:mod:`jaxlift.models.mnist`, :mod:`jaxlift.models.ptc`, :mod:`jaxlift.models.cats_dogs`).

A port describes its own network as a Keras graph (``port.keras_graph()``); loading a file into
it checks that the file holds that architecture and renames the file's weights onto the port's
layers. The models know nothing of files: this module reads the file (:mod:`jaxlift.io.keras_h5`)
and hands the port its variables::

    model, variables = load_mnist("mnist_cnn.h5")          # MnistCNN, (N, 28, 28, 1) → (N, 10)
    model, variables = load_ptc("ptc_cnn.h5")              # PtcCNN(length=L read from the file)
    model, variables = load_cats_dogs("catsordogs/model.h5")
    logits = model.apply(variables, x, logits=True)

A file of another architecture raises ``KerasFormatError`` naming the file and the first layer
that differs.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from jaxlift.io.keras_config import KerasFormatError, layer_weights
from jaxlift.io.keras_h5 import read_graph, read_variables
from jaxlift.models.graph import NOOP_LAYERS, ModelGraph

if TYPE_CHECKING:
    from jaxlift.models.cats_dogs import CatsDogsCNN
    from jaxlift.models.mnist import MnistCNN
    from jaxlift.models.ptc import PtcCNN

__all__ = ["load_port_params", "load_mnist", "load_ptc", "load_cats_dogs"]


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


def load_mnist(path: str | os.PathLike) -> tuple[MnistCNN, dict]:
    """``(MnistCNN(), variables)`` from a Keras ``.h5`` of the paper's MNIST CNN (any layer
    names); ``KerasFormatError`` if the file holds another architecture."""
    from jaxlift.models.mnist import MnistCNN
    port = MnistCNN()
    return port, load_port_params(port, path)


def load_ptc(path: str | os.PathLike) -> tuple[PtcCNN, dict]:
    """``(PtcCNN(length=L), variables)`` from a Keras ``.h5`` of the PTC 1-D CNN; the
    vocabulary length L is read from the file's input shape ``(None, L, 1)``."""
    from jaxlift.models.ptc import PtcCNN
    shape = read_graph(path).input_shapes[0]
    if len(shape) != 3 or shape[1] is None:
        raise KerasFormatError(f"{path}: input shape {shape} is not (None, L, 1)")
    port = PtcCNN(length=int(shape[1]))
    return port, load_port_params(port, path)


def load_cats_dogs(path: str | os.PathLike) -> tuple[CatsDogsCNN, dict]:
    """``(CatsDogsCNN(), variables)`` from a Keras ``.h5`` of the cats-vs-dogs CNN, e.g. the
    pretrained ``catsordogs/model.h5``."""
    from jaxlift.models.cats_dogs import CatsDogsCNN
    port = CatsDogsCNN()
    return port, load_port_params(port, path)
