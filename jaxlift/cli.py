"""The ``jaxlift`` command: DeepLIFT scores for Keras ``.h5``/``.keras`` models from the shell.

::

    jaxlift demo [--out DIR] [--mode M] [--n N]
    jaxlift attribute MODEL.h5 INPUTS... [--refs zeros|blur|FILE|near-uniform:DATA]
                      [--mode M] [--mode-option KEY=VALUE ...] [--target pred|IDX|all|A-B]
                      [--class-names A,B,...] [--layer NAME] [--resize]
                      [--batch-size auto|B] [--out scores.npz] [--png DIR] [--quiet]
    jaxlift info MODEL.h5

MODEL.h5 may be any Keras model file: a legacy ``.h5`` (Keras 2 or 3) or a Keras 3
``.keras`` archive (told apart by content). Everything explains the model's **logits** (the
pre-activation of its final softmax/sigmoid). A model with a single (sigmoid) output has two
classes: class 1 is its logit ``z`` (P = σ(z)), class 0 the negated logit ``−z``
(P = 1 − σ(z)), so that either class can be explained.
Exit status: 0 on success, 2 for a usage error (argparse), 1 for anything else (a bad file, a
bad input, a folder that cannot be written), with a one-line ``jaxlift: error: ...`` on stderr;
130 after Ctrl-C and 143 after SIGTERM.
Outputs appear whole or not at all: ``attribute`` computes everything, renders its PNGs into a
hidden temporary folder beside ``--png DIR``, then writes ``--out`` (a temporary file renamed
over it) and moves the PNGs into place right after. A new DIR appears with all its PNGs at once;
in an existing DIR each PNG of the run replaces the file of its name and other files stay. On
an error, Ctrl-C or SIGTERM nothing is changed and no temporary is left; after ``kill -9``,
the hidden ``.NAME.jaxlift-tmp-PID@HOST-*.tmp`` leftovers are removed by the next run.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import functools
import math
import os
import re
import signal
import sys
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from jaxlift.errors import JaxliftError
from jaxlift.io.atomic import (check_commit_folder, commit_folder, remove_stale_temporaries,
                               staged_folder, write_atomically)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ARRAY_SUFFIXES = (".npy", ".npz")
ALL_TARGETS_MAX = 16
"""With the default target (each input's predicted class), models with at most this many
outputs are explained for every class at once and each input's class picked out; larger ones
run once per predicted class."""


class CLIError(JaxliftError):
    """A bad input to the command line tool; its message is printed as it is."""


# ============================================================================ targets


@dataclasses.dataclass(frozen=True)
class TargetSpec:
    """What to explain: ``kind`` is "pred" (each input's predicted class), "index", "all"
    or "diff" (logit ``a`` minus logit ``b``)."""

    kind: str
    a: int = 0
    b: int = 0

    def __str__(self) -> str:
        return {"pred": "pred", "index": f"{self.a}", "all": "all",
                "diff": f"{self.a}-{self.b}"}[self.kind]


def parse_target(text: str) -> TargetSpec:
    """``pred`` | ``IDX`` | ``all`` | ``A-B`` → TargetSpec (argparse ``type=``)."""
    text = text.strip()
    if text == "pred":
        return TargetSpec("pred")
    if text == "all":
        return TargetSpec("all")
    if re.fullmatch(r"\d+", text):
        return TargetSpec("index", int(text))
    m = re.fullmatch(r"(\d+)-(\d+)", text)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        if a == b:
            raise argparse.ArgumentTypeError(f"{text!r}: a class difference needs two "
                                             "different classes")
        return TargetSpec("diff", a, b)
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a target; use pred (each input's predicted class), an output index "
        "such as 3, all, or a class difference such as 3-5 (logit 3 minus logit 5)")


def check_target(spec: TargetSpec, n_classes: int, binary: bool = False) -> None:
    """Raise CLIError if ``spec`` names a class the model does not have (``binary``: a
    single-logit model, whose two classes are the negated logit (0) and the logit (1))."""
    for i in {"index": (spec.a,), "diff": (spec.a, spec.b)}.get(spec.kind, ()):
        if i >= n_classes:
            if binary:
                raise CLIError(f"--target {spec}: class {i} is out of range; the model has one "
                               "(sigmoid) output, so two classes: 0 (the negated logit, "
                               "P = 1 − σ(z)) and 1 (the logit z, P = σ(z))")
            raise CLIError(f"--target {spec}: output {i} is out of range; the model has "
                           f"{n_classes} output(s), numbered 0 to {n_classes - 1}")


def parse_class_names(text: str) -> tuple[str, ...]:
    """``cat,dog`` → ("cat", "dog") (argparse ``type=``): one name per class, in class order."""
    names = tuple(n.strip() for n in text.split(","))
    if any(not n for n in names):
        raise argparse.ArgumentTypeError(f"{text!r}: give the class names separated by commas, "
                                         "e.g. cat,dog (an empty name is not allowed)")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: the class names repeat a name")
    return names


def parse_feature_names(text: str) -> tuple[str, ...]:
    """``--feature-names`` (argparse ``type=``): a text file with one name per line (or one
    comma-separated line, such as a CSV header), or the names themselves, ``age,income,...``."""
    path = Path(text)
    if path.is_file():
        try:
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        except (OSError, UnicodeDecodeError) as e:
            raise argparse.ArgumentTypeError(f"{text}: cannot read the feature names: {e}"
                                             ) from None
        lines = [ln for ln in lines if ln]
        names = [n.strip() for n in lines[0].split(",")] if len(lines) == 1 else lines
        where = f"{text} (one name per line, or one comma-separated line)"
    else:
        names = [n.strip() for n in text.split(",")]
        where = f"{text!r} (a file of names, or the names separated by commas)"
    if not names or any(not n for n in names):
        raise argparse.ArgumentTypeError(f"{where}: a feature name is empty")
    if len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{where}: the feature names repeat a name")
    return tuple(names)


def check_feature_names(names: tuple[str, ...] | None, input_shape: tuple[int, ...],
                        layer: str | None) -> None:
    """Raise CLIError unless ``names`` label the features of a 1-D (tabular) input, one each."""
    if names is None:
        return
    if layer is not None:
        raise CLIError("--feature-names labels the input features; with --layer the bars are "
                       "the layer's units")
    if len(input_shape) != 1:
        raise CLIError(f"--feature-names labels tabular inputs (one value per feature), but "
                       f"the model's input has shape {input_shape}")
    if len(names) != input_shape[0]:
        raise CLIError(f"--feature-names gives {len(names)} name(s) but the model's input has "
                       f"{input_shape[0]} features")


def check_class_names(names: tuple[str, ...] | None, n_classes: int, binary: bool) -> None:
    """Raise CLIError unless ``names`` has one entry per class."""
    if names is not None and len(names) != n_classes:
        what = ("two classes: 0 (the negated logit) and 1 (the logit), e.g. --class-names cat,dog"
                " for a model that outputs P(dog)" if binary else f"{n_classes} classes")
        raise CLIError(f"--class-names gives {len(names)} name(s) but the model has {what}")


def class_label(c: int, names: Sequence[str] | None) -> str:
    """A class as printed: its name when ``--class-names`` gave one, else its index."""
    return str(c) if names is None or c < 0 else names[c]


def class_words(c: int, names: Sequence[str] | None) -> str:
    """A class in a sentence: its name when ``--class-names`` gave one, else ``class c``."""
    return f"class {c}" if names is None else names[c]


def logit_label(c: int, names: Sequence[str] | None, binary: bool) -> str:
    """What explaining class ``c`` explains, for figures: ``the class 7 logit`` (``the dog
    logit`` with names); for a single-logit model ``the dog logit (z)`` for class 1 and ``the
    cat logit (−z)`` for class 0, the negated logit."""
    sign = ("" if not binary else " (z)" if c == 1 else " (−z)")
    return f"the {class_words(c, names)} logit{sign}"


def target_label(spec: TargetSpec, c: int, names: Sequence[str] | None, binary: bool) -> str:
    """What the scores of one input explain under ``--target spec`` (``c``: the input's class
    explained, for ``pred`` and ``index``)."""
    if spec.kind == "diff":
        return (f"{logit_label(spec.a, names, binary)} − "
                f"{logit_label(spec.b, names, binary).removeprefix('the ')}")
    if spec.kind == "all":
        return "each class's logit"
    return logit_label(c, names, binary)


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


class _Difference:
    """The callable target ``o[a] - o[b]`` (hashable, so compilations are cached)."""

    def __init__(self, a: int, b: int):
        self.a, self.b = a, b

    def __call__(self, o):
        return o[..., self.a] - o[..., self.b]

    def __eq__(self, other):
        return isinstance(other, _Difference) and (self.a, self.b) == (other.a, other.b)

    def __hash__(self):
        return hash((_Difference, self.a, self.b))


# ============================================================================ methods


class LazyChoices(Sequence[str]):
    """argparse ``choices`` read on first use: listing the methods imports JAX, which
    ``jaxlift info`` and ``jaxlift --help`` do without."""

    def __init__(self, load: Callable[[], Sequence[str]]):
        self._load, self._items = load, None

    def _all(self) -> tuple[str, ...]:
        if self._items is None:
            self._items = tuple(self._load())
        return self._items

    def __getitem__(self, i):
        return self._all()[i]

    def __len__(self) -> int:
        return len(self._all())

    def __contains__(self, value) -> bool:
        return value in self._all()

    def __iter__(self):
        return iter(self._all())


def _method_table() -> dict:
    """``jaxlift.methods.METHODS`` (name → Method), imported when first needed."""
    from jaxlift.methods import METHODS
    return METHODS


def available_modes() -> tuple[str, ...]:
    """Every ``mode=`` of :func:`jaxlift.attribute`, DeepLIFT's first."""
    return tuple(_method_table())


def sums_to_delta(mode: str) -> bool:
    """Whether ``mode``'s scores sum to Δ exactly (DeepLIFT, Shapley sampling, KernelSHAP)."""
    return _method_table()[mode].completeness == "exact"


def check_mode_options(mode: str, options: dict) -> dict:
    """``options`` validated (and completed with defaults) by the method ``mode``; raises
    ``ValueError``/``TypeError`` naming the option."""
    return _method_table()[mode].check_options(options)


def parse_option_value(raw: str) -> Any:
    """The value of ``--mode-option KEY=VALUE``: a Python literal (``32``, ``0.5``,
    ``4,4,1`` or ``(4, 4, 1)`` → a tuple, ``'text'``), ``none`` → None, ``FILE.npy`` → the
    array it holds (e.g. a ``feature_mask``), anything else the text itself."""
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return None
    if raw.lower().endswith(".npy"):
        try:
            return np.load(raw, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise argparse.ArgumentTypeError(f"cannot read {raw} as a .npy array ({e})") from None
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return raw
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, (bool, int, float, str, tuple)):
        return value
    return raw


def parse_mode_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` → (key, value) (argparse ``type=``; see :func:`parse_option_value`)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"{text!r}: give an option as KEY=VALUE, e.g. window=4,4,1 (occlusion) or "
            "steps=32 (integrated_gradients)")
    return key, parse_option_value(raw)


def default_window(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(window, stride) of occlusion when ``--mode-option window=`` is not given: the API's
    default, :func:`jaxlift.methods.groups.default_window` (for an image (H, W, C),
    ⌈H/8⌉ × ⌈W/8⌉ pixels across all channels, moved by half a window)."""
    from jaxlift.methods.groups import default_window as api_default
    return api_default(tuple(shape))


def patch_mask(shape: tuple[int, ...], window: tuple[int, ...]) -> np.ndarray:
    """Integer labels of the non-overlapping ``window``-sized blocks of an array of ``shape``
    (:func:`jaxlift.methods.groups.patch_mask`; the default ``feature_mask`` of
    ``shapley_sampling``, ``lime`` and ``kernel_shap``: one group per patch)."""
    from jaxlift.methods.groups import patch_mask as api_patch_mask
    return api_patch_mask(tuple(shape), tuple(window))


def resolve_mode_options(mode: str, given: Sequence[tuple[str, Any]],
                         shape: tuple[int, ...]) -> dict:
    """The ``mode_options`` the CLI passes: ``--mode-option`` values, then the defaults the API
    would choose made explicit (occlusion's ``window``/``stride``; a ``feature_mask`` of patches
    for shapley_sampling, lime and kernel_shap), so that the run's summary names them; checked
    by the method; errors name the option."""
    opts: dict[str, Any] = {}
    for key, value in given:
        if key in opts:
            raise CLIError(f"--mode-option {key}= is given twice")
        opts[key] = value
    window, stride = default_window(shape)
    if mode == "occlusion":
        if "window" not in opts:
            opts["window"] = window
            opts.setdefault("stride", stride)
    elif mode in ("shapley_sampling", "lime", "kernel_shap") and "feature_mask" not in opts:
        opts["feature_mask"] = patch_mask(shape, window)  # tens of groups, not every pixel
    try:
        check_mode_options(mode, opts)
    except (ValueError, TypeError) as e:
        raise CLIError(f"--mode {mode} --mode-option: {e}") from None
    return opts


def describe_options(opts: dict) -> str:
    """``window=(4, 4, 1), stride=(2, 2, 1)`` (arrays by their shape)."""
    return ", ".join(f"{k}=" + (f"<{v.dtype} array {v.shape}, {len(np.unique(v))} groups>"
                                if isinstance(v, np.ndarray) else repr(v))
                     for k, v in opts.items())


def parse_batch_size(text: str) -> int | str:
    """``auto`` or a positive number of (input, reference) pairs (argparse ``type=``)."""
    if text.strip() == "auto":
        return "auto"
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give auto or a positive number of (input, "
                                         "reference) pairs per chunk") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v}: give auto or a positive number of (input, "
                                         "reference) pairs per chunk")
    return v


# ============================================================================ the model


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
            raise CLIError(f"--layer {layer!r}: the model has no such layer; its layers are "
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


def load_model(path: str | os.PathLike) -> LoadedModel:
    """Read a Keras ``.h5`` or ``.keras``; the model must have one input and one (N, T)
    output."""
    import jax
    import jax.numpy as jnp
    from jaxlift.io.keras_files import load_keras

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


# ============================================================================ inputs


def read_array_file(path: Path, what: str) -> np.ndarray:
    """An ``.npy`` array, or the array of an ``.npz`` (its only one, or the one named ``x``)."""
    def unreadable(e: Exception) -> CLIError:
        return CLIError(f"{what} {path}: cannot read it as a NumPy .npy/.npz file "
                        f"({type(e).__name__}: {e}); save arrays with numpy.save or numpy.savez")

    try:
        data = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # truncated, not NumPy, pickled objects, …
        raise unreadable(e) from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        return np.asarray(data)
    with data:
        keys = list(data.keys())
        if "x" not in keys and len(keys) != 1:
            raise CLIError(f"{what} {path}: the .npz holds arrays {keys}; name the one to use "
                           "'x' or save it alone")
        try:
            return np.asarray(data["x" if "x" in keys else keys[0]])
        except Exception as e:
            raise unreadable(e) from None


def list_image_files(paths: Sequence[str], what: str) -> list[Path]:
    """Image files named directly or found (sorted, by suffix) in the given folders."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.iterdir()
                            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            files.append(p)
        else:
            raise CLIError(f"{what} {p}: no such file or folder")
    return files


def image_geometry(path: Path) -> tuple[int, int, int]:
    """(height, width, colour channels) of an image file: 1 for grayscale content (including
    an RGB image whose three channels are equal), 3 for colour; alpha is not counted."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        bands = [b for b in im.getbands() if b != "A"]
        if len(bands) == 1 and im.mode != "P":
            return h, w, 1
        rgb = np.asarray(im.convert("RGB"))
    gray = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
    return h, w, 1 if gray else 3


def image_changes(geometry: tuple[int, int, int], shape: tuple[int, ...]
                  ) -> tuple[list[str], list[str]]:
    """What fitting an image of ``geometry`` (H0, W0, C0) to the model's (H, W, C) changes:
    (changes that distort it — another aspect ratio, colour dropped or invented —,
    a plain change of size)."""
    h0, w0, c0 = geometry
    h, w, c = shape
    distort, size = [], []
    if abs(w0 * h - h0 * w) > 0.01 * w0 * h:
        distort.append(f"stretched from {w0}×{h0} to {w}×{h} (aspect ratio {w0 / h0:.2f} → "
                       f"{w / h:.2f})")
    elif (h0, w0) != (h, w):
        size.append(f"resized from {w0}×{h0} to {w}×{h}")
    if c0 == 3 and c == 1:
        distort.append("colour converted to grayscale")
    elif c0 == 1 and c == 3:
        distort.append("grayscale copied to three colour channels")
    return distort, size


def load_images(files: Sequence[Path], shape: tuple[int, ...], what: str,
                resize: bool = False) -> tuple[np.ndarray, list[str]]:
    """Images → ((N, H, W, C) float32 in [0, 1], notes), fitted to the model's ``shape`` =
    (H, W, C): resized to (H, W) and converted to grayscale (C = 1) or RGB (C = 3). An image
    whose aspect ratio or colour differs from the model's is refused unless ``resize``; the
    notes say what was changed (one line per image)."""
    from jaxlift.io.images import load_image

    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise CLIError(f"{what}: the model takes inputs of shape {shape}, not images (H, W, 1) or "
                       "(H, W, 3); pass an .npy/.npz array instead")
    out, notes = [], []
    for f in files:
        try:
            distort, size = image_changes(image_geometry(f), shape)
            if distort and not resize:
                raise CLIError(
                    f"{what} {f}: the model takes {shape[1]}×{shape[0]} "
                    f"{'grayscale' if shape[2] == 1 else 'colour'} images; this one would be "
                    f"{' and '.join(distort)}, which changes what the model sees — pass "
                    "--resize to accept that, or crop/convert the image first")
            if distort or size:
                notes.append(f"{f.name}: {', '.join(distort + size)}")
            out.append(load_image(f, size=shape[:2], grayscale=shape[-1] == 1))
        except ValueError as e:
            why = str(e).removeprefix(f"{f}: ")
            raise CLIError(f"{what} {f}: cannot decode the image ({why}); expected a PNG, JPEG, "
                           "BMP, GIF, TIFF or WebP image") from None
        except OSError as e:
            if isinstance(e, (FileNotFoundError, PermissionError)):
                raise
            raise CLIError(f"{what} {f}: cannot decode the image (truncated or damaged: {e})"
                           ) from None
    x = np.stack(out).astype(np.float32) if out else np.zeros((0, *shape), np.float32)
    return x, notes


@dataclasses.dataclass
class Batch:
    """Arrays read for the model: ``x`` float32 (N, *S); ``names`` one per input; ``dtype``
    the dtype they were stored in (``"image"`` for image files)."""

    x: np.ndarray
    names: list[str]
    dtype: str
    source: str
    notes: list[str] = dataclasses.field(default_factory=list)  # how images were changed


def to_model_float(arr: np.ndarray, what: str) -> np.ndarray:
    """uint8 pixels → ``/ 255``; floats → float32; anything else is refused."""
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if np.issubdtype(arr.dtype, np.floating):
        return arr.astype(np.float32)
    raise CLIError(f"{what} has dtype {arr.dtype}; expected floats (fed to the model as they "
                   "are) or uint8 pixels (0-255, divided by 255)")


def fit_shape(arr: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
    """(N, *S), (N, *S without a trailing 1), S or S without its trailing 1 → (N, *S)."""
    s = tuple(shape)
    if arr.shape == s:
        return arr[None]
    if s and s[-1] == 1 and arr.shape == s[:-1]:
        return arr[None, ..., None]
    if arr.ndim == len(s) + 1 and arr.shape[1:] == s:
        return arr
    if s and s[-1] == 1 and arr.ndim == len(s) and arr.shape[1:] == s[:-1]:
        return arr[..., None]
    dims = ", ".join(map(str, s))
    alt = f" or (N, {', '.join(map(str, s[:-1]))})" if s and s[-1] == 1 else ""
    raise CLIError(f"{what} has shape {arr.shape}, which does not fit the model's input: "
                   f"expected a batch (N, {dims}){alt} or one example ({dims})")


def check_finite(x: np.ndarray, what: str) -> None:
    bad = x.size - int(np.count_nonzero(np.isfinite(x)))
    if bad:
        raise CLIError(f"{what} holds {bad} NaN or Inf value(s); DeepLIFT needs finite numbers — "
                       "remove or replace them")


def load_batch(paths: Sequence[str], shape: tuple[int, ...], what: str, resize: bool = False
               ) -> Batch:
    """INPUTS (one .npy/.npz, or image files and folders) → a checked Batch (images of another
    aspect ratio or colour refused unless ``resize``, see :func:`load_images`)."""
    for p in paths:
        if not Path(p).exists():
            raise CLIError(f"{what} {p}: no such file or folder")
    if len(paths) == 1 and Path(paths[0]).suffix.lower() in ARRAY_SUFFIXES:
        p = Path(paths[0])
        raw = read_array_file(p, what)
        x = fit_shape(to_model_float(raw, f"{what} {p}"), shape, f"{what} {p}")
        names = [f"{i}" for i in range(len(x))]
        batch = Batch(x, names, str(raw.dtype), str(p))
    else:
        for p in paths:
            if Path(p).suffix.lower() in ARRAY_SUFFIXES:
                raise CLIError(f"{what}: give one .npy/.npz file alone, or image files/folders "
                               f"(got {len(paths)} paths including {p})")
        files = list_image_files(paths, what)
        x, notes = load_images(files, shape, what, resize)
        batch = Batch(x, [f.name for f in files], "image", ", ".join(paths), notes)
    if len(batch.x) == 0:
        raise CLIError(f"{what} {batch.source}: no inputs found (an empty batch); give at least "
                       "one example" + (" (folders are searched for " + ", ".join(IMAGE_SUFFIXES)
                                        + " files)" if batch.dtype == "image" else ""))
    check_finite(batch.x, f"{what} {batch.source}")
    return batch


# ============================================================================ references


def make_refs(spec: str, batch: Batch, loaded: LoadedModel, num: int, resize: bool = False
              ) -> tuple[np.ndarray, str]:
    """``--refs`` → (references (K, *S) or (N, K, *S) float32, a description); image files
    are fitted as the inputs are (``resize``)."""
    from jaxlift import references as R

    shape = loaded.input_shape
    if spec == "zeros":
        return np.zeros((1, *shape), np.float32), "zeros (all-black)"
    if spec == "blur":
        if len(shape) != 3:
            raise CLIError(f"--refs blur blurs images (H, W, C); the model's inputs have shape "
                           f"{shape}; use --refs zeros or a file of references")
        return np.asarray(R.blurred(batch.x))[:, None], "blur (each input's heavily blurred copy)"
    if spec.startswith("near-uniform:"):
        data_spec = spec[len("near-uniform:"):]
        if not data_spec:
            raise CLIError("--refs near-uniform:DATA needs a data file or folder after the colon")
        data = load_batch([data_spec], shape, "--refs near-uniform data", resize)
        k = min(num, len(data.x))
        import jax
        f = jax.jit(loaded.logits_fn)
        found = R.near_uniform(lambda b: f(loaded.variables, b), data.x, k, from_logits=True,
                               return_indices=True)
        return (np.asarray(found.references, np.float32),
                f"near-uniform ({k} inputs of {data_spec} whose predictions are closest to "
                f"uniform: {', '.join(data.names[i] for i in found.indices)})")
    p = Path(spec)
    if not p.exists():
        raise CLIError(f"--refs {spec!r}: no such file or folder; use zeros, blur, a .npy/.npz "
                       "file or images of references, or near-uniform:DATA")
    if p.suffix.lower() in ARRAY_SUFFIXES:
        raw = read_array_file(p, "--refs")
        what = f"references {p}"
        if batch.dtype != "image" and (raw.dtype == np.uint8) != (batch.dtype == "uint8"):
            raise CLIError(f"{what} have dtype {raw.dtype} but the inputs have dtype "
                           f"{batch.dtype}: uint8 is read as 0-255 pixels and divided by 255, "
                           "floats are used as they are; store both in the same form")
        r = to_model_float(raw, what)
        n = len(batch.x)
        if r.ndim == len(shape) + 2 and r.shape[0] == n and r.shape[2:] == shape:
            refs = r  # (N, K, *S): references per input
        else:
            try:
                refs = fit_shape(r, shape, what)
            except CLIError:
                raise CLIError(
                    f"{what} have shape {r.shape}, which does not fit inputs of shape "
                    f"{batch.x.shape}: expected shared references (K, {', '.join(map(str, shape))}),"
                    f" one reference ({', '.join(map(str, shape))}) or references per input "
                    f"({n}, K, {', '.join(map(str, shape))})") from None
    else:
        refs = load_batch([spec], shape, "--refs", resize).x
    if refs.shape[-len(shape) - 1] == 0 or refs.size == 0:
        raise CLIError(f"references {p}: an empty batch; give at least one reference")
    check_finite(refs, f"references {p}")
    return refs, f"file {p} ({refs.shape[-len(shape) - 1]} reference(s))"


# ============================================================================ attribution


@dataclasses.dataclass
class Result:
    """Scores and what they explain. ``targets``: the class explained per input (-1 for a
    class difference or ``all``); ``logits``: the model's outputs (N, T) (T = 1 for a sigmoid
    model, whose classes are ``[−z, z]``)."""

    scores: np.ndarray
    delta: np.ndarray
    targets: np.ndarray
    logits: np.ndarray
    class_names: tuple[str, ...] | None = None


def explain(loaded: LoadedModel, x: np.ndarray, refs: np.ndarray, spec: TargetSpec, *,
            mode: str, layer: str | None = None, batch_size: int | str | None = "auto",
            progress: bool = False, logits: np.ndarray | None = None,
            precision: str = "default", mode_options: dict | None = None,
            class_names: tuple[str, ...] | None = None) -> Result:
    """Scores of ``x`` against ``refs`` for the target ``spec`` by ``mode``; the targets are
    classes (for a single-logit model: 0 = the negated logit, 1 = the logit)."""
    import jaxlift

    check_target(spec, loaded.n_classes, loaded.binary)
    check_class_names(class_names, loaded.n_classes, loaded.binary)
    fn = loaded.class_fn(layer)
    if logits is None:
        logits = predict(loaded, x, batch_size if isinstance(batch_size, int) else 64)
    run = functools.partial(jaxlift.attribute, fn, loaded.variables, mode=mode, layer=layer,
                            batch_size=batch_size, progress=progress,
                            return_delta=True, precision=precision,
                            mode_options=mode_options or None)
    n = len(x)
    if spec.kind == "index":
        s, d = run(x, refs, target=spec.a)
        return Result(np.asarray(s), np.asarray(d), np.full(n, spec.a), logits, class_names)
    if spec.kind == "diff":
        s, d = run(x, refs, target=_Difference(spec.a, spec.b))
        return Result(np.asarray(s), np.asarray(d), np.full(n, -1), logits, class_names)
    if spec.kind == "all":
        s, d = run(x, refs, target="all")
        return Result(np.asarray(s), np.asarray(d), np.full(n, -1), logits, class_names)
    pred = classes_of(logits)
    return Result(*_explain_per_class(run, x, refs, pred, loaded.n_classes), pred, logits,
                  class_names)


def _explain_per_class(run: Callable, x: np.ndarray, refs: np.ndarray, cls: np.ndarray,
                       n_outputs: int, all_max: int = ALL_TARGETS_MAX
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Scores of each input for its own class ``cls[i]``: one run for every class at once
    (few outputs), else one run per distinct class."""
    per_input = refs.ndim == x.ndim + 1
    classes = np.unique(cls)
    idx = np.arange(len(x))
    if len(classes) == 1:
        s, d = run(x, refs, target=int(classes[0]))
        return np.asarray(s), np.asarray(d)
    if n_outputs <= all_max:
        s, d = run(x, refs, target="all")
        return np.asarray(s)[idx, cls], np.asarray(d)[idx, cls]
    scores, delta = None, None
    for c in classes:
        sel = idx[cls == c]
        s, d = run(x[sel], refs[sel] if per_input else refs, target=int(c))
        s, d = np.asarray(s), np.asarray(d)
        if scores is None:
            scores = np.zeros((len(x), *s.shape[1:]), s.dtype)
            delta = np.zeros((len(x), *d.shape[1:]), d.dtype)
        scores[sel], delta[sel] = s, d
    return scores, delta


def summation_gap(scores: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """|Σ scores − Δ| per input (and target): summation-to-delta holds when this is ~0."""
    lead = delta.ndim
    total = scores.reshape(*scores.shape[:lead], -1).sum(axis=-1, dtype=np.float64)
    return np.abs(total - delta)


# ============================================================================ outputs


def check_writable_file(path: Path, flag: str) -> None:
    """Fail early if ``path`` cannot be written (its folder missing or read-only)."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CLIError(f"{flag} {path}: is a folder; give a file name such as scores.npz")
    if folder.exists() and not folder.is_dir():
        raise CLIError(f"{flag} {path}: {folder} is a file, not a folder; choose another place")
    if not folder.is_dir():
        raise CLIError(f"{flag} {path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CLIError(f"{flag} {path}: folder {folder} is not writable; choose another place")


def check_writable_dir(path: Path, flag: str) -> None:
    """Fail early if folder ``path`` cannot be created or written."""
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if not p.is_dir():
        raise CLIError(f"{flag} {path}: {p} is a file, not a folder; choose another place")
    if not os.access(p, os.W_OK | os.X_OK):
        raise CLIError(f"{flag} {path}: folder {p} is not writable; choose another place")


def write_npz_atomic(path: Path, arrays: dict[str, Any]) -> None:
    """``np.savez`` written whole or not at all (:func:`jaxlift.io.atomic.write_atomically`)."""
    write_atomically(path, lambda fh: np.savez(fh, **arrays), what="scores")


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem) or "input"


@dataclasses.dataclass(frozen=True)
class HeatmapPage:
    """One PNG of ``jaxlift attribute --png``, everything its figure shows.

    ``kind``: "image" (``image`` is the input (H, W, C), each panel a map of its shape),
    "features" (1-D scores: bars of the ``top_k`` largest) or "positions" (a sequence (L, K):
    bars per position, channels summed). ``panels``: panel title -> one input's scores for
    one target; ``target`` says what they explain ("the class 7 logit") for the colour bar
    and the legend; ``names`` label the bars."""

    filename: str
    kind: str
    image: np.ndarray | None
    panels: dict[str, np.ndarray]
    title: str
    subtitle: str
    target: str
    names: tuple[str, ...] = ()
    sign: str = "all"
    clip_percentile: float = 99.5
    alpha: float = 0.8
    top_k: int = 20


def heatmap_pages(batch: Batch, result: Result, spec: TargetSpec, *, reference: str = "",
                  mode: str = "", layer: str | None = None, sign: str = "all",
                  clip_percentile: float = 99.5, alpha: float = 0.8, top_k: int = 20,
                  feature_names: Sequence[str] | None = None) -> list[HeatmapPage]:
    """One page per input: images get their maps (one per target with ``all``), 1-D scores
    (tabular inputs, labelled by ``feature_names`` where given; a dense ``--layer``) and
    sequences bar charts; none when the scores are neither (e.g. a convolutional
    ``--layer``). Classes are named by ``result.class_names`` where given."""
    s = result.scores
    per_target = spec.kind == "all"
    one = s.shape[2:] if per_target else s.shape[1:]
    x_shape = batch.x.shape[1:]
    if len(one) == 3 and one == x_shape:
        kind = "image"
    elif len(one) == 1:
        kind = "features"
    elif len(one) == 2 and one == x_shape:
        kind = "positions"
    else:
        return []
    single = result.logits.shape[1] == 1
    probs = probabilities(result.logits)
    cls = classes_of(result.logits)

    cn = result.class_names
    word = "unit" if layer else "feature"
    names = (() if kind == "image" else tuple(map(str, range(one[0]))) if kind == "positions"
             else tuple(feature_names) if feature_names is not None and layer is None
             else tuple(f"{word} {k}" for k in range(one[0])))
    pages = []
    for i, name in enumerate(batch.names):
        target = target_label(spec, int(result.targets[i]), cn, single)
        if per_target:
            panels = {logit_label(t, cn, single).removeprefix("the "): s[i, t]
                      for t in range(s.shape[1])}
        else:
            panels = {target.removeprefix("the "): s[i]}
        if kind == "positions":
            panels = {k: v.sum(axis=-1) for k, v in panels.items()}
        facts = [f"predicted: {class_words(int(cls[i]), cn)} (p = {probs[i, cls[i]]:.3f})",
                 f"explained: {target}"]
        if not per_target and (not mode or sums_to_delta(mode)):
            facts.append(f"Σ contributions = Δ = {float(result.delta[i]):.4g}")
        elif not per_target:  # a baseline method: its scores need not add up to Δ
            facts.append(f"Δ = {float(result.delta[i]):.4g}, Σ contributions = "
                         f"{float(s[i].sum()):.4g} ({mode} does not promise Σ = Δ)")
        facts += [f"reference: {reference}" if reference else "", f"mode: {mode}" if mode else "",
                  f"layer: {layer}" if layer else ""]
        if batch.dtype == "image":
            stem, title = _safe_stem(name), f"input file: {name}"
        else:
            stem, title = f"input_{i:04d}", f"input: example {i} of {Path(batch.source).name}"
        pages.append(HeatmapPage(
            f"{stem}.png", kind, batch.x[i] if kind == "image" else None, panels, title,
            " · ".join(f for f in facts if f), target, names, sign, clip_percentile, alpha,
            top_k))
    return pages


def write_pngs(folder: Path, pages: Sequence[HeatmapPage]) -> list[Path]:
    """Render each page to ``folder / page.filename`` (each PNG written atomically): images as
    :func:`jaxlift.viz.attribution_grid` (input, map and overlay; an overlay per target with
    several), 1-D scores and sequences as :func:`jaxlift.viz.target_bars`."""
    from jaxlift import viz

    written = []
    for p in pages:
        text = dict(unit=f"contribution to {p.target}", title=p.title, subtitle=p.subtitle,
                    legend=viz.legend_sentence(p.target, p.sign), sign=p.sign)
        if p.kind == "image":
            styles = ("overlay",) if len(p.panels) > 1 else ("map", "overlay")
            fig = viz.attribution_grid(p.image, p.panels, styles=styles, alpha=p.alpha,
                                       clip_percentile=p.clip_percentile, **text)
        else:
            by_size = p.kind == "features"
            fig = viz.target_bars(p.panels, p.names, top_k=p.top_k if by_size else None,
                                  order="magnitude" if by_size else "position", **text)
        written.append(viz.save_png(fig, folder / p.filename))
    return written


def remove_stale_outputs(out: Path | None, png: Path | None) -> list[Path]:
    """Remove what killed runs left where this run writes: stale temporaries
    (:func:`jaxlift.io.atomic.is_stale`) of ``out`` beside it, of the folder ``png`` beside it,
    and of single PNGs inside ``png``. Returns what was removed."""
    removed = []
    if out is not None:
        removed += remove_stale_temporaries(out.absolute().parent, out.name)
    if png is not None:
        dest = Path(os.path.realpath(png))
        removed += remove_stale_temporaries(dest.parent, dest.name)
        removed += remove_stale_temporaries(dest)
    return removed


def commit_outputs(out: Path | None, arrays: dict[str, Any] | None, png: Path | None,
                   pages: Sequence[HeatmapPage]) -> list[Path]:
    """Write a run's outputs together, as far as a filesystem allows, and return the PNGs.

    The PNGs are rendered into a temporary folder beside ``png``
    (:func:`jaxlift.io.atomic.staged_folder`); then, only when all of them are written, the npz
    replaces ``out`` (:func:`write_npz_atomic`) and the folder is moved into place
    (:func:`jaxlift.io.atomic.commit_folder`: one rename when ``png`` does not exist yet,
    else each PNG replacing the file of its name) right after. An exception before that leaves
    neither output changed and no temporary behind; only a crash in the milliseconds between
    the two commits leaves the new npz beside the earlier PNGs.
    """
    if not pages or png is None:
        if out is not None:
            write_npz_atomic(out, arrays)
        return []
    with staged_folder(png, what="PNG folder") as tmp:
        write_pngs(tmp, pages)
        check_commit_folder(tmp, png)
        if out is not None:
            write_npz_atomic(out, arrays)
        return commit_folder(tmp, png)


def _format_table(names: Sequence[str], result: Result, gap: np.ndarray, limit: int = 10,
                  spec: TargetSpec | None = None) -> str:
    """One line per input: its predicted class (name, with ``--class-names``) and that class's
    probability, the class explained (``A−B`` for a class difference ``spec``), Δ, Σ scores
    and their gap."""
    probs = probabilities(result.logits)
    cls = classes_of(result.logits)
    label = functools.partial(class_label, names=result.class_names)
    diff = f"{label(spec.a)}−{label(spec.b)}" if spec is not None and spec.kind == "diff" \
        else "-"
    w = max([9, len(diff)] + [len(label(c)) for c in range(probs.shape[1])])
    rows = [f"{'input':<20} {'predicted':>{w}} {'p':>6} {'target':>{w}} {'Δ':>10} "
            f"{'Σ scores':>10} {'|Σ−Δ|':>8}"]
    single = result.delta.ndim == 1
    for i, name in enumerate(names[:limit]):
        p = probs[i, cls[i]]
        if single:
            d, g = result.delta[i], gap[i]
            rows.append(f"{name[:20]:<20} {label(cls[i]):>{w}} {p:>6.3f} "
                        f"{label(result.targets[i]) if result.targets[i] >= 0 else diff:>{w}} "
                        f"{d:>10.4f} {result.scores[i].sum():>10.4f} {g:>8.1e}")
        else:
            rows.append(f"{name[:20]:<20} {label(cls[i]):>{w}} {p:>6.3f} {'all':>{w}} "
                        f"{'(per class)':>10} {'':>10} {gap[i].max():>8.1e}")
    if len(names) > limit:
        rows.append(f"… {len(names) - limit} more")
    return "\n".join(rows)


# ============================================================================ data sets
# ``jaxlift attribute MODEL INPUT --out FOLDER``: when ``--out`` names a folder (no suffix) that
# does not exist yet or is a scores store, the single INPUT (``x.npy``, ``x.npz[:KEY]`` or
# ``x.h5:DATASET``, rows of the model's input shape; uint8 pixels are divided by 255 chunk by
# chunk) is explained with :func:`jaxlift.attribute_dataset`, which writes ``FOLDER/`` chunk by
# chunk and resumes an interrupted run of the same command. Read it with
# ``jaxlift.open_scores("FOLDER")``.

def is_store_path(out: Path) -> bool:
    """Whether ``--out`` asks for a scores store: a name without a suffix that is new, or a
    folder holding a store's ``manifest.json`` (an existing other folder keeps the old
    "is a folder" error)."""
    return not out.suffix and (not out.exists() or (out / "manifest.json").is_file())


def _store_inputs(path: str, shape: tuple[int, ...]):
    """The source of INPUT, as float32 rows of the model's input ``shape``."""
    from jaxlift.io.sources import MappedSource, SourceError, as_source
    try:
        src = as_source(path)
    except SourceError as exc:
        raise CLIError(f"inputs: {exc}") from None
    fits = src.row_shape == shape or (shape[-1:] == (1,) and src.row_shape == shape[:-1])
    if not fits:
        raise CLIError(f"inputs {src.name}: rows of shape {src.row_shape}; the model's input is "
                       f"{shape}")
    if src.dtype != np.uint8 and not np.issubdtype(src.dtype, np.floating):
        raise CLIError(f"inputs {src.name}: dtype {src.dtype}; expected floats or uint8 pixels")
    what = f"inputs {src.name}"
    return MappedSource(src, lambda rows: to_model_float(rows, what).reshape(-1, *shape),
                        np.float32, shape)


def _store_target(spec):
    import jaxlift
    if spec.kind == "pred":
        raise CLIError("--target pred (the default) needs each input's class; when streaming "
                       "into a folder give --target IDX, A-B or all")
    return {"index": spec.a, "all": "all"}.get(spec.kind) if spec.kind != "diff" \
        else jaxlift.class_difference(spec.a, spec.b)


def attribute_to_store(args: argparse.Namespace) -> int:
    """Run ``jaxlift attribute`` with a folder ``--out``; returns the exit status."""
    import jaxlift

    if len(args.inputs) != 1:
        raise CLIError("with a folder --out, give one input file (.npy, .npz[:KEY], "
                       ".h5[:DATASET])")
    if args.png:
        raise CLIError("--png is not available with a folder --out (one PNG per input of a "
                       "whole data set); render from jaxlift.open_scores(FOLDER)")
    loaded = load_model(args.model)
    check_target(args.target, loaded.n_classes, loaded.binary)
    target = _store_target(args.target)
    shape = tuple(loaded.input_shape)
    src = _store_inputs(args.inputs[0], shape)
    if args.refs == "zeros":
        refs = np.zeros((1, *shape), np.float32)
    elif Path(args.refs).suffix.lower() in (".npy", ".npz"):
        refs = to_model_float(read_array_file(Path(args.refs), "--refs"), "--refs")
        if refs.shape[1:] != shape:
            raise CLIError(f"--refs {args.refs}: shape {refs.shape}; expected (K, *{shape}) "
                           "references shared by all inputs")
    else:
        raise CLIError(f"--refs {args.refs}: with a folder --out, give zeros or a .npy/.npz "
                       "file of references (K, …)")
    extra = {} if args.batch_size is None else {"batch_size": args.batch_size}
    options = resolve_mode_options(args.mode, args.mode_option or (), shape)
    if options:
        extra["mode_options"] = options
    out = jaxlift.attribute_dataset(
        loaded.class_fn(args.layer), loaded.variables, src, refs, out=args.out,
        target=target, mode=args.mode, layer=args.layer, precision=args.precision,
        progress=None if not args.quiet else False, quiet=args.quiet, **extra)
    if not args.quiet:
        print(f"wrote {out} (open it with jaxlift.open_scores({str(out)!r}))", file=sys.stderr)
    return 0


# ============================================================================ commands


def _shipped(name: str) -> Any:
    return resources.files("jaxlift") / "data" / name


def cmd_demo(args: argparse.Namespace) -> int:
    """``jaxlift demo``: RevealCancel on shipped MNIST digits, a PNG, the summation check."""
    from jaxlift import viz

    t0 = time.time()
    out = Path(args.out)
    check_writable_dir(out, "--out")
    with resources.as_file(_shipped("mnist_small.h5")) as h5:
        loaded = load_model(h5)
    with resources.as_file(_shipped("mnist_digits.npz")) as npz, np.load(npz) as d:
        x_u8, labels = d["x"][:args.n], d["y"][:args.n]
    x = x_u8.astype(np.float32)[..., None] / 255.0
    refs = np.zeros((1, *loaded.input_shape), np.float32)
    print(f"jaxlift demo: DeepLIFT ({args.mode}) on {len(x)} MNIST test digits, a small CNN "
          "shipped with jaxlift (98.3% test accuracy),\n"
          "explaining each digit's predicted-class logit against the all-black (zero) reference.")
    result = explain(loaded, x, refs, TargetSpec("pred"), mode=args.mode,
                     precision=args.precision,
                     mode_options=resolve_mode_options(args.mode, (), loaded.input_shape))
    gap = summation_gap(result.scores, result.delta)
    cls = result.targets
    probs = probabilities(result.logits)
    print(f"\n{'digit':>5} {'label':>5} {'predicted':>9} {'p':>6} {'Δlogit':>8} {'Σ scores':>9}")
    for i in range(len(x)):
        print(f"{i:>5} {labels[i]:>5} {cls[i]:>9} {probs[i, cls[i]]:>6.3f} "
              f"{result.delta[i]:>8.3f} {result.scores[i].sum():>9.3f}")
    print(f"\nsummation-to-delta: max |Σ contributions − Δlogit| = {gap.max():.2e} "
          "(float32 rounding; DeepLIFT's scores add up to the change in the logit)")
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out, f"demo_{args.mode}.png")
    target = "each digit's predicted-class logit"
    fig = viz.examples_grid(
        x, result.scores,
        row_labels=[f"true {labels[i]} · predicted {cls[i]} (p = {probs[i, cls[i]]:.2f})"
                    for i in range(len(x))],
        title="jaxlift demo: what in each MNIST digit makes the CNN predict its class",
        subtitle=f"mode: {args.mode} · reference: all-black image · Σ contributions = Δlogit "
                 f"(max gap {gap.max():.1e}) · one colour scale for all digits",
        unit=f"contribution to {target}", legend=viz.legend_sentence(target))
    png = viz.save_png(fig, out / f"demo_{args.mode}.png")
    print(f"wrote {png.resolve()}  ({time.time() - t0:.1f} s)")
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    """``jaxlift attribute``: scores for a model and inputs, to .npz and PNGs."""
    if args.out and is_store_path(Path(args.out)):  # stream a data set into a scores folder
        return attribute_to_store(args)
    if args.num_refs < 1:
        raise CLIError(f"--num-refs {args.num_refs}: give a positive number")
    out = Path(args.out) if args.out else None
    png = Path(args.png) if args.png else None
    if out is not None:
        check_writable_file(out, "--out")
    if png is not None:
        check_writable_dir(png, "--png")
    say = (lambda *a, **k: None) if args.quiet else print
    t0 = time.time()
    stale = remove_stale_outputs(out, png)
    if stale:
        say(f"removed {len(stale)} temporary file(s)/folder(s) left by an interrupted run: "
            f"{', '.join(p.name for p in stale)}")
    loaded = load_model(args.model)
    check_target(args.target, loaded.n_classes, loaded.binary)
    check_class_names(args.class_names, loaded.n_classes, loaded.binary)
    check_feature_names(args.feature_names, loaded.input_shape, args.layer)
    if args.layer is not None:
        loaded.scored_fn(args.layer)  # an unknown layer fails before the inputs are read
    options = resolve_mode_options(args.mode, args.mode_option or (), loaded.input_shape)
    batch = load_batch(args.inputs, loaded.input_shape, "inputs", args.resize)
    refs, ref_text = make_refs(args.refs, batch, loaded, args.num_refs, args.resize)
    warn_changes(batch.notes, args.resize)
    classes = (f"{loaded.n_outputs} output(s)" if not loaded.binary else
               "one sigmoid output: classes 0 (−logit) and 1 (logit)")
    say(f"model {args.model}: input {loaded.input_shape}, {classes}; "
        f"{len(batch.x)} input(s); references: {ref_text}; mode {args.mode}"
        + (f" ({describe_options(options)})" if options else "")
        + f"; target {args.target}" + (f"; layer {args.layer}" if args.layer else ""))
    result = explain(loaded, batch.x, refs, args.target, mode=args.mode, layer=args.layer,
                     batch_size=args.batch_size, progress=not args.quiet,
                     precision=args.precision, mode_options=options,
                     class_names=args.class_names)
    gap = summation_gap(result.scores, result.delta)
    say(_format_table(batch.names, result, gap, spec=args.target))
    say(f"summation-to-delta: max |Σ scores − Δ| = {gap.max():.2e}"
        + ("" if sums_to_delta(args.mode) else
           f" (mode {args.mode} does not promise Σ scores = Δ)"))
    pages = heatmap_pages(
        batch, result, args.target, reference=ref_text, mode=args.mode, layer=args.layer,
        sign=args.sign, clip_percentile=args.clip_percentile, alpha=args.alpha,
        top_k=args.top_k, feature_names=args.feature_names) if png is not None else []
    if png is not None and not pages and not args.quiet:
        shape = result.scores.shape[2 if args.target.kind == "all" else 1:]
        print(f"note: no PNG: scores of shape {shape} are not the inputs' image shape "
              f"{batch.x.shape[1:]}", file=sys.stderr)
    arrays = score_arrays(args, batch, result, ref_text) if out is not None else None
    files = commit_outputs(out, arrays, png, pages)
    if out is not None:
        say(f"wrote {out}")
    else:
        say("(scores not saved: pass --out FILE.npz to keep them)")
    if files:
        say(f"wrote {len(files)} PNG(s) to {png}")
    say(f"done in {time.time() - t0:.1f} s")
    return 0


def score_arrays(args: argparse.Namespace, batch: Batch, result: Result, ref_text: str
                 ) -> dict[str, np.ndarray]:
    """What ``--out`` saves: the scores and what they explain."""
    return {
        "scores": result.scores, "delta": result.delta, "logits": result.logits,
        "predictions": classes_of(result.logits),
        "probabilities": probabilities(result.logits).astype(np.float32),
        "targets": result.targets, "target": np.array(str(args.target)),
        "class_names": np.array(list(result.class_names or ())),
        "mode": np.array(args.mode), "reference": np.array(ref_text),
        "layer": np.array(args.layer or ""), "model": np.array(str(args.model)),
        "names": np.array(batch.names)}


def warn_changes(notes: Sequence[str], resize: bool, limit: int = 5) -> None:
    """Print, on stderr, how images were fitted to the model (``--resize``: a warning per
    image, at most ``limit``; plain size changes: one note)."""
    if not notes:
        return
    kind = "warning" if resize else "note"
    for line in notes[:limit]:
        print(f"jaxlift: {kind}: {line}", file=sys.stderr)
    if len(notes) > limit:
        print(f"jaxlift: {kind}: … and {len(notes) - limit} more image(s) changed",
              file=sys.stderr)


def cmd_info(args: argparse.Namespace) -> int:
    """``jaxlift info``: the layers of a Keras file."""
    from jaxlift.io.keras_files import keras_info
    print(keras_info(args.model))
    return 0


# ============================================================================ parser


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of ``jaxlift`` and its sub-commands."""
    p = argparse.ArgumentParser(
        prog="jaxlift",
        description="DeepLIFT (Rescale, RevealCancel) scores for Keras .h5 models, computed "
                    "by a JAX program transformation. Scores explain the model's logits.",
        epilog="Start with `jaxlift demo`. Exit status: 0 ok, 2 usage error, 1 other errors.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="explain a few shipped MNIST digits (no download)",
                       description="Run DeepLIFT on a few MNIST test digits with the small CNN "
                                   "shipped inside jaxlift, against the all-black reference, "
                                   "print the summation-to-delta check and write a PNG.")
    d.add_argument("--out", default="jaxlift-demo", metavar="DIR",
                   help="folder for the PNG (default: ./jaxlift-demo)")
    _add_mode(d)
    d.add_argument("--n", type=_int_in(1, 100), default=5, metavar="N",
                   help="how many digits, 1-100 (default: 5)")
    _add_precision(d)
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser(
        "attribute", help="score the inputs of a Keras .h5 model",
        description="DeepLIFT contribution scores of each input feature to a logit of MODEL, "
                    "relative to references. Integer (uint8) arrays and image files are read as "
                    "0-255 pixels and divided by 255; float arrays are used as they are.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  jaxlift attribute model.h5 digits.npy --out scores.npz --png heatmaps/\n"
               "  jaxlift attribute model.h5 photos/ --refs blur --target 0\n"
               "  jaxlift attribute model.h5 x.npz --target 3-5 --mode rescale\n"
               "  jaxlift attribute model.h5 x.npy --refs near-uniform:train.npy --layer dense")
    a.add_argument("model", metavar="MODEL.h5",
                   help="a Keras 2/3 .h5 or Keras 3 .keras model file")
    a.add_argument("inputs", nargs="+", metavar="INPUTS",
                   help="one .npy/.npz array (N, *input shape), or image files and/or folders "
                        "of images (resized to the model's input, grayscale or RGB as it needs)")
    a.add_argument("--refs", default="zeros", metavar="REFS",
                   help="zeros (default), blur (a heavily blurred copy of each image), a "
                        ".npy/.npz/image file or folder of references (K, *shape) or "
                        "(N, K, *shape), or near-uniform:DATA (the --num-refs inputs of DATA "
                        "whose prediction is closest to uniform); scores are averaged over "
                        "the references")
    a.add_argument("--num-refs", type=int, default=10, metavar="K",
                   help="references to pick with near-uniform:DATA (default: 10)")
    _add_mode(a)
    a.add_argument("--mode-option", type=parse_mode_option, action="append", metavar="KEY=VALUE",
                   help="an option of the mode, repeatable: window=4,4,1 and stride=2,2,1 "
                        "(occlusion; default: 1/8 of the image's height and width, all "
                        "channels, moved by half a window), steps=32 and method=riemann_left "
                        "(integrated_gradients), num_permutations=10 and feature_mask=FILE.npy "
                        "(shapley_sampling; default: the occlusion window's patches)")
    a.add_argument("--target", type=parse_target, default=TargetSpec("pred"), metavar="T",
                   help="pred (default: each input's predicted class), a class index, all "
                        "(every class; scores get an axis T after N), or A-B (logit A minus "
                        "logit B). A model with one sigmoid output has two classes: 1 is its "
                        "logit z, 0 the negated logit −z")
    a.add_argument("--class-names", type=parse_class_names, metavar="A,B,...",
                   help="names of the classes in order, for the printed table, the PNGs and "
                        "the .npz "
                        "(a sigmoid model: the class of P < 0.5 first, e.g. cat,dog for a model "
                        "that outputs P(dog))")
    a.add_argument("--resize", action="store_true",
                   help="accept images of another aspect ratio or colour than the model's "
                        "input: stretch and convert them (a warning says what changed); "
                        "without it such images are refused")
    a.add_argument("--layer", metavar="NAME",
                   help="score the units of this Keras layer (see `jaxlift info`) instead of "
                        "the inputs")
    a.add_argument("--batch-size", type=parse_batch_size, default="auto", metavar="B",
                   help="(input, reference) pairs computed at a time, bounding memory, or auto "
                        "(the default: sized from the free memory and the CPU caches)")
    a.add_argument("--out", metavar="FILE.npz",
                   help="save scores, delta, logits, predictions, targets … here (atomically)")
    a.add_argument("--png", metavar="DIR",
                   help="write one heatmap PNG per input here, after --out and only when all "
                        "are rendered: a new DIR appears with all of them at once; in an "
                        "existing DIR they replace the files of the same names and other "
                        "files are left as they are")
    a.add_argument("--sign", choices=("all", "positive", "negative", "absolute"), default="all",
                   help="PNG: which scores to show: all (default; red raises the target, blue "
                        "lowers it), only positive, only negative, or absolute (|score|)")
    a.add_argument("--clip-percentile", type=_float_in(0.0, 100.0), default=99.5, metavar="P",
                   help="PNG: the colour scale ends at this percentile of |score| so that a few "
                        "outliers do not wash the map out (default: 99.5; 100: no clipping)")
    a.add_argument("--alpha", type=_float_in(0.0, 1.0, low_ok=True), default=0.8, metavar="A",
                   help="PNG: largest opacity of the map drawn over the grey input, 0-1 "
                        "(default: 0.8)")
    a.add_argument("--top-k", type=_int_in(1, 10**6), default=20, metavar="K",
                   help="PNG of 1-D scores (tabular inputs, a dense --layer): bars for the K "
                        "largest |scores| (default: 20)")
    a.add_argument("--feature-names", type=parse_feature_names, metavar="FILE|A,B,...",
                   help="PNG of tabular inputs: label the bars with these names instead of "
                        "'feature k' (a file with one name per line, or the names separated by "
                        "commas; one per input feature)")
    _add_precision(a)
    a.add_argument("--quiet", "-q", action="store_true",
                   help="no progress bar or summary (errors are still reported)")
    a.set_defaults(func=cmd_attribute)

    i = sub.add_parser("info", help="show the layers of a Keras .h5 model",
                       description="Print a Keras-summary-like table of a .h5 model: layer "
                                   "names (for --layer), output shapes and parameter counts.")
    i.add_argument("model", metavar="MODEL.h5")
    i.set_defaults(func=cmd_info)
    return p


def _add_mode(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=LazyChoices(available_modes), default="reveal_cancel",
                        metavar="M",
                        help="attribution method, one of %(choices)s (default: reveal_cancel; "
                             "rescale, reveal_cancel and genomics_default are DeepLIFT's and "
                             "sum to Δ exactly)")


def _precisions() -> tuple[str, ...]:
    from jaxlift.pipeline import PRECISIONS
    return tuple(PRECISIONS)


def _add_precision(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=LazyChoices(_precisions), default="default",
                        metavar="P",
                        help="float32 matmul/convolution precision: default (JAX's: fast, TF32 "
                             "on recent NVIDIA GPUs, sums miss delta by ~1e-5) or highest "
                             "(exact float32, slower on such GPUs; the same on a CPU)")


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} is not between {lo} and {hi}")
        return v
    return parse


def _float_in(lo: float, hi: float, low_ok: bool = False) -> Callable[[str], float]:
    """argparse ``type=``: a number in (lo, hi] (``[lo, hi]`` with ``low_ok``)."""
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (lo <= v if low_ok else lo < v) or not v <= hi:
            raise argparse.ArgumentTypeError(
                f"{v:g} is not in {'[' if low_ok else '('}{lo:g}, {hi:g}]")
        return v
    return parse


def _one_line(exc: BaseException) -> str:
    """An exception as one line: OSErrors as 'what: path', others by their message."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        msg = f"{exc.filename}: {exc.strerror}"
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(msg.split())


class Terminated(BaseException):
    """SIGTERM, raised where the command is so that its clean-ups run."""


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM (``kill PID``, a job scheduler's time limit) raises
    :class:`Terminated` instead of ending the process at once, so temporaries are removed as on
    any error. A no-op outside the main thread, where Python cannot handle signals."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxlift`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        with sigterm_raises():
            return args.func(args)
    except (JaxliftError, ValueError, OSError) as e:  # KerasFormatError is both of the first
        print(f"jaxlift: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # XLA's out-of-memory; anything else is a bug: show it
        if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
            raise
        print("jaxlift: error: out of memory while computing the scores; lower --batch-size "
              "(pairs of input and reference computed at a time)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("jaxlift: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("jaxlift: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    raise SystemExit(main())
