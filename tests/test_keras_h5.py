"""jaxlift.io.keras_h5: Keras .h5 ↔ Flax, checked against Keras 3 itself (JAX backend).

A zoo of tiny Keras models covers every supported layer and activation; each is saved with
Keras, read with jaxlift, and compared on random inputs; then written back with
save_keras_h5 and read by Keras and by jaxlift again.
"""
from __future__ import annotations

import functools
import json
import os
import shutil

import h5py
import jax
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
from keras import layers as K  # noqa: E402

from jaxlift.io.keras_h5 import (KerasFormatError, keras_info, load_keras_h5,  # noqa: E402
                                 read_graph, save_keras_h5)
from jaxlift.io.keras_config import infer_shapes, trace_shapes  # noqa: E402
from jaxlift.models.layers import ACTIVATIONS  # noqa: E402

TOL = 1e-5
KERAS3_ACTS = sorted(a for a in ACTIVATIONS if a != "hard_sigmoid_keras2")


def _randomize(model: "keras.Model", seed: int) -> None:
    """Random weights everywhere (positive for BatchNorm variances)."""
    rng = np.random.default_rng(seed)
    new = []
    for w in model.weights:
        v = rng.normal(0.0, 0.5, w.shape).astype(np.float32)
        if "variance" in w.path:
            v = np.abs(v) + 0.5
        new.append(v)
    model.set_weights(new)


# ----------------------------------------------------------------------------- the zoo

def zoo_activations():
    x = keras.Input((6,))
    outs = [K.Dense(3, activation=a, name=f"d_{a}")(x) for a in KERAS3_ACTS]
    outs += [K.Activation(a, name=f"a_{a}")(x) for a in ("relu", "gelu", "hard_sigmoid", "selu")]
    return keras.Model(x, K.Concatenate()(outs)), (6,)


def zoo_conv2d_last():
    return keras.Sequential([
        keras.Input((14, 16, 2)),
        K.Conv2D(3, 3, strides=2, padding="same", activation="relu"),
        K.Conv2D(4, (2, 3), padding="valid", dilation_rate=2, activation="tanh"),
        K.ZeroPadding2D(((1, 2), (0, 1))),
        K.MaxPooling2D(2, padding="same"),
        K.AveragePooling2D(2, strides=1, padding="same"),
        K.BatchNormalization(),
        K.Cropping2D(((1, 0), (0, 1))),
        K.Conv2D(4, 1, groups=2),
        K.AveragePooling2D((1, 2)),
        K.Flatten(),
        K.Dropout(0.3),
        K.Dense(3, activation="softmax"),
    ]), (14, 16, 2)


def zoo_conv2d_first():
    cf = "channels_first"
    return keras.Sequential([
        keras.Input((2, 9, 8)),
        K.Conv2D(3, 3, padding="same", data_format=cf, activation="elu"),
        K.MaxPooling2D(2, data_format=cf),
        K.ZeroPadding2D(1, data_format=cf),
        K.AveragePooling2D(2, strides=1, padding="same", data_format=cf),
        K.BatchNormalization(axis=1),
        K.Cropping2D(((0, 1), (1, 0)), data_format=cf),
        K.SpatialDropout2D(0.2, data_format=cf),
        K.Flatten(data_format=cf),
        K.Dense(2),
    ]), (2, 9, 8)


def zoo_conv2d_first_globals():
    cf = "channels_first"
    x = keras.Input((3, 6, 5))
    h = K.Conv2D(4, 2, strides=(2, 1), data_format=cf)(x)
    a = K.GlobalAveragePooling2D(data_format=cf)(h)
    b = K.GlobalMaxPooling2D(data_format=cf)(h)
    c = K.Flatten()(h)  # Flatten with its default (channels_last) data_format
    return keras.Model(x, K.Concatenate()([a, b, c])), (3, 6, 5)


