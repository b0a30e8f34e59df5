"""Keras 3 ``.keras`` files (``model.save("m.keras")``) → Flax, with zipfile and h5py alone.

The archive holds ``config.json`` (the model config, the same dialect as a Keras 3 ``.h5``'s
``model_config``), ``metadata.json`` (``keras_version``) and ``model.weights.h5``, whose layout
differs from the legacy ``.h5``: each layer of ``model.layers`` has a group
``layers/<snake_case of its class>[_k]`` (``dense``, ``dense_1``, …; the group's ``vars`` has
the layer's name as attribute ``name`` in recent Keras), its own weights are the datasets
``vars/0``, ``vars/1``, … in creation order, and the weights of sub-layers sit under the
sub-layer's attribute name: ``cell/vars/i`` for a recurrent layer,
``forward_layer/cell/vars/i`` and ``backward_layer/cell/vars/i`` for ``Bidirectional``,
``{query,key,value,output}_dense/vars/{0,1}`` for ``MultiHeadAttention``.

Read only; ``jaxlift.load_keras`` picks this reader or the ``.h5`` one by the file's content.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from jaxlift.io.keras_config import (KerasFormatError, PathLike, assign_variables, existing_file,
                                     fmt_shape, is_keras2, layer_weights, locate,
                                     parse_model_config, summarize)
from jaxlift.models.graph import LayerSpec, ModelGraph

if TYPE_CHECKING:
    from jaxlift.models.generic import KerasModel

__all__ = ["load_keras_v3", "read_graph_v3", "read_variables_v3", "keras_v3_info",
           "ZIP_MAGIC"]

ZIP_MAGIC = b"PK\x03\x04"


def _snake(name: str) -> str:
    """Keras's ``to_snake_case`` of a class name: ``Conv2D`` → ``conv2d``,
    ``MultiHeadAttention`` → ``multi_head_attention``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _weight_paths(spec: LayerSpec) -> list[str]:
    """Dataset paths, inside the layer's group, of the layer's weights in ``layer_weights``
    order."""
    names = [n for _, n in layer_weights(spec)]
    cls = spec.class_name
    if cls in ("SimpleRNN", "LSTM", "GRU"):
        return [f"cell/vars/{i}" for i in range(len(names))]
    if cls == "Bidirectional":
        out, count = [], {"forward": 0, "backward": 0}
        for n in names:
            side = n.split("_", 1)[0]
            out.append(f"{side}_layer/cell/vars/{count[side]}")
            count[side] += 1
        return out
    if cls == "MultiHeadAttention":
        return [f"{n.rsplit('_', 1)[0]}_dense/vars/{0 if n.endswith('kernel') else 1}"
                for n in names]
    return [f"vars/{i}" for i in range(len(names))]


def _datasets(group: h5py.Group) -> list[str]:
    found: list[str] = []
    group.visititems(lambda n, o: found.append(n) if isinstance(o, h5py.Dataset) else None)
    return found


def _open(path: PathLike) -> zipfile.ZipFile:
    p = existing_file(path)
    try:
        return zipfile.ZipFile(p)
    except (zipfile.BadZipFile, OSError) as e:
        raise KerasFormatError(f"{path}: not a readable .keras archive (truncated or "
                               f"corrupt?): {e}") from None


