"""Train the paper's MNIST CNN (``jaxlift.models.mnist.MnistCNN``) for the MNIST experiments.

Architecture (docs/design.md §21, the original deeplift's MNIST example; 239,594 parameters)::

    Conv2D(32, 4×4, stride 2, valid)-relu → Conv2D(64, 4×4, stride 2, valid)-relu
    → Dropout(0.25) → Flatten (1600) → Dense(128)-relu → Dropout(0.5) → Dense(10)-softmax

**Input scaling: pixels are ``x / 255``** (float32 in [0, 1]); the paper fed raw 0–255 pixels.
Either way the all-black reference is 0. Training: optax Adam (learning rate 1e-3, batch 128),
softmax cross-entropy on the logits, dropout on, on the 60,000 training digits of
``../shared/data/mnist.npz``; fixed seeds (parameter init, dropout and batch order all from
``--seed``, default 0). A few CPU minutes.

Writes ``experiments/results/mnist_cnn.h5`` (Keras 3 legacy HDF5 via ``save_keras_h5``; Keras
and ``jaxlift.models.mnist.load`` read it) and ``experiments/results/mnist_train.md``
(accuracy, epochs, time, seed). The file is committed: the other MNIST scripts and the tests
load it instead of retraining.

    python -m experiments.mnist_train [--epochs 8] [--seed 0] [--data PATH/mnist.npz]
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import mnist_common as mc
from jaxlift import save_keras_h5


def init_variables(seed: int) -> dict:
    """Glorot-initialised variables of ``MnistCNN`` from ``seed``."""
    return mc.MODEL.init(jax.random.key(seed), jnp.zeros((1, 28, 28, 1), jnp.float32))


def make_step(opt: optax.GradientTransformation):
    """One jitted Adam step on softmax cross-entropy, dropout on."""
    def loss_fn(params, xb, yb, key):
        z = mc.MODEL.apply({"params": params}, xb, logits=True, train=True,
                           rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(z, yb).mean()

    @jax.jit
    def step(params, state, xb, yb, key):
        loss, g = jax.value_and_grad(loss_fn)(params, xb, yb, key)
        upd, state = opt.update(g, state, params)
        return optax.apply_updates(params, upd), state, loss

    return step


def train(x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int, lr: float, seed: int,
          log=print) -> dict:
    """Train from scratch; returns Flax variables ``{"params": …}``."""
    key = jax.random.key(seed + 1)
    params = init_variables(seed)["params"]
    opt = optax.adam(lr)
    state = opt.init(params)
    step = make_step(opt)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        t0 = time.time()
        order = rng.permutation(len(x))
        losses = []
        for s in range(0, len(x) - batch + 1, batch):
            idx = order[s:s + batch]
            key, k = jax.random.split(key)
            params, state, loss = step(params, state, x[idx], y[idx], k)
            losses.append(loss)
        log(f"epoch {epoch + 1}/{epochs}: mean loss {float(np.mean(jnp.stack(losses))):.4f} "
            f"({time.time() - t0:.0f} s)")
    return {"params": params}


def report(acc: float, acc_reloaded: float, n_params: int, args, seconds: float) -> str:
    """``mnist_train.md``."""
    return f"""# MNIST CNN (the paper's architecture) — training record

Made by `python -m experiments.mnist_train --epochs {args.epochs} --seed {args.seed}`.

| | |
|---|---|
| model | `jaxlift.models.mnist.MnistCNN`: Conv2D(32, 4×4, s2)-relu → Conv2D(64, 4×4, s2)-relu → \
Dropout(0.25) → Flatten → Dense(128)-relu → Dropout(0.5) → Dense(10)-softmax |
| parameters | {n_params:,} |
| input scaling | `x / 255` (float32 in [0, 1]; the paper used raw 0–255); all-black reference = 0 |
| training | optax Adam, lr {args.lr}, batch {args.batch}, {args.epochs} epochs, softmax cross-entropy on the \
logits, dropout on; 60,000 training digits |
| seed | {args.seed} (init, dropout keys and batch order) |
| **test accuracy** | **{acc:.4f}** on the 10,000 test digits ({acc_reloaded:.4f} after reloading the `.h5`) |
| training time | {seconds:.0f} s on {platform.machine()} CPU ({jax.device_count()} JAX device(s); machine \
shared with other jobs) |
| file | `experiments/results/mnist_cnn.h5` (Keras 3 legacy HDF5, `save_keras_h5`) |
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=mc.DEFAULT_DATA, help="mnist.npz")
    ap.add_argument("--out", type=Path, default=mc.RESULTS, help="output folder")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    x_train, y_train = mc.load_mnist(args.data, "train")
    x_test, y_test = mc.load_mnist(args.data, "test")
    t0 = time.time()
    variables = train(x_train, y_train, epochs=args.epochs, batch=args.batch, lr=args.lr,
                      seed=args.seed)
    seconds = time.time() - t0
    acc = mc.accuracy(variables, x_test, y_test)
    n_params = sum(int(np.size(a)) for a in jax.tree_util.tree_leaves(variables))
    print(f"test accuracy {acc:.4f}; {n_params:,} parameters; {seconds:.0f} s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    h5 = args.out / "mnist_cnn.h5"
    save_keras_h5(h5, mc.MODEL, variables)
    acc_reloaded = mc.accuracy(mc.load_model(h5), x_test, y_test)
    assert abs(acc_reloaded - acc) < 1e-3, (acc, acc_reloaded)
    md = mc.write_text(args.out / "mnist_train.md",
                       report(acc, acc_reloaded, n_params, args, seconds))
    print(f"wrote {h5} ({h5.stat().st_size:,} bytes) and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
