"""The models several benchmarks time: each ``*_model()`` returns ``(fn, variables, shape)``
with ``fn(variables, x) -> logits`` for a batch ``x`` of shape ``(N, *shape)``.

* :func:`mnist_model` — the MNIST CNN of docs/design.md §21 (the seeds' architecture,
  :class:`jaxlift.models.mnist.MnistCNN`) with the trained weights of
  ``experiments/results/mnist_cnn.h5`` if present, else a seeded init;
* :func:`cats_model` — the pretrained cats-vs-dogs CNN (256×256×1) from the shared data folder
  (:data:`CATS`; set ``JAXLIFT_SHARED_DATA`` to point elsewhere).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

from benchmarks.timing import RESULTS, ROOT

CATS = Path(os.environ.get("JAXLIFT_SHARED_DATA", ROOT.parent / "shared" / "data")) / "catsordogs"


def mnist_model():
    """The MNIST CNN of docs/design.md §21 with the trained weights if present, else a seeded init."""
    import jax
    import jax.numpy as jnp

    from jaxlift.io.ports import load_mnist
    from jaxlift.models.mnist import MnistCNN
    path = RESULTS / "mnist_cnn.h5"
    if path.exists():
        model, variables = load_mnist(path)
    else:
        model = MnistCNN()
        variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    return functools.partial(model.apply, logits=True), variables, (28, 28, 1)


def cats_model(seeded_if_missing: bool = False):
    """The pretrained cats-vs-dogs CNN (``CATS / "model.h5"``, which must exist unless
    ``seeded_if_missing``: then the same architecture with a seeded init)."""
    from jaxlift.io.ports import load_cats_dogs
    from jaxlift.models.cats_dogs import CatsDogsCNN
    path = CATS / "model.h5"
    if path.exists() or not seeded_if_missing:
        model, variables = load_cats_dogs(path)
    else:
        import jax
        import jax.numpy as jnp
        model = CatsDogsCNN()
        variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 1)))
    return functools.partial(model.apply, logits=True), variables, (256, 256, 1)