def zoo_conv1d():
    x = keras.Input((25, 2))
    h = K.Conv1D(4, 5, padding="same", activation="relu")(x)
    h = K.MaxPooling1D(2)(h)
    h = K.Conv1D(3, 3, padding="causal", dilation_rate=2, activation="softsign")(h)
    h = K.AveragePooling1D(3, strides=2, padding="same")(h)
    h = K.ZeroPadding1D(2)(h)
    h = K.Cropping1D((1, 2))(h)
    h = K.Conv1D(3, 2, strides=2)(h)
    h = K.MaxPooling1D(2, strides=1, padding="same")(h)
    g1 = K.GlobalMaxPooling1D()(h)
    g2 = K.Flatten()(K.GlobalAveragePooling1D(keepdims=True)(h))
    g3 = K.GlobalAveragePooling2D()(K.Reshape((2, -1, 3))(K.Cropping1D((0, 1))(h)))
    return keras.Model(x, K.Concatenate()([g1, g2, g3])), (25, 2)


def zoo_merges():
    """Two inputs, a shared layer called twice, every merge, two outputs."""
    x1, x2 = keras.Input((5,), name="in_a"), keras.Input((5,), name="in_b")
    shared = K.Dense(4, activation="swish", name="shared")
    a, b = shared(x1), shared(x2)
    merged = [K.Add()([a, b]), K.Subtract()([a, b]), K.Multiply()([a, b]),
              K.Average()([a, b, a]), K.Maximum()([a, b]), K.Minimum()([a, b])]
    h = K.Concatenate(axis=-1)(merged)
    h = K.Reshape((6, 4))(h)
    h = K.Permute((2, 1))(h)
    h = K.Concatenate(axis=1)([h, h])
    h = K.Flatten()(h)
    out1 = K.Dense(3, activation="sigmoid", name="out1")(h)
    out2 = K.Softmax(name="out2")(K.Dense(2, name="pre2")(h))
    return keras.Model([x1, x2], [out1, out2]), ((5,), (5,))


def zoo_activation_layers():
    x = keras.Input((6, 5, 3))
    h = K.Conv2D(4, 2)(x)
    h = K.PReLU(shared_axes=[1, 2])(h)
    h = K.ReLU(max_value=1.5, negative_slope=0.1, threshold=0.2)(h)
    h = K.LeakyReLU(negative_slope=0.2)(K.Conv2D(4, 1)(h))
    h = K.ELU(alpha=0.7)(h)
    h = K.GaussianNoise(0.1)(h)
    h = K.GaussianDropout(0.1)(h)
    h = K.AlphaDropout(0.1)(h)
    h = K.ActivityRegularization(l1=0.01)(h)
    h = K.PReLU()(h)
    h = K.ReLU(max_value=6.0)(h)
    h = K.ReLU()(K.Dense(3)(h))
    h = K.BatchNormalization(center=False, epsilon=0.01)(h)
    h = K.Flatten()(h)
    h = K.Dense(4)(h)
    h = K.Dropout(0.5)(K.Activation("softmax")(h))
    return keras.Model(x, h), (6, 5, 3)


ZOO = {f.__name__[4:]: f for f in (zoo_activations, zoo_conv2d_last, zoo_conv2d_first,
                                   zoo_conv2d_first_globals, zoo_conv1d, zoo_merges,
                                   zoo_activation_layers)}


def _inputs(shapes, seed=0, n=3):
    rng = np.random.default_rng(seed)
    if isinstance(shapes[0], int):
        return [rng.normal(0, 1.5, (n, *shapes)).astype(np.float32)]
    return [rng.normal(0, 1.5, (n, *s)).astype(np.float32) for s in shapes]


def _predict(kmodel, xs):
    """Keras's outputs (one jitted predict: much faster than eager calls on JAX)."""
    return kmodel.predict(xs if len(xs) > 1 else xs[0], verbose=0)


def _np_list(y):
    return [np.asarray(a) for a in (y if isinstance(y, (list, tuple)) else [y])]


