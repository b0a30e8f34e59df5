"""Layer shapes from Keras configs without JAX (issue 19): ``infer_shapes`` (the option-only
rules of ``jaxlift.io.keras_shapes``) gives exactly what tracing the Flax model gives
(``trace_shapes``) — tensor shapes and weight shapes — for a zoo of graphs that uses every
supported layer class, for files written by ``save_keras_h5``, for the shipped files and the
ports; and ``jaxlift info`` imports neither JAX nor Flax."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxlift.io.keras_config import (OPTION_PARSERS, KerasFormatError, infer_shapes,
                                     trace_shapes)
from jaxlift.io.keras_h5 import keras_info, read_graph, save_keras_h5
from jaxlift.io.keras_shapes import SHAPE_RULES, layer_shapes
from jaxlift.models.generic import LAYER_BUILDERS, KerasModel
from jaxlift.models.graph import LayerSpec, ModelGraph, freeze

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted([*(ROOT / "jaxlift" / "data").glob("*.h5"),
                  *(ROOT / "experiments" / "results").glob("*.h5")])


class Net:
    """A functional graph built call by call: ``x = net.input((None, 8)); y = net("Dense",
    x, units=3)``; options are Keras 3 config entries, parsed by the real reader."""

    def __init__(self) -> None:
        self.specs: list[LayerSpec] = []
        self.inputs: list[str] = []

    def input(self, shape: tuple, dtype: str | None = None) -> str:
        name = f"in{len(self.inputs)}"
        opts = {"batch_shape": shape, **({"dtype": dtype} if dtype else {})}
        self.specs.append(LayerSpec("InputLayer", name, freeze(opts)))
        self.inputs.append(name)
        return name

    def __call__(self, cls: str, *inbound: str, **cfg) -> str:
        name = f"l{len(self.specs)}_{cls.lower()}"
        opts = OPTION_PARSERS[cls](cfg, False, name)
        if cls == "MultiHeadAttention":
            opts["use_causal_mask"] = False
        self.specs.append(LayerSpec(cls, name, freeze(opts), (tuple((r, 0, 0) for r in inbound),)))
        return name

    def graph(self, *outputs: str) -> ModelGraph:
        return ModelGraph("zoo", tuple(self.specs), tuple(self.inputs),
                          tuple((o, 0, 0) for o in outputs))


def image_2d() -> ModelGraph:
    n = Net()
    x = n("Conv2D", n.input((None, 12, 10, 3)), filters=4, kernel_size=3, strides=2,
          padding="same", activation="relu")
    x = n("BatchNormalization", x)
    x = n("PReLU", x, shared_axes=[1, 2])
    x = n("ZeroPadding2D", x, padding=[[1, 2], [0, 1]])
    x = n("Cropping2D", x, cropping=[[0, 1], [1, 0]])
    x = n("MaxPooling2D", x, pool_size=2, strides=1, padding="same")
    x = n("AveragePooling2D", x, pool_size=2)
    x = n("Conv2D", x, filters=6, kernel_size=[2, 1], groups=2, use_bias=False)
    x = n("SpatialDropout2D", x, rate=0.1)
    x = n("Permute", x, dims=[3, 1, 2])
    g = n("GlobalMaxPooling2D", x, keepdims=True)
    x = n("Flatten", x)
    return n.graph(n("Softmax", n("Dense", x, units=5)), g)


def channels_first() -> ModelGraph:
    n = Net()
    cf = {"data_format": "channels_first"}
    x = n("Conv2D", n.input((None, 3, 9, 9)), filters=5, kernel_size=3, **cf)
    x = n("MaxPooling2D", x, pool_size=2, **cf)
    x = n("ZeroPadding2D", x, padding=1, **cf)
    k = n("GlobalAveragePooling2D", x, keepdims=True, **cf)
    x = n("Flatten", k, **cf)
    return n.graph(n("Dense", x, units=2), n("GlobalMaxPooling2D", k, **cf))


def ranks_1_and_3() -> ModelGraph:
    n = Net()
    x = n("Conv1D", n.input((None, 20, 3)), filters=4, kernel_size=3, padding="causal",
          dilation_rate=2)
    x = n("ZeroPadding1D", x, padding=2)
    x = n("Cropping1D", x, cropping=[1, 0])
    x = n("SpatialDropout1D", x, rate=0.2)
    x = n("MaxPooling1D", x, pool_size=3)
    x = n("AveragePooling1D", x, pool_size=2, padding="same")
    a = n("GlobalAveragePooling1D", x)
    b = n("GlobalMaxPooling1D", x)
    v = n("Conv3D", n.input((None, 6, 6, 7, 2)), filters=3, kernel_size=2, strides=[1, 1, 2])
    v = n("MaxPooling3D", v, pool_size=2)
    v = n("ZeroPadding3D", v, padding=1)
    v = n("Cropping3D", v, cropping=[[1, 0], [0, 1], [1, 1]])
    v = n("SpatialDropout3D", v, rate=0.1)
    v = n("AveragePooling3D", v, pool_size=1)
    w = n("GlobalAveragePooling3D", v)
    return n.graph(n("Concatenate", a, b, n("GlobalMaxPooling3D", v), w))


def merges_and_activations() -> ModelGraph:
    n = Net()
    a, b = n.input((None, 8)), n.input((None, 8))
    outs = [n(k, a, b) for k in ("Add", "Subtract", "Multiply", "Average", "Maximum",
                                  "Minimum")]
    x = n("Concatenate", *outs, axis=-1)
    for cls, cfg in (("Activation", {"activation": "tanh"}), ("ReLU", {"max_value": 6.0}),
                     ("LeakyReLU", {"negative_slope": 0.1}), ("ELU", {}),
                     ("Dropout", {"rate": 0.5}), ("GaussianNoise", {"stddev": 0.1}),
                     ("GaussianDropout", {"rate": 0.1}), ("AlphaDropout", {"rate": 0.1}),
                     ("ActivityRegularization", {})):
        x = n(cls, x, **cfg)
    r = n("Reshape", x, target_shape=[4, -1])
    r = n("LayerNormalization", r, axis=[1, 2])
    r = n("BatchNormalization", r, axis=1, center=False)
    r = n("Reshape", r, target_shape=[2, 2, 12])
    return n.graph(n("Dense", x, units=3, activation="sigmoid"), r)


def sequences() -> ModelGraph:
    n = Net()
    x = n("Embedding", n.input((None, 7), "int32"), input_dim=20, output_dim=6)
    x = n("SimpleRNN", x, units=5, return_sequences=True)
    x = n("LSTM", x, units=4, return_sequences=True)
    x = n("Bidirectional", x, merge_mode="concat", layer={
        "class_name": "GRU", "config": {"name": "g", "units": 3, "return_sequences": True}})
    q = n("MultiHeadAttention", x, x, num_heads=2, key_dim=3)
    k = n("Dense", q, units=5)
    q = n("MultiHeadAttention", q, x, k, num_heads=3, key_dim=2, value_dim=4, output_shape=7,
          use_bias=False)
    q = n("LayerNormalization", q, rms_scaling=True)
    y = n("Bidirectional", q, merge_mode="sum", layer={
        "class_name": "LSTM", "config": {"name": "f", "units": 2}})
    z = n("GRU", q, units=3, reset_after=False)
    return n.graph(y, z)


def open_dims() -> ModelGraph:
    n = Net()
    s = n("Conv1D", n.input((None, None, 4)), filters=3, kernel_size=3)
    s = n("GRU", s, units=2, return_sequences=True)
    s = n("MultiHeadAttention", s, s, num_heads=1, key_dim=2)
    r = n("Reshape", s, target_shape=[-1, 1])
    i = n("Conv2D", n.input((None, None, 9, 3)), filters=2, kernel_size=2, strides=2)
    i = n("Flatten", n("MaxPooling2D", i, pool_size=2))
    g = n("GlobalMaxPooling2D", n("Conv2D", n.input((None, None, None, 2)), filters=2,
                                  kernel_size=2))
    return n.graph(n("GlobalAveragePooling1D", s), r, i, g)


ZOO = {f.__name__: f for f in (image_2d, channels_first, ranks_1_and_3,
                                merges_and_activations, sequences, open_dims)}


def test_every_layer_class_has_a_rule_and_a_zoo_model():
    assert set(SHAPE_RULES) == set(OPTION_PARSERS) == set(LAYER_BUILDERS)
    used = {s.class_name for f in ZOO.values() for s in f().layers} - {"InputLayer"}
    assert used == set(SHAPE_RULES), set(SHAPE_RULES) - used


@pytest.mark.parametrize("name", list(ZOO))
def test_shapes_equal_the_traced_ones(name):
    graph = ZOO[name]()
    inferred, traced = infer_shapes(graph), trace_shapes(graph)
    assert inferred == traced
    if name == "open_dims":  # open axes stay open; the pooled-away ones close again
        shapes = inferred[0]
        assert shapes[("l4_reshape", 0, 0)] == (None, None, 1)
        assert shapes[("l7_maxpooling2d", 0, 0)] == (None, None, 2, 2)
        assert shapes[("l8_flatten", 0, 0)] == (None, None)
        assert shapes[("l11_globalmaxpooling2d", 0, 0)] == (None, 2)


def _zero_variables(graph: ModelGraph) -> dict:
    """Variables shaped by the JAX-free rules (the writer checks them against the traced
    model, so it refuses a wrong rule)."""
    _, weights = infer_shapes(graph)
    out: dict = {"params": {}}
    for layer, colls in weights.items():
        for coll, ws in colls.items():
            out.setdefault(coll, {})[layer] = {w: np.zeros(s, np.float32) for w, s in ws.items()}
    return out


@pytest.mark.parametrize("name", ["image_2d", "merges_and_activations", "sequences"])
def test_files_written_by_save_keras_h5(name, tmp_path):
    graph = ZOO[name]()
    path = tmp_path / f"{name}.h5"
    save_keras_h5(path, KerasModel(graph), _zero_variables(graph))
    read = read_graph(path)
    shapes, weights = infer_shapes(read)
    assert (shapes, weights) == trace_shapes(read)
    n_params = sum(int(np.prod(s)) for c in weights.values() for ws in c.values()
                   for s in ws.values())
    assert f"Total params: {n_params:,}" in keras_info(path)


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_files(path):
    graph = read_graph(path)
    assert infer_shapes(graph) == trace_shapes(graph)


def test_ports():
    from jaxlift.models import cats_dogs, mnist, ptc
    for port in (mnist.MnistCNN(), cats_dogs.CatsDogsCNN(), ptc.PtcCNN(length=40)):
        graph = port.keras_graph()
        assert infer_shapes(graph) == trace_shapes(graph), type(port).__name__


def test_shape_rules_refuse_with_the_reason():
    with pytest.raises(ValueError, match="does not fit"):
        layer_shapes("MaxPooling1D", {"pool_size": (5,), "strides": None, "padding": "valid",
                                      "data_format": "channels_last"}, [(None, 3, 2)])
    with pytest.raises(ValueError, match="cannot join dimensions 3 and 4"):
        layer_shapes("Add", {}, [(None, 3), (None, 4)])
    with pytest.raises(ValueError, match="Subtract takes exactly 2"):
        layer_shapes("Subtract", {}, [(None, 3)] * 3)
    with pytest.raises(ValueError, match=r"cannot reshape \(None, 10\)"):
        layer_shapes("Reshape", {"target_shape": (3, -1)}, [(None, 10)])
    with pytest.raises(KeyError, match="Nope"):
        layer_shapes("Nope", {}, [(None, 1)])


def test_infer_shapes_names_the_file_and_layer():
    n = Net()
    x = n("Dense", n.input((None, 4)), units=3)
    bad = n.graph(n("Concatenate", x, n.input((None, 2, 2)), axis=-1))
    with pytest.raises(KerasFormatError, match=r"m\.h5: layer 'l3_concatenate' \(Concatenate\)"
                       r": cannot apply .*different ranks"):
        infer_shapes(bad, "m.h5")


def test_info_imports_neither_jax_nor_flax():
    model = ROOT / "jaxlift" / "data" / "mnist_small.h5"
    code = ("import runpy, sys\n"
            f"sys.argv = ['jaxlift', 'info', {str(model)!r}]\n"
            "try:\n    runpy.run_module('jaxlift.cli', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('jax', 'jaxlib', 'flax', 'optax', 'matplotlib'))\n"
            "print('HEAVY', heavy)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "(None, 13, 13, 8)" in out.stdout and "Total params: 28,514" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout[-500:]
