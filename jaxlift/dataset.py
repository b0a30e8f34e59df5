"""Data-set scale: attribution streamed from disk to disk, resumable, over several processes.

:func:`attribute_dataset` reads the inputs a chunk of ``chunk_size`` rows at a time
(:mod:`jaxlift.io.sources`), runs :func:`jaxlift.attribute` on each chunk (all chunks have the
same shape, the last one padded with copies of its last row, so one compilation serves the
whole run) and writes each chunk's results to a scores store (:mod:`jaxlift.io.scores_store`)
as soon as it is done. Memory is a few chunks (one being read, one computed, one written),
whatever N.

Per input ``i`` the store holds

* ``scores[i]``: what ``attribute(..., return_delta=True)`` returns for it (averaged over the K
  references unless ``average_refs=False``),
* ``delta[i]``: ``Δt = t(x_i) − t(r)`` (averaged the same way),
* ``gap[i]``: ``Σ scores[i] − delta[i]`` (float64; the completeness gap, ~0 for exact modes),
* ``outputs[i]``: ``fn(params, x_i)``, the model's outputs (its predictions), when ``fn``
  returns one array.

**Resuming.** A finished chunk is a file; re-running the same call after any interruption,
``kill -9`` included, computes only the missing chunks, and the finished store is byte for byte
the one an uninterrupted run writes. The store records a fingerprint of the run: ``fn``'s
program (``jax.make_jaxpr`` text and constants, at one example), the parameters, the
references, the options and the inputs' shape, dtype and first chunk. A call whose fingerprint
differs refuses to resume (:class:`~jaxlift.io.scores_store.FingerprintMismatchError` naming
what changed).

**Several processes.** After ``jax.distributed.initialize(...)``, process ``p`` of ``P``
computes the chunks ``i`` with ``i % P == p`` and writes them into the same store (a folder on
a file system all processes see); after a barrier process 0 assembles the final arrays. The
result equals the one-process run.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from jaxlift._lazy import renamed_attributes
from jaxlift.errors import InputTypeError, InputValueError
from jaxlift.io import scores_store
from jaxlift.io.scores_store import open_scores
from jaxlift.io.sources import Source, SourceError, as_source
from jaxlift.targets import PerInputTarget, normalize_target

DEFAULT_CHUNK = 1024
SAMPLE_ROWS = 16
"""The inputs' fingerprint covers their count, shape, dtype and the bytes of this many first
rows (hashing all N would read the whole data set before the first chunk)."""
_RESERVED = ("x", "refs", "return_delta", "progress", "key", "mesh")


def _sha(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def _array_bytes(a: Any) -> bytes:
    a = np.ascontiguousarray(np.asarray(a))
    return f"{a.dtype.str}{a.shape}".encode() + a.tobytes()


def tree_digest(tree: Any) -> str:
    """SHA-256 of a pytree of arrays: its structure, and each leaf's dtype, shape and bytes."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return _sha(str(treedef).encode(), *(_array_bytes(l) for l in leaves))


_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def program_digest(fn: Callable, params: Any, example: np.ndarray) -> tuple[str, str]:
    """``(digest, summary)`` of ``fn``'s program at one example: the text of
    ``jax.make_jaxpr(fn)(params, example[None])`` (object addresses removed) and the bytes of
    its constants. Equal programs with equal closed-over arrays have equal digests."""
    closed = jax.make_jaxpr(fn)(params, example[None])
    text = _ADDRESS.sub("", str(closed.jaxpr))
    summary = f"{len(closed.jaxpr.eqns)} equations, {len(closed.consts)} constants"
    return _sha(text.encode(), *(_array_bytes(c) for c in closed.consts)), summary


def _option_text(name: str, value: Any, fn: Callable, params: Any, example: np.ndarray) -> str:
    """A stable text for one option: a callable target by its program on ``fn``'s output at
    one example, anything else by its ``repr`` (object addresses removed)."""
    if name == "target":
        _, classes = normalize_target(value)
        if classes is not None:  # one class (pair) per input: its bytes, not its repr
            parts = [classes.a.tobytes()] + ([] if classes.b is None else [classes.b.tobytes()])
            return f"per-input target of {len(classes.a)} classes, sha256 {_sha(*parts)}"
    if callable(value) and name == "target":
        out = jax.eval_shape(fn, params, example[None])
        closed = jax.make_jaxpr(lambda o: value(o))(
            jax.ShapeDtypeStruct(out.shape[1:], out.dtype))
        return "callable target: " + _ADDRESS.sub("", str(closed))
    return _ADDRESS.sub("", repr(value))