def _close(a, b, tol=TOL):
    a, b = _np_list(a), _np_list(b)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape
        np.testing.assert_allclose(u, v, atol=tol, rtol=tol)


@pytest.fixture(scope="module")
def zoo_files(tmp_path_factory):
    """Each zoo model saved by Keras as .h5, with inputs and Keras's outputs."""
    d = tmp_path_factory.mktemp("zoo")
    out = {}
    for i, (name, make) in enumerate(ZOO.items()):
        model, shapes = make()
        _randomize(model, i)
        xs = _inputs(shapes, seed=i)
        y = _predict(model, xs)
        path = d / f"{name}.h5"
        model.save(path)
        out[name] = (path, model, xs, _np_list(y))
    return out


@pytest.mark.parametrize("name", list(ZOO))
def test_forward_matches_keras(zoo_files, name):
    path, _, xs, y = zoo_files[name]
    model, variables = load_keras_h5(path)
    _close(model.apply(variables, *xs), y)


@pytest.mark.parametrize("name", list(ZOO))
def test_round_trip(zoo_files, name, tmp_path):
    path, kmodel, xs, y = zoo_files[name]
    model, variables = load_keras_h5(path)
    out = tmp_path / "rt.h5"
    save_keras_h5(out, model, variables)
    k2 = keras.models.load_model(out, compile=False)
    _close(_predict(k2, xs), y)
    assert k2.count_params() == kmodel.count_params()
    m2, v2 = load_keras_h5(out)
    _close(m2.apply(v2, *xs), y)
    assert not list(tmp_path.glob("*.tmp"))


def test_logits_are_pre_activation(zoo_files):
    # Dense(softmax) → Dropout as the last layers: logits look through the Dropout.
    path, kmodel, xs, y = zoo_files["conv2d_last"]
    model, variables = load_keras_h5(path)
    z = np.asarray(model.apply(variables, xs[0], logits=True))
    penult = keras.Model(kmodel.inputs, kmodel.layers[-1].input)(xs[0])
    w, b = kmodel.layers[-1].get_weights()
    np.testing.assert_allclose(z, np.asarray(penult) @ w + b, atol=TOL, rtol=TOL)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(z)), y[0], atol=TOL)
    # An Activation("softmax") layer (then Dropout) as the end: logits are its input.
    path, kmodel, xs, y = zoo_files["activation_layers"]
    model, variables = load_keras_h5(path)
    z = model.apply(variables, xs[0], logits=True)
    np.testing.assert_allclose(np.asarray(z), np.asarray(
        keras.Model(kmodel.inputs, kmodel.layers[-2].input)(xs[0])), atol=TOL, rtol=TOL)
    # Two outputs: Dense(sigmoid) and a Softmax layer.
    path, kmodel, xs, y = zoo_files["merges"]
    model, variables = load_keras_h5(path)
    z1, z2 = model.apply(variables, *xs, logits=True)
    np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(z1)), y[0], atol=TOL)
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(z2)), y[1], atol=TOL)
    # functools.partial(model.apply, logits=True) is fn(params, x)
    fn = functools.partial(model.apply, logits=True)
    _close(fn(variables, *xs), [z1, z2])


def test_keras_info_counts(zoo_files):
    for name, (path, kmodel, _, _) in zoo_files.items():
        text = keras_info(path)
        assert f"Total params: {kmodel.count_params():,}" in text, name
        for layer in kmodel.layers:
            assert layer.name in text
        graph = read_graph(path)  # info's JAX-free shapes are the traced ones
        assert infer_shapes(graph) == trace_shapes(graph), name
        shapes, _ = infer_shapes(graph)
        for layer in kmodel.layers:  # … and Keras's own
            if type(layer).__name__ != "InputLayer":
                assert shapes[(layer.name, 0, 0)] == tuple(layer.output.shape), layer.name


