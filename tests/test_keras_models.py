"""jaxlift.models: the hand-written MNIST, PTC and cats-vs-dogs ports equal the generic
.h5 reader on the same file, load Keras files (jaxlift.io.ports), save files Keras loads, and
train with optax."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")
keras = pytest.importorskip("keras")

from jaxlift.io.images import load_image  # noqa: E402
from jaxlift.io.keras_h5 import KerasFormatError, load_keras_h5, save_keras_h5  # noqa: E402
from jaxlift.io.ports import load_cats_dogs, load_mnist, load_ptc  # noqa: E402
from jaxlift.models import mnist, ptc  # noqa: E402
from jaxlift.models.generic import KerasModel  # noqa: E402

TOL = 1e-5
PTC_LEN = 36

PORTS = {
    "mnist": (mnist.MnistCNN(), (28, 28, 1), load_mnist),
    "ptc": (ptc.PtcCNN(length=PTC_LEN), (PTC_LEN, 1), load_ptc),
}


def _random_variables(port, shape, seed):
    """Random variables of the port's shapes (numpy: far faster than an eager Flax init),
    scaled by 1/sqrt(fan-in), biases non-zero so that they are tested too."""
    structs = jax.eval_shape(port.init, jax.random.key(0), jnp.zeros((1, *shape)))
    rng = np.random.default_rng(seed)

    def draw(a):
        fan_in = int(np.prod(a.shape[:-1])) if len(a.shape) > 1 else 10
        return (rng.normal(0, 1, a.shape) / np.sqrt(fan_in)).astype(np.float32)
    return jax.tree.map(draw, structs)


def _x(shape, n=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (n, *shape)).astype(np.float32)


def _close(a, b, tol=TOL):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol, rtol=tol)


def test_mnist_parameter_count():
    v = jax.eval_shape(mnist.MnistCNN().init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert sum(a.size for a in jax.tree.leaves(v)) == 239_594


@pytest.mark.parametrize("name", list(PORTS))
def test_port_round_trip_and_generic_reader(name, tmp_path):
    port, shape, load = PORTS[name]
    v = _random_variables(port, shape, seed=len(name))
    x = _x(shape)
    path = tmp_path / f"{name}.h5"
    save_keras_h5(path, port, v)
    # Keras loads what the port wrote, and computes the same.
    k = keras.models.load_model(path, compile=False)
    _close(k.predict(x, verbose=0), port.apply(v, x))
    # The generic reader equals the port, probabilities and logits.
    model, gv = load_keras_h5(path)
    for logits in (False, True):
        _close(model.apply(gv, x, logits=logits), port.apply(v, x, logits=logits))
    # The port's own loader gives back the same variables.
    _, loaded = load(path)
    jax.tree.map(lambda a, b: _close(a, b, 0), loaded, v)
    # The port's keras_graph() run generically is the port.
    _close(KerasModel(port.keras_graph()).apply(v, x, logits=True), port.apply(v, x, logits=True))


@pytest.mark.parametrize("name", list(PORTS))
def test_port_reads_keras_built_file(name, tmp_path):
    """A file Keras itself wrote (Keras's own layer names) loads into the port."""
    port, shape, load = PORTS[name]
    if name == "mnist":
        k = keras.Sequential([
            keras.Input(shape), keras.layers.Conv2D(32, 4, strides=2, activation="relu"),
            keras.layers.Conv2D(64, 4, strides=2, activation="relu"),
            keras.layers.Dropout(0.25), keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"), keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax")])
    else:
        k = keras.Sequential([
            keras.Input(shape), keras.layers.Conv1D(16, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling1D(2),
            keras.layers.Conv1D(32, 5, padding="same", activation="relu"),
            keras.layers.MaxPooling1D(2), keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"), keras.layers.Dropout(0.5),
            keras.layers.Dense(1, activation="sigmoid")])
    rng = np.random.default_rng(5)
    k.set_weights([rng.normal(0, 0.2, w.shape).astype(np.float32) for w in k.weights])
    path = tmp_path / "keras.h5"
    k.save(path)
    x = _x(shape, seed=2)
    module, v = load(path)
    _close(module.apply(v, x), k.predict(x, verbose=0))


def test_ptc_length_from_file(tmp_path):
    port = ptc.PtcCNN(length=20)
    v = _random_variables(port, (20, 1), seed=3)
    save_keras_h5(tmp_path / "p.h5", port, v)
    module, _ = load_ptc(tmp_path / "p.h5")
    assert module.length == 20
    with pytest.raises(KerasFormatError, match="p.h5: input shape .* MnistCNN"):
        load_mnist(tmp_path / "p.h5")
    wrong = ptc.PtcCNN(length=20).keras_graph()
    wrong = type(wrong)(wrong.name, tuple(
        type(s)(s.class_name, s.name, tuple((k, 8 if k == "filters" and v == 16 else v)
                                            for k, v in s.options), s.inbound)
        for s in wrong.layers), wrong.inputs, wrong.outputs, True)
    model = KerasModel(wrong)
    save_keras_h5(tmp_path / "w.h5", model, _random_variables(model, (20, 1), 0))
    with pytest.raises(KerasFormatError, match="w.h5: not a PtcCNN: layer 0"):
        load_ptc(tmp_path / "w.h5")


@pytest.fixture(scope="module")
def cats_files(shared_data):
    d = shared_data / "catsordogs"
    x = np.stack([load_image(d / f, (256, 256), grayscale=True)
                  for f in ("test1.jpeg", "test2.jpeg")])
    return d / "model.h5", x


@pytest.mark.slow  # test budget: the MNIST and PTC ports stay in the default run
def test_cats_dogs_port_equals_reader(cats_files, tmp_path):
    path, x = cats_files
    port, v = load_cats_dogs(path)
    model, gv = load_keras_h5(path)
    f_port = jax.jit(port.apply, static_argnames="logits")
    f_gen = jax.jit(model.apply, static_argnames="logits")
    p = f_port(v, x)
    _close(p.ravel(), [0.2818982, 0.8673469])
    _close(p, f_gen(gv, x))
    _close(f_port(v, x, logits=True), f_gen(gv, x, logits=True))
    # The port writes the pretrained model back; Keras loads it and agrees.
    save_keras_h5(tmp_path / "cd.h5", port, v)
    k = keras.models.load_model(tmp_path / "cd.h5", compile=False)
    _close(k.predict(x, verbose=0), p)
    with pytest.raises(KerasFormatError, match="not a PtcCNN|input shape"):
        load_ptc(path)


def test_ports_train_with_optax():
    """Dropout is active with train=True only, and a few Adam steps lower the loss."""
    port = ptc.PtcCNN(length=16)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (32, 16, 1)).astype(np.float32)
    y = (x[:, :8, 0].sum(1) > x[:, 8:, 0].sum(1)).astype(np.float32)[:, None]
    params = _random_variables(port, (16, 1), 0)["params"]
    opt = optax.adam(1e-2)
    state = opt.init(params)

    def loss(p, key):
        z = port.apply({"params": p}, x, logits=True, train=True, rngs={"dropout": key})
        return optax.sigmoid_binary_cross_entropy(z, y).mean()

    @jax.jit
    def step(p, s, key):
        (l, g), (l_eval, _) = jax.value_and_grad(loss)(p, key), jax.value_and_grad(loss)(
            p, jax.random.fold_in(key, 1))
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, l, l_eval

    losses = []
    for i in range(20):
        params, state, l, l_other_mask = step(params, state, jax.random.key(10 + i))
        assert l != l_other_mask  # a different dropout mask gives a different loss
        losses.append(float(l))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    # train=False is deterministic: the same with or without a dropout rng.
    _close(port.apply({"params": params}, x),
           port.apply({"params": params}, x, rngs={"dropout": jax.random.key(0)}))
