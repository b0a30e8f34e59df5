"""The PTC (Predictive Toxicology Challenge) 1-D CNN, as a Flax linen module.

Input (N, L, 1): a molecule's histogram of labelled subgraph patterns (log1p counts) over a
vocabulary of length L, as a 1-D signal with one channel. Output (N, 1): the probability of the
positive class, or with ``logits=True`` its pre-sigmoid logit (what DeepLIFT explains)::

    Conv1D(16, 5, same)-relu → MaxPool1D(2) → Conv1D(32, 5, same)-relu → MaxPool1D(2)
    → Flatten (32·⌊⌊L/2⌋/2⌋) → Dense(64)-relu → Dropout(0.5) → Dense(1)-sigmoid

Parameter names are Keras's defaults (``conv1d``, ``conv1d_1``, ``dense``, ``dense_1``);
``jaxlift.io.ports.load_ptc(path)`` reads a Keras file of this architecture.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from jaxlift.models.generic import ModelGraph, sequential_graph

_glorot = nn.initializers.glorot_uniform()


class PtcCNN(nn.Module):
    """``__call__(x, *, logits=False, train=False)``: (N, length, 1) → (N, 1).
    ``length`` (the vocabulary size L) fixes the Dense input size ``32·⌊⌊L/2⌋/2⌋``."""

    length: int

    @nn.compact
    def __call__(self, x: jax.Array, *, logits: bool = False, train: bool = False) -> jax.Array:
        x = jax.nn.relu(nn.Conv(16, (5,), padding="SAME", kernel_init=_glorot,
                                name="conv1d")(x))              # (N, L, 16)
        x = nn.max_pool(x, (2,), strides=(2,))                  # (N, L//2, 16)
        x = jax.nn.relu(nn.Conv(32, (5,), padding="SAME", kernel_init=_glorot,
                                name="conv1d_1")(x))            # (N, L//2, 32)
        x = nn.max_pool(x, (2,), strides=(2,))                  # (N, L//4, 32)
        x = x.reshape((x.shape[0], -1))
        x = jax.nn.relu(nn.Dense(64, kernel_init=_glorot, name="dense")(x))
        x = nn.Dropout(0.5)(x, deterministic=not train)
        z = nn.Dense(1, kernel_init=_glorot, name="dense_1")(x)   # (N, 1) logit
        return z if logits else jax.nn.sigmoid(z)

    def keras_graph(self) -> ModelGraph:
        """The same network as a Keras Sequential graph (for ``save_keras_h5``)."""
        conv = dict(kernel_size=(5,), strides=(1,), padding="same", data_format="channels_last",
                    dilation_rate=(1,), groups=1, activation="relu", use_bias=True)
        pool = dict(pool_size=(2,), strides=(2,), padding="valid", data_format="channels_last")
        return sequential_graph("ptc_cnn", (None, self.length, 1), [
            ("Conv1D", "conv1d", dict(filters=16, **conv)),
            ("MaxPooling1D", "max_pooling1d", pool),
            ("Conv1D", "conv1d_1", dict(filters=32, **conv)),
            ("MaxPooling1D", "max_pooling1d_1", pool),
            ("Flatten", "flatten", dict(data_format="channels_last")),
            ("Dense", "dense", dict(units=64, activation="relu", use_bias=True)),
            ("Dropout", "dropout", dict(rate=0.5)),
            ("Dense", "dense_1", dict(units=1, activation="sigmoid", use_bias=True)),
        ])
