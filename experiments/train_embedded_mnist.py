"""Train the small MNIST CNN shipped inside the package (``jaxlift/data/``), for ``jaxlift demo``.

The model is a slimmed copy of docs/design.md §21's MNIST network, in the *same Keras layer types* so
that ``load_keras_h5`` (and Keras itself) read it back::

    Input(28, 28, 1) → Conv2D(8, 4×4, stride 2, valid)-relu → Conv2D(16, 4×4, stride 2,
    valid)-relu → Dropout(0.25) → Flatten (5·5·16 = 400) → Dense(64)-relu → Dropout(0.5)
    → Dense(10)-softmax

28,514 parameters (≈ 120 KB as float32 in the ``.h5``) instead of the paper's 239,594, so the
package stays small. Inputs are ``x / 255`` (float32 in [0, 1]); DeepLIFT's reference for it is
the all-black (zero) image. Trained with optax Adam (lr 1e-3, batch 128, 8 epochs, seed 0) on the
60,000 training digits of ``../shared/data/mnist.npz``: a few CPU minutes.

Writes (atomically):

* ``jaxlift/data/mnist_small.h5`` — the model (``save_keras_h5``, Keras 3 legacy HDF5);
* ``jaxlift/data/mnist_digits.npz`` — the first 100 test digits: ``x`` (100, 28, 28) uint8
  (0–255, as in ``mnist.npz``), ``y`` (100,) uint8 labels;
* ``jaxlift/data/README.md`` — provenance, licence and the model's test accuracy.

Run: ``python -m experiments.train_embedded_mnist [--data ../shared/data/mnist.npz]``.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlift.io.keras_h5 import load_keras_h5, save_keras_h5
from jaxlift.models.generic import KerasModel, ModelGraph, sequential_graph

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "mnist.npz"
OUT_DIR = REPO / "jaxlift" / "data"
SEED = 0
N_DIGITS = 100


def small_mnist_graph() -> ModelGraph:
    """The slim docs/design.md §21 architecture as a Keras Sequential graph."""
    conv = dict(kernel_size=(4, 4), strides=(2, 2), padding="valid",
                data_format="channels_last", dilation_rate=(1, 1), groups=1,
                activation="relu", use_bias=True)
    return sequential_graph("mnist_small", (None, 28, 28, 1), [
        ("Conv2D", "conv2d", dict(filters=8, **conv)),
        ("Conv2D", "conv2d_1", dict(filters=16, **conv)),
        ("Dropout", "dropout", dict(rate=0.25)),
        ("Flatten", "flatten", dict(data_format="channels_last")),
        ("Dense", "dense", dict(units=64, activation="relu", use_bias=True)),
        ("Dropout", "dropout_1", dict(rate=0.5)),
        ("Dense", "dense_1", dict(units=10, activation="softmax", use_bias=True)),
    ])


def prepare(x: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) → float32 (N, 28, 28, 1) in [0, 1] (``x / 255``)."""
    return (np.asarray(x, np.float32) / 255.0)[..., None]


def train(model: KerasModel, x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int,
          lr: float, seed: int) -> dict:
    """Adam on softmax cross-entropy of the logits; returns the trained variables."""
    key = jax.random.key(seed)
    key, init_key = jax.random.split(key)
    variables = model.init(init_key, jnp.zeros((1, 28, 28, 1), jnp.float32))
    opt = optax.adam(lr)
    state = opt.init(variables["params"])

    def loss_fn(params, xb, yb, k):
        z = model.apply({"params": params}, xb, logits=True, train=True, rngs={"dropout": k})
        return optax.softmax_cross_entropy_with_integer_labels(z, yb).mean()

    @jax.jit
    def step(params, state, xb, yb, k):
        loss, g = jax.value_and_grad(loss_fn)(params, xb, yb, k)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, loss

    params = variables["params"]
    rng = np.random.default_rng(seed)
    n = len(x)
    for epoch in range(epochs):
        order = rng.permutation(n)
        losses = []
        for s in range(0, n - batch + 1, batch):
            idx = order[s:s + batch]
            key, k = jax.random.split(key)
            params, state, loss = step(params, state, x[idx], y[idx], k)
            losses.append(float(loss))
        print(f"epoch {epoch + 1}/{epochs}: mean loss {np.mean(losses):.4f}", flush=True)
    return {"params": params}


