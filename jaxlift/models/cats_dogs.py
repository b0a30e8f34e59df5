"""The pretrained cats-vs-dogs CNN (``../shared/data/catsordogs/model.h5``, Keras 2.13.1), as a
Flax linen module.

Input (N, 256, 256, 1): grayscale in [0, 1] (``jaxlift.io.load_image(path, (256, 256),
grayscale=True)`` reproduces the model's own preprocessing). Output (N, 1): P(dog) (dog when
> 0.5), or with ``logits=True`` its pre-sigmoid logit::

    Conv2D(16, 3)-relu → MaxPool 2 → Conv2D(32, 3)-relu → MaxPool 2 → Conv2D(16, 3)-relu
    → MaxPool 2 → Flatten (30·30·16 = 14400) → Dense(256)-relu → Dense(1)-sigmoid

3,696,337 parameters. Parameter names are Keras's defaults (``conv2d``, ``conv2d_1``,
``conv2d_2``, ``dense``, ``dense_1``); ``jaxlift.io.ports.load_cats_dogs(path)`` maps the file's
names onto them.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from jaxlift.models.generic import ModelGraph, sequential_graph

_glorot = nn.initializers.glorot_uniform()


class CatsDogsCNN(nn.Module):
    """``__call__(x, *, logits=False, train=False)``: (N, 256, 256, 1) → (N, 1).
    (No dropout in this network; ``train`` is accepted for a uniform interface.)"""

    @nn.compact
    def __call__(self, x: jax.Array, *, logits: bool = False, train: bool = False) -> jax.Array:
        for i, filters in enumerate((16, 32, 16)):
            name = "conv2d" if i == 0 else f"conv2d_{i}"
            x = nn.Conv(filters, (3, 3), padding="VALID", kernel_init=_glorot, name=name)(x)
            x = nn.max_pool(jax.nn.relu(x), (2, 2), strides=(2, 2))
        x = x.reshape((x.shape[0], -1))                          # (N, 14400)
        x = jax.nn.relu(nn.Dense(256, kernel_init=_glorot, name="dense")(x))
        z = nn.Dense(1, kernel_init=_glorot, name="dense_1")(x)  # (N, 1) logit
        return z if logits else jax.nn.sigmoid(z)

    def keras_graph(self) -> ModelGraph:
        """The same network as a Keras Sequential graph (for ``save_keras_h5``)."""
        conv = dict(kernel_size=(3, 3), strides=(1, 1), padding="valid",
                    data_format="channels_last", dilation_rate=(1, 1), groups=1,
                    activation="relu", use_bias=True)
        pool = dict(pool_size=(2, 2), strides=(2, 2), padding="valid",
                    data_format="channels_last")
        layers = []
        for i, filters in enumerate((16, 32, 16)):
            sfx = "" if i == 0 else f"_{i}"
            layers += [("Conv2D", f"conv2d{sfx}", dict(filters=filters, **conv)),
                       ("MaxPooling2D", f"max_pooling2d{sfx}", pool)]
        layers += [("Flatten", "flatten", dict(data_format="channels_last")),
                   ("Dense", "dense", dict(units=256, activation="relu", use_bias=True)),
                   ("Dense", "dense_1", dict(units=1, activation="sigmoid", use_bias=True))]
        return sequential_graph("cats_dogs_cnn", (None, 256, 256, 1), layers)