def _member(z: zipfile.ZipFile, name: str, path: PathLike) -> bytes:
    try:
        return z.read(name)
    except KeyError:
        raise KerasFormatError(f"{path}: the .keras archive has no {name} (members: "
                               f"{', '.join(z.namelist())})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise KerasFormatError(f"{path}: cannot read {name} from the archive (truncated or "
                               f"corrupt?): {e}") from None


def _meta(z: zipfile.ZipFile, path: PathLike) -> tuple[dict, str]:
    """(decoded model config, Keras version string)."""
    try:
        config = json.loads(_member(z, "config.json", path))
    except json.JSONDecodeError as e:
        raise KerasFormatError(f"{path}: config.json is not valid JSON: {e}") from None
    version = ""
    if "metadata.json" in z.namelist():
        try:
            version = str(json.loads(_member(z, "metadata.json", path)).get("keras_version", ""))
        except (json.JSONDecodeError, AttributeError):
            version = ""
    return config, version


def _parse(config: dict, version: str, path: PathLike) -> ModelGraph:
    if version and is_keras2(version):
        raise KerasFormatError(f"{path}: a .keras archive written by Keras {version}; only "
                               "Keras 3's .keras layout is read (save as .h5 instead)")
    return parse_model_config(config, False, path)


def read_graph_v3(path: PathLike) -> ModelGraph:
    """The ``ModelGraph`` of a ``.keras`` archive (config only, no weights)."""
    with _open(path) as z:
        config, version = _meta(z, path)
    return _parse(config, version, path)


def _layer_groups(layers: h5py.Group, config: dict) -> dict[str, h5py.Group]:
    """Layer name → its weights group: by the ``name`` attribute Keras writes on ``vars``
    where present, else by Keras's naming (snake-cased class, numbered in layer order)."""
    by_attr: dict[str, h5py.Group] = {}
    for key in layers:
        vars_ = layers[key].get("vars")
        name = vars_.attrs.get("name") if isinstance(vars_, h5py.Group) else None
        if name is not None:
            by_attr[name.decode() if isinstance(name, bytes) else str(name)] = layers[key]
    by_order: dict[str, h5py.Group] = {}
    used: dict[str, int] = {}
    for entry in (config.get("config") or {}).get("layers", []):
        cls = str(entry.get("class_name"))
        name = (entry.get("config") or {}).get("name") or entry.get("name")
        base = _snake(cls)
        n = used.get(base, 0)
        used[base] = n + 1
        key = base if n == 0 else f"{base}_{n}"
        if key in layers:
            by_order[str(name)] = layers[key]
    return {**by_order, **by_attr}


def _read_raw(f: h5py.File, graph: ModelGraph, config: dict, path: PathLike
              ) -> dict[str, list[tuple[str, np.ndarray]]]:
    if "layers" not in f:
        raise KerasFormatError(f"{path}: model.weights.h5 has no 'layers' group")
    groups = _layer_groups(f["layers"], config)
    raw: dict[str, list[tuple[str, np.ndarray]]] = {}
    for spec in graph.layers:
        wanted = _weight_paths(spec) if spec.class_name != "InputLayer" else []
        if not wanted:
            continue
        g = groups.get(spec.name)
        if g is None:
            raise KerasFormatError(f"{locate(path, spec)}: no weights for the layer in "
                                   "model.weights.h5")
        have = _datasets(g)
        missing = [w for w in wanted if w not in g]
        if missing or len(have) != len(wanted):
            raise KerasFormatError(f"{locate(path, spec)}: model.weights.h5 holds {sorted(have)} "
                                   f"but the config implies {wanted}")
        raw[spec.name] = [(w, np.asarray(g[w][()])) for w in wanted]
    return raw


def read_variables_v3(path: PathLike) -> tuple[ModelGraph, dict[str, dict]]:
    """(graph, Flax variables) of a ``.keras`` archive, shapes checked against the config."""
    with _open(path) as z:
        config, version = _meta(z, path)
        graph = _parse(config, version, path)
        data = _member(z, "model.weights.h5", path)
    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            raw = _read_raw(f, graph, config, path)
    except OSError as e:
        raise KerasFormatError(f"{path}: model.weights.h5 is not readable HDF5 (truncated or "
                               f"corrupt?): {e}") from None
    return graph, assign_variables(graph, raw, path)


def load_keras_v3(path: PathLike) -> tuple[KerasModel, dict[str, Any]]:
    """Read a Keras 3 ``.keras`` archive as ``(model, variables)``, like ``load_keras_h5``."""
    graph, variables = read_variables_v3(path)
    from jaxlift.models.generic import KerasModel  # here: `jaxlift info` needs no Flax

    return KerasModel(graph), variables


def keras_v3_info(path: PathLike) -> str:
    """``keras_info`` for a ``.keras`` archive: Keras version, inputs, the layer table."""
    with _open(path) as z:
        config, version = _meta(z, path)
    graph = _parse(config, version, path)
    head = f"{path}\nKeras {version or '?'} (.keras archive); input(s) " + ", ".join(
        fmt_shape(s) for s in graph.input_shapes)
    return head + "\n" + summarize(graph)