def fingerprint(fn: Callable, params: Any, first: np.ndarray, source: Source, refs: Any,
                refs_source: Source | None, options: dict) -> dict:
    """The fingerprint of a run, ``{component: {"digest", "summary"}}`` for ``program``,
    ``params``, ``references``, ``inputs`` and ``options`` (see the module docstring);
    ``first``: the first ``SAMPLE_ROWS`` inputs (fewer if N is smaller)."""
    example = first[0]
    prog, prog_summary = program_digest(fn, params, example)
    n_params = sum(int(np.size(l)) for l in jax.tree_util.tree_leaves(params))
    if refs_source is None:
        r = np.asarray(refs)
        refs_fp = {"digest": _sha(_array_bytes(r)),
                   "summary": f"{r.dtype}{r.shape} shared references, sha256 "
                              f"{_sha(_array_bytes(r))[:12]}"}
    else:
        r0 = next(iter(refs_source.chunks(SAMPLE_ROWS)))[1]
        refs_fp = {"digest": _sha(repr((refs_source.n, refs_source.row_shape,
                                        refs_source.dtype.str)).encode(), _array_bytes(r0)),
                   "summary": f"{refs_source.n} × {refs_source.dtype}{refs_source.row_shape} "
                              "per-input references"}
    opts = {k: _option_text(k, v, fn, params, example) for k, v in sorted(options.items())}
    opts_text = json.dumps(opts, sort_keys=True)
    return {
        "program": {"digest": prog, "summary": prog_summary},
        "params": {"digest": tree_digest(params),
                   "summary": f"{n_params} parameters, sha256 {tree_digest(params)[:12]}"},
        "references": refs_fp,
        "inputs": {"digest": _sha(repr((source.n, source.row_shape, source.dtype.str)).encode(),
                                  _array_bytes(first)),
                   "summary": f"{source.n if source.n is not None else '?'} × "
                              f"{source.dtype}{source.row_shape}, first rows "
                              f"{_sha(_array_bytes(first))[:12]}"},
        "options": {"digest": _sha(opts_text.encode()), "summary": opts_text},
    }


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """``rows`` with copies of its last row appended up to ``size`` rows."""
    if len(rows) == size:
        return rows
    return np.concatenate([rows, np.repeat(rows[-1:], size - len(rows), axis=0)])


