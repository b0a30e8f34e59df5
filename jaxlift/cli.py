"""The ``jaxlift`` command: DeepLIFT scores for Keras ``.h5``/``.keras`` models from the shell.

::

    jaxlift demo [--out DIR] [--mode M] [--n N]
    jaxlift attribute MODEL.h5 INPUTS... [--refs zeros|blur|FILE|near-uniform:DATA]
                      [--mode M] [--target pred|IDX|all|A-B] [--layer NAME]
                      [--batch-size B] [--out scores.npz] [--png DIR] [--quiet]
    jaxlift info MODEL.h5

MODEL.h5 may be any Keras model file: a legacy ``.h5`` (Keras 2 or 3) or a Keras 3
``.keras`` archive (told apart by content). Everything explains the model's **logits** (the
pre-activation of its final softmax/sigmoid).
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
import contextlib
import dataclasses
import functools
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
from jaxlift.interpreter import MODES  # the DeepLIFT modes: rescale, reveal_cancel, genomics_default

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


def check_target(spec: TargetSpec, n_outputs: int) -> None:
    """Raise CLIError if ``spec`` names an output the model does not have."""
    for i in {"index": (spec.a,), "diff": (spec.a, spec.b)}.get(spec.kind, ()):
        if i >= n_outputs:
            raise CLIError(f"--target {spec}: output {i} is out of range; the model has "
                           f"{n_outputs} output(s), numbered 0 to {n_outputs - 1}")


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
    """Predicted class per input: argmax, or ``logit > 0`` for a single (sigmoid) output."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).astype(np.int64)
    return np.argmax(logits, axis=1)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over T > 1 logits, sigmoid of a single one (what the Keras model outputs when
    its last activation is softmax/sigmoid)."""
    z = logits.astype(np.float64)
    if z.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-z))
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


def load_images(files: Sequence[Path], shape: tuple[int, ...], what: str) -> np.ndarray:
    """Images → (N, H, W, C) float32 in [0, 1], resized to the model's (H, W) and converted to
    grayscale (C = 1) or RGB (C = 3) as ``shape`` = (H, W, C) says."""
    from jaxlift.io.images import load_image

    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise CLIError(f"{what}: the model takes inputs of shape {shape}, not images (H, W, 1) or "
                       "(H, W, 3); pass an .npy/.npz array instead")
    out = []
    for f in files:
        try:
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
    return np.stack(out).astype(np.float32) if out else np.zeros((0, *shape), np.float32)


@dataclasses.dataclass
class Batch:
    """Arrays read for the model: ``x`` float32 (N, *S); ``names`` one per input; ``dtype``
    the dtype they were stored in (``"image"`` for image files)."""

    x: np.ndarray
    names: list[str]
    dtype: str
    source: str


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


def load_batch(paths: Sequence[str], shape: tuple[int, ...], what: str) -> Batch:
    """INPUTS (one .npy/.npz, or image files and folders) → a checked Batch."""
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
        x = load_images(files, shape, what)
        batch = Batch(x, [f.name for f in files], "image", ", ".join(paths))
    if len(batch.x) == 0:
        raise CLIError(f"{what} {batch.source}: no inputs found (an empty batch); give at least "
                       "one example" + (" (folders are searched for " + ", ".join(IMAGE_SUFFIXES)
                                        + " files)" if batch.dtype == "image" else ""))
    check_finite(batch.x, f"{what} {batch.source}")
    return batch


# ============================================================================ references


def make_refs(spec: str, batch: Batch, loaded: LoadedModel, num: int) -> tuple[np.ndarray, str]:
    """``--refs`` → (references (K, *S) or (N, K, *S) float32, a description)."""
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
        data = load_batch([data_spec], shape, "--refs near-uniform data")
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
        refs = load_batch([spec], shape, "--refs").x
    if refs.shape[-len(shape) - 1] == 0 or refs.size == 0:
        raise CLIError(f"references {p}: an empty batch; give at least one reference")
    check_finite(refs, f"references {p}")
    return refs, f"file {p} ({refs.shape[-len(shape) - 1]} reference(s))"


# ============================================================================ attribution


@dataclasses.dataclass
class Result:
    """Scores and what they explain. ``targets``: the output index explained per input (-1
    for a class difference or ``all``)."""

    scores: np.ndarray
    delta: np.ndarray
    targets: np.ndarray
    logits: np.ndarray


def explain(loaded: LoadedModel, x: np.ndarray, refs: np.ndarray, spec: TargetSpec, *,
            mode: str, layer: str | None = None, batch_size: int | None = None,
            progress: bool = False, logits: np.ndarray | None = None,
            precision: str = "default") -> Result:
    """DeepLIFT scores of ``x`` against ``refs`` for the target ``spec``."""
    import jaxlift

    check_target(spec, loaded.n_outputs)
    fn = loaded.scored_fn(layer)
    logits = predict(loaded, x, batch_size or 64) if logits is None else logits
    run = functools.partial(jaxlift.attribute, fn, loaded.variables, mode=mode, layer=layer,
                            batch_size=batch_size or "auto", progress=progress,
                            return_delta=True, precision=precision)
    n = len(x)
    if spec.kind == "index":
        s, d = run(x, refs, target=spec.a)
        return Result(np.asarray(s), np.asarray(d), np.full(n, spec.a), logits)
    if spec.kind == "diff":
        s, d = run(x, refs, target=_Difference(spec.a, spec.b))
        return Result(np.asarray(s), np.asarray(d), np.full(n, -1), logits)
    if spec.kind == "all":
        s, d = run(x, refs, target="all")
        return Result(np.asarray(s), np.asarray(d), np.full(n, -1), logits)
    pred = classes_of(logits) if loaded.n_outputs > 1 else np.zeros(n, np.int64)
    return Result(*_explain_per_class(run, x, refs, pred, loaded.n_outputs), pred, logits)


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
    """One PNG of ``jaxlift attribute --png``: ``image`` (one input, (1, *S)) beside one
    heatmap per entry of ``columns``."""

    filename: str
    image: np.ndarray
    columns: dict[str, np.ndarray]
    title: str


def heatmap_pages(batch: Batch, result: Result, spec: TargetSpec) -> list[HeatmapPage]:
    """One page per input: the input, then its heatmap (one per target with ``all``); none
    when the scores are not images of the inputs' shape (``--layer``, non-image models)."""
    s = result.scores
    per_target = spec.kind == "all"
    img_shape = s.shape[2:] if per_target else s.shape[1:]
    if img_shape != batch.x.shape[1:] or len(img_shape) != 3:
        return []
    pages = []
    for i, name in enumerate(batch.names):
        if per_target:
            cols = {f"output {t}": s[i, t][None] for t in range(s.shape[1])}
        else:
            what = {"diff": f"logit {spec.a} − logit {spec.b}", "index": f"output {spec.a}",
                    "pred": f"class {result.targets[i]}" if result.logits.shape[1] > 1
                    else "logit"}[spec.kind]
            cols = {what: s[i][None]}
        stem = _safe_stem(name) if batch.dtype == "image" else f"input_{i:04d}"
        pages.append(HeatmapPage(f"{stem}.png", batch.x[i][None], cols, f"{name}"))
    return pages


