"""The Keras file the command explains: read once (:func:`load_model`), its logits as the
function to explain (a single sigmoid output as two classes, ``[−z, z]``), predictions and
probabilities."""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import numpy as np

from jaxlift.cli.options import CLIError, UsageError


class TwoClass:
    """A single-logit model as two classes: ``fn(v, xb) -> (N, 1)`` logits ``z`` become
    ``(N, 2) = [−z, z]`` (class 0's logit is ``−z``: log P(0)/P(1) = −z). Hashable, so
    compilations are cached."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, variables, xb):
        import jax.numpy as jnp
        z = self.fn(variables, xb)
        return jnp.concatenate([-z, z], axis=-1)

    def __eq__(self, other):
        return isinstance(other, TwoClass) and self.fn == other.fn

    def __hash__(self):
        return hash((TwoClass, self.fn))


@dataclasses.dataclass
class LoadedModel:
    """A Keras file read by ``load_keras_h5``: module, variables and what the CLI needs."""

    path: str
    model: Any
    variables: Any
    input_shape: tuple[int, ...]  # one example's shape
    n_outputs: int
    layer_names: tuple[str, ...]

    @functools.cached_property
    def logits_fn(self) -> Callable:
        """``fn(variables, xb) -> (N, n_outputs)`` logits (what DeepLIFT explains)."""
        return functools.partial(_apply_logits, self.model)

    def scored_fn(self, layer: str | None) -> Callable:
        """The function to explain: the logits, with Keras layer ``layer`` marked for
        ``attribute(..., layer=layer)`` when given."""
        if layer is None:
            return self.logits_fn
        if layer not in self.layer_names:
            raise UsageError(f"--layer {layer!r}: the model has no such layer; its layers are "
                           f"{', '.join(self.layer_names)}")
        return _marked_fn(self.model, layer)

    @property
    def binary(self) -> bool:
        """One output (a sigmoid model): two classes, the negated logit and the logit."""
        return self.n_outputs == 1

    @property
    def n_classes(self) -> int:
        """Classes that ``--target`` may name: the outputs, or 2 for a single-logit model."""
        return 2 if self.binary else self.n_outputs

    def class_fn(self, layer: str | None) -> Callable:
        """``scored_fn`` with one output per class: ``[−z, z]`` for a single logit ``z``."""
        fn = self.scored_fn(layer)
        return TwoClass(fn) if self.binary else fn


def _apply_logits(model, variables, xb):
    return model.apply(variables, xb, logits=True)


@functools.lru_cache(maxsize=32)
def _marked_fn(model: Any, layer: str) -> Callable:
    """Logits of ``model`` with the output of its sub-module ``layer`` marked by
    ``jaxlift.layer`` (a Flax method interceptor: the Keras graph itself is untouched)."""
    import flax.linen as nn
    import jaxlift

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.name == layer:
            out = jaxlift.layer(out, layer)
        return out

    def fn(variables, xb):
        with nn.intercept_methods(interceptor):
            return model.apply(variables, xb, logits=True)

    return fn


def check_model_path(path: str | os.PathLike) -> None:
    """Raise :class:`UsageError` if the MODEL named on the command line does not exist (a file
    that exists but is no Keras model is an error of the file, found when it is read)."""
    if not os.path.exists(path):
        raise UsageError(f"no such Keras file: {path}")


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Read a Keras ``.h5`` or ``.keras``; the model must have one input and one (N, T)
    output."""
    import jax
    import jax.numpy as jnp
    from jaxlift.io.keras_files import load_keras

    check_model_path(path)
    model, variables = load_keras(path)
    graph = model.graph
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise CLIError(f"{path}: the model has {len(graph.inputs)} input(s) and "
                       f"{len(graph.outputs)} output(s); the jaxlift command handles models with "
                       "one of each (use the Python API for others)")
    shape = graph.input_shapes[0][1:]
    (dtype,) = graph.input_dtypes
    if dtype != "float32":
        raise CLIError(f"{path}: the model takes {dtype} inputs (token ids for an Embedding); "
                       "the jaxlift command explains float inputs — use the Python API: "
                       "attribute(lambda v, x: model.apply(v, x, logits=True, mark=('EMB',), "
                       "marker=jaxlift.layer), variables, ids, pad_ids, layer='EMB')")
    if any(d is None for d in shape):
        raise CLIError(f"{path}: the model's input shape {graph.input_shapes[0]} has unknown "
                       "dimensions; the jaxlift command needs a fixed input shape")
    _check_params_finite(variables, str(path))
    out = jax.eval_shape(functools.partial(model.apply, logits=True), variables,
                         jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    if len(out.shape) != 2:
        raise CLIError(f"{path}: the model's output has shape {out.shape}; the jaxlift command "
                       "explains models whose output is (N, T) (use the Python API for others)")
    names = tuple(s.name for s in graph.layers if s.class_name != "InputLayer")
    return LoadedModel(str(path), model, variables, tuple(int(d) for d in shape),
                       int(out.shape[1]), names)


def _check_params_finite(variables: Any, path: str) -> None:
    import jax
    for keypath, leaf in jax.tree_util.tree_leaves_with_path(variables):
        arr = np.asarray(leaf)
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
        if bad:
            name = "/".join(str(getattr(k, "key", k)) for k in keypath[1:])
            raise CLIError(f"{path}: weight {name} holds {bad} NaN or Inf value(s); the model "
                           "file is damaged or its training diverged — use a finite model")


def predict(loaded: LoadedModel, x: np.ndarray, batch: int = 64) -> np.ndarray:
    """Logits (N, T) of a float32 batch, computed ``batch`` inputs at a time."""
    import jax
    f = jax.jit(loaded.logits_fn)
    return np.concatenate([np.asarray(f(loaded.variables, x[s:s + batch]))
                           for s in range(0, len(x), batch)])


def classes_of(logits: np.ndarray) -> np.ndarray:
    """Predicted class per input: argmax, or ``logit > 0`` (class 1) for a single (sigmoid)
    output."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return np.argmax(logits, axis=1)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Class probabilities (N, classes): softmax over T > 1 logits; for a single logit ``z``
    the two classes ``[1 − σ(z), σ(z)]`` (what the Keras model's softmax/sigmoid gives)."""
    z = logits.astype(np.float64)
    if z.shape[1] == 1:
        return np.concatenate([1.0 / (1.0 + np.exp(z)), 1.0 / (1.0 + np.exp(-z))], axis=1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