def float64_gap(scores: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``Σ scores − delta`` over the axes of ``scores`` after ``delta``'s, in float64 on the
    host: :func:`jaxlift.completeness_gap` for one NumPy array of scores, as the store's
    ``gap`` column keeps it."""
    lead = delta.ndim
    total = scores.reshape(*scores.shape[:lead], -1).sum(axis=-1, dtype=np.float64)
    return total - delta.astype(np.float64)


def _barrier(name: str) -> None:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def attribute_dataset(fn: Callable, params: Any, source: Any, refs: Any, *, out: str | os.PathLike,
                      chunk_size: int = DEFAULT_CHUNK, outputs: bool = True,
                      image_size: tuple[int, int] | None = None, grayscale: bool = False,
                      process_index: int | None = None, process_count: int | None = None,
                      progress: bool | None = None, quiet: bool = False,
                      **attribute_options: Any) -> Path:
    """Attribute every input of a data set, chunk by chunk, into the scores store ``out``.

    Args:
      fn, params: as for :func:`jaxlift.attribute` (``fn(params, xb)`` on a batch).
      source: the inputs, ``(N, *S)`` rows: a path (``.npy``; ``.npz`` or ``x.npz:KEY``; ``.h5``
        or ``x.h5:DATASET``; a folder of images with ``image_size=(H, W)`` and ``grayscale``),
        an array-like (NumPy, memmap, ``h5py.Dataset``), a :class:`jaxlift.io.sources.Source`,
        or an iterable of batches (a list, or a callable returning a fresh iterator).
      refs: references ``(K, *S)`` shared by all inputs, or per-input references ``(N, K, *S)``
        given like ``source`` (a path, an array, …), read chunk by chunk alongside the inputs.
      out: the store folder (new, or one this same run started: it resumes).
      chunk_size: inputs per chunk (each chunk is one :func:`jaxlift.attribute` call and one
        file; its pairs are further split by ``batch_size``); at most N.
      outputs: also store ``fn(params, x)`` per input (when ``fn`` returns one array).
      process_index, process_count: this process's share (chunks ``i`` with
        ``i % process_count == process_index``); default ``jax.process_index()`` and
        ``jax.process_count()`` (1 process unless ``jax.distributed`` is initialized).
      progress: one bar for the whole data set (pairs/s, ETA): ``None`` on a terminal only,
        ``True`` always, ``False`` never.
      quiet: no final throughput line on stderr.
      **attribute_options: passed to :func:`jaxlift.attribute` (``target``, ``mode``,
        ``average_refs``, ``batch_size``, ``layer``, ``mode_options`` …); part of the
        fingerprint.

    Returns:
      ``Path(out)``; read it with :func:`jaxlift.open_scores` (a dict of memory-mapped arrays
      ``scores``, ``delta``, ``gap``, ``outputs``). With several processes every process
      returns once process 0 has assembled the store.
    """
    from jaxlift.api import attribute  # the public face: dataset sits above it

    bad = sorted(set(attribute_options) & set(_RESERVED))
    if bad:
        raise InputTypeError(f"attribute_dataset: {', '.join(bad)} cannot be passed "
                             "(the inputs are `source`; deltas are always stored)")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputValueError(f"chunk_size={chunk_size!r}: give a positive number of inputs")
    if callable(refs) and not isinstance(refs, (str, os.PathLike)):
        raise InputValueError("attribute_dataset: refs must be an array (K, *S) or a data set of "
                              "per-input references (N, K, *S), not a callable (its draws would not "
                              "be reproducible when a run resumes)")
    rank = jax.process_index() if process_index is None else int(process_index)
    procs = jax.process_count() if process_count is None else int(process_count)
    if not 0 <= rank < procs:
        raise InputValueError(f"process_index={rank} is not in [0, process_count={procs})")
    src = as_source(source, image_size=image_size, grayscale=grayscale)
    if src.n == 0:
        raise InputValueError(f"{src.name}: no inputs")
    if src.n is not None:
        chunk_size = min(chunk_size, src.n)  # no padding a small data set up to a big chunk
    shared_refs, refs_src = _references(refs, src)
    first = next(iter(src.chunks(SAMPLE_ROWS)))[1]
    fp = fingerprint(fn, params, first, src, shared_refs, refs_src, attribute_options)
    del first
    info = {"source": src.name, "options": fp["options"]["summary"],
            "references": fp["references"]["summary"]}
    manifest = scores_store.open_store(out, fp, chunk_size=chunk_size, n=src.n, info=info)
    out = Path(out)
    if manifest["complete"]:
        scores_store.cleanup_complete(out)
        if not quiet and rank == 0:
            print(f"jaxlift: {out} is already complete", file=sys.stderr)
        return out
    k = (refs_src.row_shape[0] if refs_src is not None else shared_refs.shape[0])
    done = scores_store.done_chunks(out)
    mine = lambda i: i % procs == rank and i not in done  # noqa: E731
    run = _ChunkRunner(attribute, fn, params, shared_refs, attribute_options,
                       chunk_size, outputs)
    t0 = time.perf_counter()
    n_new = _stream(src, refs_src, run, out, chunk_size, mine, k, done, rank, procs, progress)
    n = src.n  # known now, also for an iterable
    seconds = time.perf_counter() - t0
    if procs > 1:
        _barrier(f"jaxlift-dataset-chunks-{fp['program']['digest'][:12]}")
    if rank == 0:
        scores_store.finalize(out, n)
    if procs > 1:
        _barrier(f"jaxlift-dataset-final-{fp['program']['digest'][:12]}")
    if not quiet:
        rate = n_new * k / seconds if seconds > 0 else float("inf")
        who = f" (process {rank} of {procs})" if procs > 1 else ""
        print(f"jaxlift: {n_new} inputs × {k} references = {n_new * k} pairs in {seconds:.1f} s: "
              f"{rate:,.0f} pairs/s{who}; {len(done)} chunks were already done; "
              f"scores in {out}", file=sys.stderr)
    return out


def _references(refs: Any, src: Source) -> tuple[np.ndarray | None, Source | None]:
    """``(shared, None)`` for references ``(K, *S)`` shared by all inputs (an array, or a small
    file read whole), ``(None, source)`` for per-input references ``(N, K, *S)``."""
    rows = src.row_shape
    if isinstance(refs, (str, os.PathLike, Source)) or (
            hasattr(refs, "shape") and len(refs.shape) == len(rows) + 2):
        rsrc = as_source(refs)
        if rsrc.row_shape == rows and rsrc.n is not None:
            return rsrc.read(0, rsrc.n), None
        if len(rsrc.row_shape) != len(rows) + 1 or rsrc.row_shape[1:] != rows:
            raise InputValueError(f"references {rsrc.name} of rows {rsrc.row_shape}: expected "
                                  f"(K, *{rows}) shared or (N, K, *{rows}) per-input references")
        if rsrc.n is not None and src.n is not None and rsrc.n != src.n:
            raise InputValueError(f"per-input references {rsrc.name}: {rsrc.n} rows for "
                                  f"{src.n} inputs")
        return None, rsrc
    shared = np.asarray(refs)
    if shared.ndim != len(rows) + 1 or shared.shape[1:] != rows:
        raise InputValueError(f"refs of shape {shared.shape}: expected (K, *{rows}) shared "
                              f"references or (N, K, *{rows}) per input, like the inputs {src.name}")
    return shared, None


class _ChunkRunner:
    """One chunk's arrays: ``attribute`` on the padded chunk, then the rows kept."""

    def __init__(self, attribute, fn, params, shared_refs, options, size, outputs):
        self.attribute, self.fn, self.params = attribute, fn, params
        self.shared_refs, self.options, self.size = shared_refs, options, size
        self.forward = jax.jit(fn) if outputs else None

    def __call__(self, rows: np.ndarray, refs_rows: np.ndarray | None,
                 index: int = 0) -> dict[str, np.ndarray]:
        m = len(rows)
        x = _padded(rows, self.size)
        r = self.shared_refs if refs_rows is None else _padded(refs_rows, self.size)
        options = dict(self.options)
        _, classes = normalize_target(options.get("target"))
        if classes is not None:  # this chunk's rows of a per-input target
            start = index * self.size
            cut = lambda v: None if v is None else _padded(v[start:start + m], self.size)  # noqa: E731
            if start + m > len(classes.a):
                raise InputValueError(f"target gives {len(classes.a)} classes for more inputs than "
                                      "that: give one per input of the data set")
            options["target"] = PerInputTarget(cut(classes.a), cut(classes.b))
        scores, delta = self.attribute(self.fn, self.params, x, r, return_delta=True,
                                       progress=False, **options)
        if not isinstance(scores, jax.Array | np.ndarray):
            raise InputValueError("attribute_dataset reads one input array: the scores came back as "
                                  f"a {type(scores).__name__}")
        scores, delta = np.asarray(scores)[:m], np.asarray(delta)[:m]
        arrays = {"scores": scores, "delta": delta, "gap": float64_gap(scores, delta)}
        if self.forward is not None:
            o = self.forward(self.params, x)
            if isinstance(o, jax.Array):
                arrays["outputs"] = np.asarray(o)[:m]
            else:
                self.forward = None
        return arrays


