"""Keras 3 ``.keras`` archives (``model.save("m.keras")``): read by ``jaxlift.load_keras`` with
Keras's outputs; ``load_keras`` tells ``.keras`` from ``.h5`` by content; files it cannot read
get a ``KerasFormatError`` naming them; the CLI takes ``.keras`` where it takes ``.h5``."""
from __future__ import annotations

import io
import os
import shutil
import zipfile

import h5py
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")
from keras import layers as K  # noqa: E402

import jaxlift  # noqa: E402
from jaxlift.io.keras_config import KerasFormatError  # noqa: E402

Z = {"kernel_initializer": "zeros"}  # cheap to build: the weights are set below


def _randomize(model: "keras.Model", seed: int) -> None:
    rng = np.random.default_rng(seed)
    model.set_weights([np.abs(v) + 0.5 if "variance" in w.path else v for w, v in
                       ((w, rng.normal(0.0, 0.5, w.shape).astype(np.float32))
                        for w in model.weights)])


def cnn():
    return keras.Sequential([
        keras.Input((8, 8, 2)),
        K.Conv2D(3, 3, activation="relu", **Z), K.BatchNormalization(), K.MaxPooling2D(),
        K.Conv2D(2, 2, padding="same", **Z), K.Flatten(), K.Dense(4, activation="relu", **Z),
        K.Dense(3, activation="softmax", **Z)]), (8, 8, 2)


def lstm():
    x = keras.Input((5, 3))
    h = K.LSTM(4, return_sequences=True, recurrent_initializer="zeros", **Z)(x)
    h = K.Bidirectional(K.GRU(2, recurrent_initializer="zeros", **Z), merge_mode="ave")(h)
    h2 = K.Dense(3, **Z)(h)  # a second Dense: numbered groups (dense, dense_1)
    return keras.Model(x, K.Dense(2, **Z)(h2)), (5, 3)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("kv3")
    out = {}
    for i, make in enumerate((cnn, lstm)):
        kmodel, shape = make()
        _randomize(kmodel, i)
        x = np.random.default_rng(i).normal(size=(3, *shape)).astype(np.float32)
        kmodel.save(d / f"{make.__name__}.keras")
        kmodel.save(d / f"{make.__name__}.h5")
        out[make.__name__] = (d / f"{make.__name__}.keras", kmodel, x,
                              np.asarray(kmodel.predict(x, verbose=0)))
    return out


@pytest.mark.parametrize("name", ["cnn", "lstm"])
def test_keras_archive_matches_keras(files, name):
    path, _, x, y = files[name]
    model, variables = jaxlift.load_keras(path)
    got = np.asarray(model.apply(variables, x))
    assert float(np.abs(y).max()) > 1e-2
    np.testing.assert_allclose(got, y, atol=1e-5, rtol=1e-5)
    # the same model through its .h5: the same graph and the same variables
    m2, v2 = jaxlift.load_keras(path.with_suffix(".h5"))
    assert m2.graph == model.graph
    for a, b in zip(*(jax_leaves(v) for v in (variables, v2))):
        np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
    import jax
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def test_groups_found_by_keras_naming_without_name_attributes(files, tmp_path):
    """Older Keras 3 versions write no ``name`` on ``vars``: groups are then matched by
    Keras's own naming (snake-cased class, numbered in layer order)."""
    path, _, x, y = files["lstm"]
    out = tmp_path / "noattr.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "model.weights.h5":
                buf = io.BytesIO(data)
                with h5py.File(buf, "r+") as f:
                    f.visititems(lambda n, o: o.attrs.__delitem__("name")
                                 if "name" in o.attrs else None)
                data = buf.getvalue()
            dst.writestr(item, data)
    model, variables = jaxlift.load_keras(out)
    np.testing.assert_allclose(np.asarray(model.apply(variables, x)), y, atol=1e-5, rtol=1e-5)


def test_bad_files_are_refused_by_name(files, tmp_path):
    text = tmp_path / "model.keras"
    text.write_text("not a model")
    with pytest.raises(KerasFormatError, match="model.keras: not a readable HDF5 file .* zip"):
        jaxlift.load_keras(text)
    with pytest.raises(FileNotFoundError):
        jaxlift.load_keras(tmp_path / "missing.keras")
    cut = tmp_path / "cut.keras"
    data = files["cnn"][0].read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(KerasFormatError, match="cut.keras"):
        jaxlift.load_keras(cut)
    no_weights = tmp_path / "noweights.keras"
    with zipfile.ZipFile(files["cnn"][0]) as src, zipfile.ZipFile(no_weights, "w") as dst:
        for item in ("config.json", "metadata.json"):
            dst.writestr(item, src.read(item))
    with pytest.raises(KerasFormatError, match="noweights.keras: .*no model.weights.h5"):
        jaxlift.load_keras(no_weights)
    renamed = tmp_path / "really_a_zip.h5"  # content decides, not the name
    shutil.copy(files["cnn"][0], renamed)
    model, _ = jaxlift.load_keras(renamed)
    assert model.graph == jaxlift.load_keras(files["cnn"][0])[0].graph


def test_cli_reads_keras_archives(files, tmp_path, capsys):
    from jaxlift import cli
    path, kmodel, x, _ = files["cnn"]
    assert cli.main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert ".keras archive" in out and "(Conv2D)" in out
    assert f"Total params: {kmodel.count_params():,}" in out
    np.save(tmp_path / "x.npy", x[:1])
    assert cli.main(["attribute", str(path), str(tmp_path / "x.npy"), "--mode", "rescale",
                     "--out", str(tmp_path / "s.npz"), "--quiet"]) == 0
    with np.load(tmp_path / "s.npz") as z:
        assert z["scores"].shape[-3:] == (8, 8, 2)