def write_pngs(folder: Path, pages: Sequence[HeatmapPage]) -> list[Path]:
    """Render each page to ``folder / page.filename`` (each PNG written atomically)."""
    from jaxlift import viz

    return [viz.save_png(viz.method_grid(p.image, p.columns, title=p.title, cell_size=2.4),
                         folder / p.filename)
            for p in pages]


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


def _format_table(names: Sequence[str], result: Result, gap: np.ndarray, limit: int = 10
                  ) -> str:
    probs = probabilities(result.logits)
    cls = classes_of(result.logits)
    rows = [f"{'input':<20} {'predicted':>9} {'p':>6} {'target':>7} {'Δ':>10} {'Σ scores':>10} "
            f"{'|Σ−Δ|':>8}"]
    single = result.delta.ndim == 1
    for i, name in enumerate(names[:limit]):
        p = probs[i, 0] if probs.shape[1] == 1 else probs[i, cls[i]]
        tgt = str(result.targets[i]) if result.targets[i] >= 0 else "-"
        if single:
            d, g = result.delta[i], gap[i]
            rows.append(f"{name[:20]:<20} {cls[i]:>9} {p:>6.3f} {tgt:>7} {d:>10.4f} "
                        f"{result.scores[i].sum():>10.4f} {g:>8.1e}")
        else:
            rows.append(f"{name[:20]:<20} {cls[i]:>9} {p:>6.3f} {'all':>7} "
                        f"{'(per output)':>10} {'':>10} {gap[i].max():>8.1e}")
    if len(names) > limit:
        rows.append(f"… {len(names) - limit} more")
    return "\n".join(rows)


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
                     precision=args.precision)
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
    fig = viz.method_grid(
        x, {f"DeepLIFT {args.mode}": result.scores},
        row_labels=[f"label {labels[i]} → {cls[i]}" for i in range(len(x))],
        title="red: raises the predicted logit vs black; blue: lowers it", cell_size=2.2)
    fig.get_layout_engine().set(w_pad=0.1)  # room for the row labels beside per-row colorbars
    png = viz.save_png(fig, out / f"demo_{args.mode}.png")
    print(f"wrote {png.resolve()}  ({time.time() - t0:.1f} s)")
    return 0