def _stream(src, refs_src, run, out, size, mine, k, done, rank, procs, progress) -> int:
    """Compute and write this process's missing chunks; return how many inputs it computed.

    Reading the next chunk and writing the previous one run on two threads while the current
    one is computed."""
    from tqdm.auto import tqdm
    total = None if src.n is None else src.n * k
    share = (lambda i: i % procs == rank)  # noqa: E731
    initial = sum(min(size, src.n - i * size) for i in done if share(i)) * k \
        if src.n is not None else 0
    if src.n is not None:
        total = sum(min(size, src.n - i * size) for i in range(-(-src.n // size))
                    if share(i)) * k
    bar = tqdm(total=total, initial=initial, unit="pair", unit_scale=True, smoothing=0.1,
               desc="jaxlift" + (f" [{rank}/{procs}]" if procs > 1 else ""),
               disable=None if progress is None else not progress, dynamic_ncols=True)
    chunks = src.chunks(size, mine)
    ref_chunks = refs_src.chunks(size, mine) if refs_src is not None else None

    def read_next():
        for i, rows in chunks:
            r = next(ref_chunks)[1] if ref_chunks is not None else None
            if rows is not None:
                return i, rows, r
        return None

    n_new = 0
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
        nxt: Future = reader.submit(read_next)
        pending: list[Future] = []
        try:
            while True:
                item = nxt.result()
                if item is None:
                    break
                nxt = reader.submit(read_next)
                i, rows, r = item
                arrays = run(rows, r, i)
                while len(pending) >= 2:
                    pending.pop(0).result()
                pending.append(writer.submit(scores_store.write_chunk, out, i, arrays))
                n_new += len(rows)
                bar.update(len(rows) * k)
            for f in pending:
                f.result()
        finally:
            bar.close()
    return n_new


__all__ = ["attribute_dataset", "open_scores", "float64_gap", "fingerprint", "SourceError"]

# renamed (issue 27): jaxlift.completeness_gap (jaxlift.gaps) is the public, JAX one
__getattr__ = renamed_attributes(__name__, globals(), {"completeness_gap": "float64_gap"})
