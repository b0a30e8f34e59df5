"""The paper's MNIST CNN (the original deeplift's MNIST example), as a Flax linen module.

Input (N, 28, 28, 1) — we train on ``x / 255`` with an all-black (zero) reference (the paper fed
raw 0–255 pixels); output (N, 10) class probabilities, or with ``logits=True`` the
pre-softmax scores DeepLIFT explains. 239,594 parameters::

    Conv2D(32, 4×4, stride 2, valid)-relu → Conv2D(64, 4×4, stride 2, valid)-relu
    → Dropout(0.25) → Flatten (5·5·64 = 1600) → Dense(128)-relu → Dropout(0.5)
    → Dense(10)-softmax

Parameter names are Keras's defaults (``conv2d``, ``conv2d_1``, ``dense``, ``dense_1``) with
Keras's layouts, so ``save_keras_h5(path, MnistCNN(), variables)`` writes a file Keras loads and
``jaxlift.io.ports.load_mnist(path)`` reads any Keras file of this architecture.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from jaxlift.models.generic import ModelGraph, sequential_graph

_glorot = nn.initializers.glorot_uniform()


class MnistCNN(nn.Module):
    """``__call__(x, *, logits=False, train=False)``: (N, 28, 28, 1) → (N, 10).
    ``train=True`` turns Dropout on (pass ``rngs={"dropout": key}``)."""

    @nn.compact
    def __call__(self, x: jax.Array, *, logits: bool = False, train: bool = False) -> jax.Array:
        x = nn.Conv(32, (4, 4), strides=(2, 2), padding="VALID", kernel_init=_glorot,
                    name="conv2d")(x)
        x = jax.nn.relu(x)                                     # (N, 13, 13, 32)
        x = nn.Conv(64, (4, 4), strides=(2, 2), padding="VALID", kernel_init=_glorot,
                    name="conv2d_1")(x)
        x = jax.nn.relu(x)                                     # (N, 5, 5, 64)
        x = nn.Dropout(0.25)(x, deterministic=not train)
        x = x.reshape((x.shape[0], -1))                        # (N, 1600), Keras's order
        x = jax.nn.relu(nn.Dense(128, kernel_init=_glorot, name="dense")(x))
        x = nn.Dropout(0.5)(x, deterministic=not train)
        z = nn.Dense(10, kernel_init=_glorot, name="dense_1")(x)   # (N, 10) logits
        return z if logits else jax.nn.softmax(z, axis=-1)

    def keras_graph(self) -> ModelGraph:
        """The same network as a Keras Sequential graph (for ``save_keras_h5``)."""
        conv = dict(kernel_size=(4, 4), strides=(2, 2), padding="valid",
                    data_format="channels_last", dilation_rate=(1, 1), groups=1,
                    activation="relu", use_bias=True)
        return sequential_graph("mnist_cnn", (None, 28, 28, 1), [
            ("Conv2D", "conv2d", dict(filters=32, **conv)),
            ("Conv2D", "conv2d_1", dict(filters=64, **conv)),
            ("Dropout", "dropout", dict(rate=0.25)),
            ("Flatten", "flatten", dict(data_format="channels_last")),
            ("Dense", "dense", dict(units=128, activation="relu", use_bias=True)),
            ("Dropout", "dropout_1", dict(rate=0.5)),
            ("Dense", "dense_1", dict(units=10, activation="softmax", use_bias=True)),
        ])