def test_jit_and_dtype(zoo_files):
    path, _, xs, y = zoo_files["conv1d"]
    model, variables = load_keras_h5(path)
    out = jax.jit(model.apply)(variables, xs[0])
    assert out.dtype == np.float32
    _close(out, y)


def test_hard_sigmoid_formula():
    x = np.linspace(-4, 4, 17, dtype=np.float32)
    ours = np.asarray(ACTIVATIONS["hard_sigmoid"](x))
    np.testing.assert_allclose(ours, np.asarray(keras.activations.hard_sigmoid(x)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(ACTIVATIONS["hard_sigmoid_keras2"](x)),
                               np.clip(0.2 * x + 0.5, 0, 1), atol=1e-6)


# ----------------------------------------------------------------------------- Keras 2 layout

def _write_keras2_h5(path, config: dict, weights: dict[str, list[tuple[str, np.ndarray]]]):
    """Write the tf.keras 2.x HDF5 layout by hand (as tf.keras 2.13 does: root attributes
    keras_version/backend/model_config, weights at model_weights/<layer>/<layer>/<w>:0 with a
    weight_names attribute per layer)."""
    with h5py.File(path, "w") as f:
        f.attrs["keras_version"] = "2.13.1"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps(config)
        mw = f.create_group("model_weights")
        names = [e["config"]["name"] for e in config["config"]["layers"]]
        mw.attrs["layer_names"] = np.array([n.encode() for n in names])
        mw.attrs["keras_version"] = "2.13.1"
        mw.attrs["backend"] = "tensorflow"
        for n in names:
            g = mw.create_group(n)
            ws = weights.get(n, [])
            g.attrs["weight_names"] = (np.array([f"{n}/{w}:0".encode() for w, _ in ws])
                                       if ws else np.zeros((0,)))
            for w, a in ws:
                g.create_dataset(f"{n}/{w}:0", data=a)


def test_keras2_functional_layout(tmp_path):
    """A Keras-2-dialect functional file (batch_input_shape, nested-list inbound_nodes,
    LeakyReLU 'alpha', ':0' weight names, Keras 2's hard_sigmoid), written with h5py from
    the weights of an equivalent Keras 3 model — jaxlift must match that model."""
    x = keras.Input((7, 6, 2))
    c = K.Conv2D(3, 3, padding="same", activation="relu", name="c1")(x)
    b = K.BatchNormalization(name="bn")(c)
    lr = K.LeakyReLU(negative_slope=0.1, name="lr")(b)
    s = K.Add(name="add")([c, lr])
    g = K.GlobalAveragePooling2D(name="gap")(s)
    d = K.Dense(2, name="dense")(g)
    out = K.Lambda(lambda t: keras.ops.clip(0.2 * t + 0.5, 0.0, 1.0), name="hs")(d)
    ref = keras.Model(x, out)
    _randomize(ref, 7)

    def node(*names):
        return [[[n, 0, 0, {}] for n in names]]

    layers = [
        {"class_name": "InputLayer", "name": "input_1", "inbound_nodes": [], "config": {
            "batch_input_shape": [None, 7, 6, 2], "dtype": "float32", "name": "input_1"}},
        {"class_name": "Conv2D", "name": "c1", "inbound_nodes": node("input_1"), "config": {
            "name": "c1", "filters": 3, "kernel_size": [3, 3], "strides": [1, 1],
            "padding": "same", "data_format": "channels_last", "dilation_rate": [1, 1],
            "groups": 1, "activation": "relu", "use_bias": True}},
        {"class_name": "BatchNormalization", "name": "bn", "inbound_nodes": node("c1"),
         "config": {"name": "bn", "axis": [3], "epsilon": 0.001, "center": True,
                    "scale": True, "momentum": 0.99}},
        {"class_name": "LeakyReLU", "name": "lr", "inbound_nodes": node("bn"),
         "config": {"name": "lr", "alpha": 0.1}},
        {"class_name": "Add", "name": "add", "inbound_nodes": node("c1", "lr"),
         "config": {"name": "add"}},
        {"class_name": "GlobalAveragePooling2D", "name": "gap", "inbound_nodes": node("add"),
         "config": {"name": "gap", "data_format": "channels_last", "keepdims": False}},
        {"class_name": "Dense", "name": "dense", "inbound_nodes": node("gap"),
         "config": {"name": "dense", "units": 2, "activation": "linear", "use_bias": True}},
        {"class_name": "Activation", "name": "hs", "inbound_nodes": node("dense"),
         "config": {"name": "hs", "activation": "hard_sigmoid"}},
    ]
    config = {"class_name": "Functional", "config": {
        "name": "model", "layers": layers, "input_layers": [["input_1", 0, 0]],
        "output_layers": [["hs", 0, 0]]}}
    kw = {l.name: l.get_weights() for l in ref.layers}
    weights = {"c1": list(zip(["kernel", "bias"], kw["c1"])),
               "bn": list(zip(["gamma", "beta", "moving_mean", "moving_variance"], kw["bn"])),
               "dense": list(zip(["kernel", "bias"], kw["dense"]))}
    path = tmp_path / "k2.h5"
    _write_keras2_h5(path, config, weights)
    xs = _inputs((7, 6, 2), seed=3)
    model, variables = load_keras_h5(path)
    _close(model.apply(variables, xs[0]), ref(xs[0]))
    assert "Keras 2.13.1" in keras_info(path)
    with pytest.raises(KerasFormatError, match="hard_sigmoid"):  # no Keras 3 equivalent
        save_keras_h5(tmp_path / "no.h5", model, variables)


def test_keras2_sequential_without_input_layer(tmp_path):
    """Old Keras 2 Sequential configs put batch_input_shape on the first layer."""
    ref = keras.Sequential([keras.Input((4,)), K.Dense(3, activation="hard_sigmoid")])
    _randomize(ref, 1)
    config = {"class_name": "Sequential", "config": {"name": "seq", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "batch_input_shape": [None, 4],
                                           "units": 3, "activation": "relu"}}]}}
    kw = ref.layers[0].get_weights()
    _write_keras2_h5(tmp_path / "s.h5", config, {"d": list(zip(["kernel", "bias"], kw))})
    model, variables = load_keras_h5(tmp_path / "s.h5")
    x = _inputs((4,))[0]
    np.testing.assert_allclose(np.asarray(model.apply(variables, x)),
                               np.maximum(x @ kw[0] + kw[1], 0), atol=TOL)