def accuracy(model: KerasModel, variables: dict, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy, in batches of 1000."""
    pred = jax.jit(lambda v, xb: jnp.argmax(model.apply(v, xb, logits=True), -1))
    hits = sum(int(np.sum(np.asarray(pred(variables, x[s:s + 1000])) == y[s:s + 1000]))
               for s in range(0, len(x), 1000))
    return hits / len(x)


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def readme_text(acc: float, n_params: int, epochs: int) -> str:
    """``jaxlift/data/README.md``: what the files are, where they come from, licences."""
    return f"""# jaxlift's embedded demo data

Used by `jaxlift demo` (and handy for a first try of `jaxlift attribute`); read them with
`importlib.resources.files("jaxlift") / "data" / NAME`.

| file | what |
|---|---|
| `mnist_small.h5` | a small MNIST CNN, Keras 3 legacy HDF5 (loads with `jaxlift.io.load_keras_h5` and \
`keras.models.load_model`): Input(28,28,1) → Conv2D(8, 4×4, stride 2)-relu → Conv2D(16, 4×4, stride 2)-relu → \
Dropout(0.25) → Flatten → Dense(64)-relu → Dropout(0.5) → Dense(10)-softmax; {n_params:,} parameters. Input: \
pixels `x / 255` in [0, 1]; explain it against the all-black (zero) reference. **Test accuracy {acc:.2%}** on \
the 10,000 MNIST test digits. |
| `mnist_digits.npz` | the first {N_DIGITS} MNIST test digits: `x` ({N_DIGITS}, 28, 28) uint8 (0–255), \
`y` ({N_DIGITS},) uint8 labels |

Made by `experiments/train_embedded_mnist.py` (optax Adam, learning rate 1e-3, batch 128,
{epochs} epochs, seed {SEED}, on the 60,000 training digits; a slimmed version of the paper's
MNIST architecture, same layer types, to keep the package small).

## Attribution

The digits, and the data the model was trained on, come from the MNIST database of
handwritten digits by Yann LeCun and Corinna Cortes (with Christopher J. C. Burges),
<http://yann.lecun.com/exdb/mnist/>, available under the terms of the Creative Commons
Attribution-Share Alike 3.0 license (CC BY-SA 3.0). `mnist_digits.npz` is a subset of it and
is shared under the same license.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="mnist.npz")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="output folder")
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args(argv)

    t0 = time.time()
    with np.load(args.data) as d:
        x_train, y_train = prepare(d["x_train"]), d["y_train"].astype(np.int32)
        x_test_u8, y_test = d["x_test"], d["y_test"].astype(np.int32)
    x_test = prepare(x_test_u8)

    model = KerasModel(small_mnist_graph())
    variables = train(model, x_train, y_train, epochs=args.epochs, batch=128, lr=1e-3,
                      seed=SEED)
    acc = accuracy(model, variables, x_test, y_test)
    n_params = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(variables))
    print(f"test accuracy {acc:.4f}; {n_params} parameters; {time.time() - t0:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    h5 = args.out / "mnist_small.h5"
    save_keras_h5(h5, model, variables)
    model2, v2 = load_keras_h5(h5)  # round trip: the shipped file gives the same accuracy
    acc2 = accuracy(model2, v2, x_test, y_test)
    assert abs(acc2 - acc) < 1e-9, (acc, acc2)

    digits = args.out / "mnist_digits.npz"
    def write_digits(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, x=np.asarray(x_test_u8[:N_DIGITS], np.uint8),
                                y=np.asarray(y_test[:N_DIGITS], np.uint8))

    _atomic_write(digits, write_digits)
    readme = args.out / "README.md"
    _atomic_write(readme, lambda tmp: Path(tmp).write_text(readme_text(acc, n_params,
                                                                       args.epochs)))
    for p in (h5, digits, readme):
        print(f"wrote {p} ({p.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