def cmd_attribute(args: argparse.Namespace) -> int:
    """``jaxlift attribute``: scores for a model and inputs, to .npz and PNGs."""
    from jaxlift.cli_store import attribute_to_store, is_store_path  # (imports this module)
    if args.out and is_store_path(Path(args.out)):  # stream a data set into a scores folder
        return attribute_to_store(args)
    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: give a positive number of "
                       "(input, reference) pairs per chunk")
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
    check_target(args.target, loaded.n_outputs)
    if args.layer is not None:
        loaded.scored_fn(args.layer)  # an unknown layer fails before the inputs are read
    batch = load_batch(args.inputs, loaded.input_shape, "inputs")
    refs, ref_text = make_refs(args.refs, batch, loaded, args.num_refs)
    say(f"model {args.model}: input {loaded.input_shape}, {loaded.n_outputs} output(s); "
        f"{len(batch.x)} input(s); references: {ref_text}; mode {args.mode}; "
        f"target {args.target}" + (f"; layer {args.layer}" if args.layer else ""))
    result = explain(loaded, batch.x, refs, args.target, mode=args.mode, layer=args.layer,
                     batch_size=args.batch_size, progress=not args.quiet,
                     precision=args.precision)
    gap = summation_gap(result.scores, result.delta)
    say(_format_table(batch.names, result, gap))
    say(f"summation-to-delta: max |Σ scores − Δ| = {gap.max():.2e}")
    pages = heatmap_pages(batch, result, args.target) if png is not None else []
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
        "mode": np.array(args.mode), "reference": np.array(ref_text),
        "layer": np.array(args.layer or ""), "model": np.array(str(args.model)),
        "names": np.array(batch.names)}


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
    d.add_argument("--mode", choices=MODES, default="reveal_cancel",
                   help="DeepLIFT rule for nonlinearities (default: reveal_cancel)")
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
    a.add_argument("--mode", choices=MODES, default="reveal_cancel",
                   help="DeepLIFT rule for nonlinearities (default: reveal_cancel)")
    a.add_argument("--target", type=parse_target, default=TargetSpec("pred"), metavar="T",
                   help="pred (default: each input's predicted class), an output index, all "
                        "(every output; scores get an axis T after N), or A-B (logit A minus "
                        "logit B)")
    a.add_argument("--layer", metavar="NAME",
                   help="score the units of this Keras layer (see `jaxlift info`) instead of "
                        "the inputs")
    a.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="(input, reference) pairs computed at a time; bounds memory "
                        "(default: sized from the free memory and the CPU caches)")
    a.add_argument("--out", metavar="FILE.npz",
                   help="save scores, delta, logits, predictions, targets … here (atomically)")
    a.add_argument("--png", metavar="DIR",
                   help="write one heatmap PNG per input here, after --out and only when all "
                        "are rendered: a new DIR appears with all of them at once; in an "
                        "existing DIR they replace the files of the same names and other "
                        "files are left as they are")
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


def _add_precision(parser: argparse.ArgumentParser) -> None:
    from jaxlift.api import PRECISIONS
    parser.add_argument("--precision", choices=PRECISIONS, default="default",
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
