"""A folder of score arrays written chunk by chunk, resumable after ``kill -9``.

Layout of a store ``OUT/``::

    OUT/manifest.json              what the store holds, its fingerprint, and whether it is complete
    OUT/chunks/00000012.npz        one finished chunk (while the run is going)
    OUT/scores.npy, delta.npy, …   the arrays, N rows each (once every chunk is done)

Every file appears whole or not at all (:func:`jaxlift.io.atomic.write_atomically`), so a
chunk file that exists is a finished chunk: that is the whole record of progress, and a run
killed at any point leaves finished chunks and, at worst, hidden temporaries that the next
run removes (:func:`jaxlift.io.atomic.remove_stale_temporaries`). When all chunks are done,
:func:`finalize` streams them into one ``.npy`` per field (memory: one chunk), marks the
manifest complete (atomically) and only then removes the chunk files. The final folder is a
pure function of the chunks, so a resumed run leaves the same bytes as an uninterrupted one.

The manifest is JSON::

    {"format": "jaxlift-scores", "version": 1, "complete": false,
     "chunk_size": 1024, "n": 100000 or null (unknown until the input ends),
     "fingerprint": {"program": {"digest": "…", "summary": "…"}, "params": {…}, …},
     "fields": {"scores": {"shape": [100000, 28, 28], "dtype": "<f4"}, …}   (once complete)
     "info": {…}}                                 (free-form, e.g. the options in words)

A store is read with :func:`open_scores`: a dict of read-only memory-mapped arrays. This module
knows nothing of how the scores are computed.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from jaxlift.errors import JaxliftError
from jaxlift.io.atomic import remove_stale_temporaries, write_atomically

FORMAT = "jaxlift-scores"
VERSION = 1
MANIFEST = "manifest.json"
CHUNKS = "chunks"


class ScoresStoreError(JaxliftError, ValueError):
    """A scores folder that cannot be used as asked (not a store, incomplete, unreadable)."""


class FingerprintMismatchError(ScoresStoreError):
    """A store was started by a run with a different program, parameters, references, inputs
    or options: resuming would mix two runs' scores. ``changed`` lists what differs."""

    def __init__(self, message: str, changed: list[str]):
        self.changed = changed
        super().__init__(message)


def manifest_path(out: str | os.PathLike) -> Path:
    return Path(out) / MANIFEST


def chunk_path(out: str | os.PathLike, index: int) -> Path:
    """The file of chunk ``index`` (0-based): ``OUT/chunks/%08d.npz``."""
    return Path(out) / CHUNKS / f"{index:08d}.npz"


