"""Keras ``.h5`` files (Keras 2 / tf.keras and Keras 3 legacy HDF5) ↔ Flax, with h5py alone.

Public API::

    model, variables = load_keras_h5("model.h5")       # a jaxlift KerasModel (Flax linen)
    probs  = model.apply(variables, xb)                 # (N, *input_shape) → (N, …)
    logits = model.apply(variables, xb, logits=True)    # pre-activation of the final layer
    fn = functools.partial(model.apply, logits=True)    # fn(variables, x): what to explain
    save_keras_h5("out.h5", model, variables)           # loads in Keras 3 (keras.models.load_model)
    print(keras_info("model.h5"))                       # layers, output shapes, parameter counts

What is read: the JSON ``model_config`` root attribute (a ``Sequential`` or functional
``Model``/``Functional``) and the weights under ``model_weights/<layer>/`` in the order of each
layer's ``weight_names`` attribute (the order Keras itself loads them in). Both the Keras 2
config dialect (``batch_input_shape``, ``alpha`` of LeakyReLU, nested-list ``inbound_nodes``,
``name:0`` weight names) and Keras 3's (``batch_shape``, ``{"args": …}`` nodes) are understood.
``hard_sigmoid`` follows the file's Keras version: ``clip(0.2x + 0.5, 0, 1)`` for Keras 2,
``clip(x/6 + 0.5, 0, 1)`` for Keras 3. Everything is computed in float32.

What is written: the Keras 3 legacy HDF5 layout (``model.save("m.h5")`` in Keras 3): a Keras 3
config and ``model_weights`` groups, written to a temporary file and moved into place.

Any layer class, option or file defect the reader does not understand raises
``KerasFormatError`` naming the file, and the layer (name and class) where there is one —
never a silently different model.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import h5py
import numpy as np

from jaxlift.errors import InputTypeError
from jaxlift.io.atomic import write_atomically
from jaxlift.io.keras_config import (  # some re-exported: this module was their home
    WEIGHT_ORDER, KerasFormatError, PathLike, as_variables, assign_variables, check_variables,
    existing_file, flat_weights, fmt_shape, is_keras2, layer_weights, locate, model_config,
    parse_model_config, summarize, trace_shapes)
from jaxlift.models.graph import ModelGraph

if TYPE_CHECKING:
    from jaxlift.models.generic import KerasModel

__all__ = ["KerasFormatError", "load_keras_h5", "save_keras_h5", "keras_info", "read_graph",
           "read_variables", "layer_weights", "WEIGHT_ORDER", "parse_model_config",
           "trace_shapes", "summarize"]

# --------------------------------------------------------------------------- files


def _open(path: PathLike) -> h5py.File:
    p = existing_file(path)
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise KerasFormatError(f"{path}: not a readable HDF5 file (not an .h5 model, or "
                               f"truncated/corrupt): {e}") from None


def _attr_str(v: Any) -> str:
    return v.decode("utf8") if isinstance(v, bytes) else str(v)


def _attr_list(group: h5py.Group, name: str) -> list[str]:
    """A string-list attribute that Keras may have split into name0, name1, …"""
    if name in group.attrs:
        vals = list(group.attrs[name])
    else:
        vals, i = [], 0
        while f"{name}{i}" in group.attrs:
            vals.extend(group.attrs[f"{name}{i}"])
            i += 1
    return [_attr_str(v) for v in vals]


def _file_meta(f: h5py.File, path: PathLike) -> tuple[dict, str]:
    """(decoded model config, Keras version string)."""
    raw = f.attrs.get("model_config")
    if raw is None:
        raise KerasFormatError(f"{path}: no 'model_config' attribute — a weights-only file "
                               "(save_weights) or not a Keras model file")
    try:
        config = json.loads(_attr_str(raw))
    except json.JSONDecodeError as e:
        raise KerasFormatError(f"{path}: model_config is not valid JSON: {e}") from None
    version = _attr_str(f.attrs.get("keras_version", b"")) or _attr_str(
        f["model_weights"].attrs.get("keras_version", b"") if "model_weights" in f else b"")
    return config, version


def read_graph(path: PathLike) -> ModelGraph:
    """The ``ModelGraph`` of a Keras ``.h5`` file (config only, no weights)."""
    with _open(path) as f:
        config, version = _file_meta(f, path)
    return parse_model_config(config, is_keras2(version), path)


def _read_raw_weights(f: h5py.File, graph: ModelGraph, path: PathLike
                      ) -> dict[str, list[tuple[str, np.ndarray]]]:
    group = f["model_weights"] if "model_weights" in f else f
    out = {}
    for spec in graph.layers:
        if spec.class_name == "InputLayer" or spec.name not in group:
            continue
        g = group[spec.name]
        items = []
        for wn in _attr_list(g, "weight_names"):
            try:
                items.append((wn, np.asarray(g[wn][()])))
            except (KeyError, OSError) as e:
                raise KerasFormatError(f"{locate(path, spec)}: cannot read weight {wn!r} "
                                       f"(truncated or corrupt file?): {e}") from None
        out[spec.name] = items
    return out


# --------------------------------------------------------------------------- public: load


def read_variables(path: PathLike, graph: ModelGraph | None = None
                   ) -> tuple[ModelGraph, dict[str, dict]]:
    """(graph, Flax variables) of a Keras ``.h5`` file, shapes checked against the config."""
    with _open(path) as f:
        config, version = _file_meta(f, path)
        graph = graph or parse_model_config(config, is_keras2(version), path)
        try:
            raw = _read_raw_weights(f, graph, path)
        except OSError as e:
            raise KerasFormatError(f"{path}: cannot read the weights (truncated or corrupt "
                                   f"file?): {e}") from None
    variables = assign_variables(graph, raw, path)
    return graph, variables


def load_keras_h5(path: PathLike) -> tuple[KerasModel, dict[str, dict]]:
    """Read a Keras 2/3 ``.h5`` model as ``(model, variables)``.

    ``model`` is a Flax linen ``KerasModel``: ``model.apply(variables, xb)`` maps a batch
    (N, *input_shape) to the model's outputs (N, …) (a tuple for several outputs, several
    inputs as several arguments); ``model.apply(variables, xb, logits=True)`` returns the
    pre-activation of the final layer (see ``jaxlift.models.generic``), the function to
    explain: ``functools.partial(model.apply, logits=True)`` is ``fn(variables, x)``.
    ``variables`` is ``{"params": {layer: {...}}}`` plus ``"batch_stats"`` for
    BatchNormalization layers, all float32, with Keras's layouts.

    Raises ``FileNotFoundError`` for a missing file and ``KerasFormatError`` for anything it
    cannot read (message names the file and layer).
    """
    graph, variables = read_variables(path)
    from jaxlift.models.generic import KerasModel  # here: `jaxlift info` needs no Flax

    return KerasModel(graph), variables


# --------------------------------------------------------------------------- public: save


def _str_attr(group: h5py.Group, name: str, values: list[str]) -> None:
    group.attrs[name] = np.array([v.encode("utf8") for v in values]) if values \
        else np.zeros((0,), np.float64)  # what Keras writes for an empty list


def save_keras_h5(path: PathLike, model: Any, variables: Mapping[str, Any]) -> None:
    """Write ``model`` (a ``KerasModel`` or a jaxlift port: anything with ``keras_graph()``)
    and its Flax ``variables`` as a Keras 3 legacy ``.h5`` (``keras.models.load_model`` reads
    it; so does ``load_keras_h5``). Shapes are checked first; the file is written to a
    temporary file beside ``path`` and moved into place, so a failure leaves no partial file.
    """
    if not hasattr(model, "keras_graph"):
        raise InputTypeError(f"save_keras_h5 needs a model with keras_graph() (a KerasModel or a "
                             f"jaxlift.models port), got {type(model).__name__}")
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise InputTypeError("save_keras_h5 needs Flax variables: a dict with a 'params' entry "
                             "(what model.init returns)")
    graph = model.keras_graph()
    config = json.dumps(model_config(graph))
    flat = flat_weights(graph, variables)
    check_variables(graph, as_variables(graph, flat), f"{path} (model to save)")
    path = Path(path)
    names = [s.name for s in graph.layers
             if not (graph.sequential and s.class_name == "InputLayer")]

    def write(fh) -> None:
        with h5py.File(fh, "w") as f:
            f.attrs["keras_version"] = "3.0.0"
            f.attrs["backend"] = "jax"
            f.attrs["saved_by"] = "jaxlift"
            f.attrs["model_config"] = config
            mw = f.create_group("model_weights")
            _str_attr(mw, "layer_names", names)
            mw.attrs["backend"] = "jax"
            mw.attrs["keras_version"] = "3.0.0"
            for lname in names:
                g = mw.create_group(lname)
                items = flat.get(lname, [])
                _str_attr(g, "weight_names", [f"{lname}/{w}" for w, _ in items])
                for w, arr in items:
                    g.create_dataset(f"{lname}/{w}", data=arr)
            _str_attr(mw.create_group("top_level_model_weights"), "weight_names", [])

    write_atomically(path, write, what="Keras .h5")


# --------------------------------------------------------------------------- public: info


def keras_info(path: PathLike) -> str:
    """A Keras-``summary()``-like description of an ``.h5`` file: Keras version and backend,
    then each layer with its class, output shape (batch dim None) and parameter count, and
    the totals. Raises like ``load_keras_h5`` on files it cannot read."""
    with _open(path) as f:
        config, version = _file_meta(f, path)
        backend = _attr_str(f.attrs.get("backend", b"?"))
    graph = parse_model_config(config, is_keras2(version), path)
    head = f"{path}\nKeras {version or '?'} (backend {backend}); input(s) " + ", ".join(
        fmt_shape(s) for s in graph.input_shapes)
    return head + "\n" + summarize(graph)