# ----------------------------------------------------------------------------- the real model

def test_catsordogs_pretrained(shared_data):
    from jaxlift.io.images import load_image
    path = shared_data / "catsordogs" / "model.h5"
    model, variables = load_keras_h5(path)
    xs = np.stack([load_image(shared_data / "catsordogs" / f, (256, 256), grayscale=True)
                   for f in ("test1.jpeg", "test2.jpeg")])
    assert xs.shape == (2, 256, 256, 1) and 0.0 <= xs.min() and xs.max() <= 1.0
    p = np.asarray(jax.jit(model.apply)(variables, xs)).ravel()
    # The values Keras (2.13 originally; Keras 3.15 loading the file gives the same) prints.
    np.testing.assert_allclose(p, [0.2818982, 0.8673469], atol=1e-5)
    assert p[0] < 0.5 < p[1]  # test1 is a cat, test2 a dog
    z = np.asarray(model.apply(variables, xs, logits=True)).ravel()
    np.testing.assert_allclose(np.asarray(jax.nn.sigmoid(z)), p, atol=1e-6)
    info = keras_info(path)
    assert "Total params: 3,696,337" in info and "(None, 30, 30, 16)" in info


# ----------------------------------------------------------------------------- bad files

@pytest.fixture(scope="module")
def small_h5(zoo_files):
    return zoo_files["conv2d_last"][0]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        load_keras_h5(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    p = tmp_path / "text.h5"
    p.write_text("hello, I am not HDF5\n" * 20)
    with pytest.raises(KerasFormatError, match="text.h5.*not a readable HDF5"):
        load_keras_h5(p)


def test_no_model_config(tmp_path):
    p = tmp_path / "weights_only.h5"
    with h5py.File(p, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(KerasFormatError, match="weights_only.h5.*model_config"):
        load_keras_h5(p)


def test_truncated(tmp_path, small_h5):
    data = small_h5.read_bytes()
    p = tmp_path / "cut.h5"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(KerasFormatError, match="cut.h5"):
        load_keras_h5(p)


def _edit_copy(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def _last_layer(path) -> str:
    with h5py.File(path) as f:
        return json.loads(f.attrs["model_config"])["config"]["layers"][-1]["config"]["name"]


def test_weight_shape_mismatch(tmp_path, small_h5):
    dense = _last_layer(small_h5)

    def edit(f):
        g = f[f"model_weights/{dense}"]
        wn = [getattr(n, "decode", lambda n=n: n)() for n in g.attrs["weight_names"]][0]
        del g[wn]
        g.create_dataset(wn, data=np.zeros((7, 3), np.float32))
    p = _edit_copy(small_h5, tmp_path / "bad_shape.h5", edit)
    with pytest.raises(KerasFormatError, match=rf"bad_shape.h5: layer '{dense}' \(Dense\).*kernel"):
        load_keras_h5(p)


def test_missing_weights(tmp_path, small_h5):
    dense = _last_layer(small_h5)

    def edit(f):
        f[f"model_weights/{dense}"].attrs["weight_names"] = np.zeros((0,))
    p = _edit_copy(small_h5, tmp_path / "no_w.h5", edit)
    with pytest.raises(KerasFormatError, match=rf"layer '{dense}' \(Dense\).*0 weight"):
        load_keras_h5(p)


def _edit_config(f, fn):
    cfg = json.loads(f.attrs["model_config"])
    fn(cfg)
    f.attrs["model_config"] = json.dumps(cfg)


def test_unknown_layer_class(tmp_path, small_h5):
    dense = _last_layer(small_h5)

    def edit(f):
        def rename(cfg):
            cfg["config"]["layers"][-1]["class_name"] = "MysteryLayer"
        _edit_config(f, rename)
    p = _edit_copy(small_h5, tmp_path / "mystery.h5", edit)
    with pytest.raises(KerasFormatError, match=rf"mystery.h5: layer '{dense}' \(MysteryLayer\)"):
        load_keras_h5(p)
    with pytest.raises(KerasFormatError, match="MysteryLayer"):
        keras_info(p)


@pytest.mark.parametrize("key,value,msg", [
    ("activation", "swoosh", "activation 'swoosh'"),
    ("padding", "reflect", "padding='reflect'"),
])
def test_unknown_option(tmp_path, small_h5, key, value, msg):
    def edit(f):
        def change(cfg):
            layer = next(l for l in cfg["config"]["layers"] if l["class_name"] == "Conv2D")
            layer["config"][key] = value
        _edit_config(f, change)
    p = _edit_copy(small_h5, tmp_path / "opt.h5", edit)
    with pytest.raises(KerasFormatError, match=rf"opt.h5: layer 'conv2d\w*' \(Conv2D\).*{msg}"):
        load_keras_h5(p)


def test_save_rejects_wrong_variables(tmp_path, small_h5):
    model, variables = load_keras_h5(small_h5)
    with pytest.raises(TypeError):
        save_keras_h5(tmp_path / "x.h5", model, variables["params"])
    dense = _last_layer(small_h5)
    bad = jax.tree.map(lambda a: a, variables)
    bad["params"][dense]["kernel"] = np.zeros((2, 2), np.float32)
    with pytest.raises(KerasFormatError, match=f"{dense}.*kernel"):
        save_keras_h5(tmp_path / "x.h5", model, bad)
    assert not list(tmp_path.iterdir())  # nothing half-written
