"""INPUTS and ``--refs``: arrays (``.npy``/``.npz``) and image files or folders read and
fitted to the model's input (uint8 pixels divided by 255, images resized and converted only as
far as allowed), references made (zeros, blur, files, near-uniform inputs)."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from jaxlift.cli.model import LoadedModel
from jaxlift.cli.options import CLIError, UsageError


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


ARRAY_SUFFIXES = (".npy", ".npz")


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
            raise UsageError(f"{what} {p}: no such file or folder")
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
            raise UsageError(f"{what} {p}: no such file or folder")
    if len(paths) == 1 and Path(paths[0]).suffix.lower() in ARRAY_SUFFIXES:
        p = Path(paths[0])
        raw = read_array_file(p, what)
        x = fit_shape(to_model_float(raw, f"{what} {p}"), shape, f"{what} {p}")
        names = [f"{i}" for i in range(len(x))]
        batch = Batch(x, names, str(raw.dtype), str(p))
    else:
        for p in paths:
            if Path(p).suffix.lower() in ARRAY_SUFFIXES:
                raise UsageError(f"{what}: give one .npy/.npz file alone, or image files/folders "
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
            raise UsageError(f"--refs blur blurs images (H, W, C); the model's inputs have shape "
                           f"{shape}; use --refs zeros or a file of references")
        return np.asarray(R.blurred(batch.x))[:, None], "blur (each input's heavily blurred copy)"
    if spec.startswith("near-uniform:"):
        data_spec = spec[len("near-uniform:"):]
        if not data_spec:
            raise UsageError("--refs near-uniform:DATA needs a data file or folder after the colon")
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
        raise UsageError(f"--refs {spec!r}: no such file or folder; use zeros, blur, a .npy/.npz "
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
