"""Shared helpers of the MNIST experiments (``experiments/mnist_*.py``).

* Data: ``../shared/data/mnist.npz`` relative to the repository root (``JAXLIFT_SHARED_DATA``
  or ``--data`` override it). Pixels are scaled as ``x / 255`` (float32 in [0, 1]) — Keras's
  usual scaling; the paper fed raw 0–255 pixels. The all-black reference is therefore 0.
* Model: :class:`jaxlift.models.mnist.MnistCNN` (the paper's architecture), trained by
  ``experiments/mnist_train.py`` and committed as ``experiments/results/mnist_cnn.h5``, so the
  other scripts (and the tests) load it instead of retraining.
* :func:`logits`: the function every attribution explains — the pre-softmax scores.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift.io import ports
from jaxlift.models.mnist import MnistCNN

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "experiments" / "results"
MODEL_H5 = RESULTS / "mnist_cnn.h5"
SHARED_DATA = Path(os.environ.get("JAXLIFT_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_DATA = SHARED_DATA / "mnist.npz"

MODEL = MnistCNN()


def prepare(x_u8: np.ndarray) -> np.ndarray:
    """uint8 digits ``(N, 28, 28)`` → float32 ``(N, 28, 28, 1)`` in [0, 1] (``x / 255``)."""
    return (np.asarray(x_u8, np.float32) / 255.0)[..., None]


def load_mnist(path: Path | str = DEFAULT_DATA, split: str = "test",
               limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of one split of ``mnist.npz`` (its first ``limit`` digits if given): x float32
    ``(N, 28, 28, 1)`` (``x / 255``), y int32 ``(N,)``. A clear error if the file is missing
    (no download)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MNIST not found at {path}; pass --data PATH/mnist.npz "
                                "(this project reads ../shared/data/mnist.npz; it downloads "
                                "nothing)")
    with np.load(path) as d:
        return (prepare(d[f"x_{split}"][:limit]),
                d[f"y_{split}"][:limit].astype(np.int32))


def load_model(path: Path | str = MODEL_H5) -> dict:
    """Flax variables of the trained ``MnistCNN`` from its Keras ``.h5``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"trained model not found at {path}; run "
                                "python -m experiments.mnist_train first")
    return ports.load_mnist(path)[1]


def logits(variables: dict, xb: jax.Array) -> jax.Array:
    """Pre-softmax scores ``(N, 10)`` of ``MnistCNN`` (what DeepLIFT explains)."""
    return MODEL.apply(variables, xb, logits=True)


_logits_jit = jax.jit(logits)


def predict_logits(variables: dict, x: np.ndarray, batch: int = 1000) -> np.ndarray:
    """Logits of ``x`` in batches (host numpy, float32 ``(N, 10)``)."""
    out = [np.asarray(_logits_jit(variables, jnp.asarray(x[s:s + batch])))
           for s in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros((0, 10), np.float32)


def accuracy(variables: dict, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of the model on ``(x, y)``."""
    return float(np.mean(predict_logits(variables, x).argmax(-1) == y))


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser for a study on the trained CNN: ``--data``, ``--model``, ``--out``."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="mnist.npz")
    ap.add_argument("--model", type=Path, default=MODEL_H5, help="trained MnistCNN .h5")
    ap.add_argument("--out", type=Path, default=RESULTS, help="output folder")
    return ap