def read_manifest(out: str | os.PathLike) -> dict | None:
    """The manifest of store ``out``; None if the folder has none (a new store)."""
    path = manifest_path(out)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ScoresStoreError(f"{path}: not a jaxlift scores manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ScoresStoreError(f"{path}: not a jaxlift scores manifest")
    if manifest.get("version") != VERSION:
        raise ScoresStoreError(f"{path}: scores format version {manifest.get('version')!r}; "
                               f"this jaxlift reads version {VERSION}")
    return manifest


def write_manifest(out: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    """Replace the manifest of ``out`` atomically (keys sorted: equal content, equal bytes)."""
    text = json.dumps({"format": FORMAT, "version": VERSION, **manifest}, indent=1,
                      sort_keys=True) + "\n"
    write_atomically(manifest_path(out), lambda fh: fh.write(text.encode()),
                     what="scores manifest")


def fingerprint_changes(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Names of the fingerprint components (``{name: {"digest": …, "summary": …}}``) that
    differ between a stored and a current fingerprint, with their summaries, e.g.
    ``"references (was (8, 28, 28) float32 sha256 1a2b…, now (4, 28, 28) float32 …)"``."""
    changed = []
    for name in sorted(set(stored) | set(current)):
        a, b = stored.get(name), current.get(name)
        if (a or {}).get("digest") != (b or {}).get("digest"):
            was = (a or {}).get("summary", "absent")
            now = (b or {}).get("summary", "absent")
            changed.append(f"{name} (was {was}; now {now})" if was != now else name)
    return changed


def open_store(out: str | os.PathLike, fingerprint: Mapping[str, Any], *, chunk_size: int,
               n: int | None, info: Mapping[str, Any] | None = None) -> dict:
    """Create store ``out`` or check that it can be resumed; return its manifest.

    A new (or empty) folder gets a manifest with ``fingerprint``, ``chunk_size`` and ``n``. An
    existing store must have the same fingerprint and layout, else
    :class:`FingerprintMismatchError` says what changed. Stale temporaries of killed writers are
    removed. Several processes may call this at once on one store: each writes the same
    manifest.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ScoresStoreError(f"{out}: exists and is not a folder (a scores store is a folder)")
    manifest = read_manifest(out)
    if manifest is None and out.is_dir() and any(p.name != CHUNKS and not p.name.startswith(".")
                                                 for p in out.iterdir()):
        raise ScoresStoreError(f"{out}: a folder that is not a jaxlift scores store; give a new "
                               "or empty folder")
    if manifest is not None:
        changed = fingerprint_changes(manifest.get("fingerprint", {}), fingerprint)
        if manifest.get("chunk_size") != chunk_size:
            changed.append(f"chunk_size (was {manifest.get('chunk_size')}; now {chunk_size})")
        if n is not None and manifest.get("n") not in (None, n):
            changed.append(f"number of inputs (was {manifest.get('n')}; now {n})")
        if changed:
            raise FingerprintMismatchError(
                f"cannot resume {out}: it was started by a different run; changed: "
                f"{'; '.join(changed)}. Delete the folder or give another output to start "
                "over.", changed)
    out.mkdir(parents=True, exist_ok=True)
    if manifest is None or not manifest["complete"]:
        (out / CHUNKS).mkdir(exist_ok=True)
    remove_stale_temporaries(out)
    if (out / CHUNKS).is_dir():
        remove_stale_temporaries(out / CHUNKS)
    if manifest is None:
        manifest = {"complete": False, "chunk_size": chunk_size, "n": n,
                    "fingerprint": dict(fingerprint), "info": dict(info or {}), "fields": None}
        write_manifest(out, manifest)
        manifest = read_manifest(out)
    return manifest


def done_chunks(out: str | os.PathLike) -> set[int]:
    """Indices of the finished chunks of store ``out`` (those whose file exists)."""
    try:
        names = os.listdir(Path(out) / CHUNKS)
    except FileNotFoundError:
        return set()
    return {int(name[:-4]) for name in names
            if name.endswith(".npz") and name[:-4].isdigit() and not name.startswith(".")}


def write_chunk(out: str | os.PathLike, index: int, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write chunk ``index`` (``{field: array with the chunk's rows}``) whole or not at all."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    return write_atomically(chunk_path(out, index), lambda fh: np.savez(fh, **arrays),
                            what="scores chunk")


def _read_chunk(out: Path, index: int) -> dict[str, np.ndarray]:
    path = chunk_path(out, index)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ScoresStoreError(f"{out}: chunk {index} is missing ({path})") from None
    except (ValueError, OSError, EOFError) as exc:
        raise ScoresStoreError(f"{path}: unreadable chunk file ({exc})") from None


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    """The header of a C-order ``.npy`` file of ``shape`` and ``dtype`` (format 1.0, or 2.0
    when the header is too long for 1.0)."""
    import io
    buf = io.BytesIO()
    d = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    try:
        np.lib.format.write_array_header_1_0(buf, d)
    except ValueError:
        buf = io.BytesIO()
        np.lib.format.write_array_header_2_0(buf, d)
    return buf.getvalue()


def finalize(out: str | os.PathLike, n: int) -> dict:
    """Turn the ``ceil(n / chunk_size)`` finished chunks of ``out`` into one ``.npy`` per field
    (N rows), mark the manifest complete, then remove the chunk files; return the manifest.

    Memory: one chunk at a time. Killed midway, the manifest still says incomplete, every
    chunk is still there, and calling this again finishes the job (the ``.npy`` files are
    rewritten whole). A complete store is returned as it is.
    """
    out = Path(out)
    manifest = read_manifest(out)
    if manifest is None:
        raise ScoresStoreError(f"{out}: no scores manifest")
    if manifest["complete"]:
        return manifest
    size = manifest["chunk_size"]
    count = -(-n // size)
    missing = sorted(set(range(count)) - done_chunks(out))
    if missing:
        raise ScoresStoreError(f"{out}: cannot finish: {len(missing)} of {count} chunks are not "
                               f"done (first: {missing[0]})")
    first = _read_chunk(out, 0) if count else {}
    fields = {}
    for name, arr in first.items():
        shape = (n, *arr.shape[1:])
        fields[name] = {"shape": list(shape), "dtype": np.lib.format.dtype_to_descr(arr.dtype)}

        def write(fh, name=name, arr=arr, shape=shape):
            fh.write(_npy_header(shape, arr.dtype))
            for i in range(count):
                part = arr if i == 0 else _read_chunk(out, i)[name]
                rows = min(size, n - i * size)
                if part.shape != (rows, *shape[1:]) or part.dtype != arr.dtype:
                    raise ScoresStoreError(
                        f"{chunk_path(out, i)}: field {name!r} is {part.dtype}{part.shape}, "
                        f"expected {arr.dtype}{(rows, *shape[1:])}")
                fh.write(np.ascontiguousarray(part).tobytes())

        write_atomically(out / f"{name}.npy", write, what=f"scores field {name!r}")
    manifest = {**manifest, "complete": True, "n": n, "fields": fields}
    manifest.pop("format"), manifest.pop("version")
    write_manifest(out, manifest)
    shutil.rmtree(out / CHUNKS, ignore_errors=True)
    return read_manifest(out)


def cleanup_complete(out: str | os.PathLike) -> None:
    """Remove what a run killed after marking ``out`` complete may have left (chunk files,
    temporaries)."""
    out = Path(out)
    shutil.rmtree(out / CHUNKS, ignore_errors=True)
    remove_stale_temporaries(out)


def open_scores(path: str | os.PathLike, *, mmap: bool = True) -> dict[str, np.ndarray]:
    """The arrays of a complete scores store, by field name: ``scores`` (N, *score shape),
    ``delta`` (N, …: Δt = t(x) − t(r)), ``gap`` (Σ scores − Δt per input, float64) and, when
    recorded, ``outputs`` (``fn(params, x)``, the model's outputs).

    ``mmap=True`` (default) maps the files read-only (nothing is read until used; N can exceed
    memory); ``False`` loads them. An incomplete store raises :class:`ScoresStoreError` saying
    how many chunks are done (re-run the same command to finish it).
    """
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None:
        raise ScoresStoreError(f"{path}: not a jaxlift scores store (no {MANIFEST})")
    if not manifest["complete"]:
        n, size = manifest.get("n"), manifest["chunk_size"]
        total = "?" if n is None else -(-n // size)
        raise ScoresStoreError(f"{path}: incomplete: {len(done_chunks(path))} of {total} "
                               "chunks done; run the same command again to finish it")
    return {name: np.load(path / f"{name}.npy", mmap_mode="r" if mmap else None,
                          allow_pickle=False)
            for name in manifest["fields"]}


def leftover_files(out: str | os.PathLike) -> list[Path]:
    """Every file under ``out`` other than a complete store's manifest and field files (what a
    finished run must not leave behind: chunks, temporaries)."""
    out = Path(out)
    manifest = read_manifest(out) or {}
    keep = {MANIFEST} | {f"{k}.npy" for k in (manifest.get("fields") or {})}
    return sorted(p for p in out.rglob("*") if p.relative_to(out).as_posix() not in keep)
