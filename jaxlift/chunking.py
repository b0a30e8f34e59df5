"""How many inputs to put in one compiled chunk (``batch_size="auto"``).

A chunk of ``c`` inputs holds ``c·K`` (input, reference) pairs; each pair carries a difference
and a multiplier for every live intermediate of the program, so its working set is about
``pair_bytes = (1 + T) · Σ_v size(v) · itemsize(v)`` over the live float variables ``v`` of one
example (T = 1, or the number of outputs with ``target="all"``, whose multipliers all coexist).

* On the CPU, a chunk of many small pairs whose working set fits in the caches runs up to twice
  as fast per pair as one big batch (measured in ``benchmarks/bench.py``), so chunks aim at
  ``CPU_CHUNK_BYTES``. Pairs bigger than ``CPU_CHUNK_BYTES / MIN_CACHED_PAIRS`` (a 256×256 image
  CNN) gain nothing from smaller chunks, each of which re-runs the references' forward pass, so
  there the chunk only keeps memory bounded. A run of up to ``ONE_CHUNK_FACTOR`` times
  ``CPU_CHUNK_BYTES`` runs at once: split, it would give chunks of at least half the target
  for an extra dispatch and an extra forward pass of the references (MNIST CNN, 64×8 pairs,
  68 MB: two chunks took 1.13×, one 0.99× the time of the same call inside ``jax.jit``;
  ``benchmarks/bench_dispatch.py``).
* On accelerators, a chunk takes at most a quarter of the device's free memory.

Everything here is a pure function of shapes and the machine; results never depend on the chunk.

The second half cuts the chunks and gathers their results with memory bounded by the output
plus about two chunks (one running, one being read back): NumPy inputs stay on the host and go
to the device a chunk at a time (:func:`host_arrays`, :func:`take_rows`), and each chunk's
result is written into one preallocated host buffer per output leaf (:func:`output_buffer`,
:func:`store_rows`) that becomes the returned jax array without a copy on the CPU
(:func:`as_jax`).
"""
from __future__ import annotations

import functools
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift._memo import memoized
from jaxlift._ops import in_host_memory
from jaxlift.program import Program, signature, structs_of, traced_program
from jaxlift.targets import per_example
from jaxlift.validation import is_concrete

CPU_CHUNK_BYTES = 64 * 2**20
MIN_CACHED_PAIRS = 64  # cache-sized chunks only for pairs that small
MEMORY_FRACTION = 4  # a chunk may use 1/MEMORY_FRACTION of the free host or device memory
ONE_CHUNK_FACTOR = 2  # on the CPU, up to this many CPU_CHUNK_BYTES run as one chunk


def pair_bytes(program: Program, targets: int = 1) -> int:
    """Bytes that one (input, reference) pair keeps: a difference, and a multiplier per explained
    target (``targets`` for ``target="all"``), for every live float value of the program (its
    inputs and each op's outputs)."""
    total = 0
    for i in program.live_values():
        if program.is_float(i):
            aval = program.avals[i]
            total += int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize
    return (1 + targets) * max(total, 1)


def free_memory_bytes(device) -> int:
    """Free memory of ``device``: the allocator's limit minus what is in use on an accelerator,
    the host's available memory on the CPU."""
    stats = None
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 — backends without allocator statistics
        stats = None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def chunk_memory_cap(device=None) -> float:
    """Bytes a chunk's pairs may keep on ``device`` (the default device): a
    ``MEMORY_FRACTION`` of its free memory, as :func:`inputs_per_chunk` allows."""
    return free_memory_bytes(device or jax.devices()[0]) / MEMORY_FRACTION


def inputs_per_chunk(n: int, k: int, pair_nbytes: int, platform: str, free_bytes: int) -> int:
    """Inputs per chunk for N inputs × K references whose pairs keep ``pair_nbytes`` each, on
    ``platform`` ("cpu", "gpu", "tpu") with ``free_bytes`` of memory; balanced so that every chunk
    holds about the same number of inputs (the last one is padded to the same shape)."""
    per_input = max(1, pair_nbytes * k)
    cap = max(1, free_bytes // MEMORY_FRACTION // per_input)
    if (platform == "cpu" and pair_nbytes * MIN_CACHED_PAIRS <= CPU_CHUNK_BYTES
            and n * per_input > ONE_CHUNK_FACTOR * CPU_CHUNK_BYTES):
        cap = min(cap, max(1, CPU_CHUNK_BYTES // per_input))
    if cap >= n:
        return n
    chunks = math.ceil(n / cap)
    return math.ceil(n / chunks)


# ---------------------------------------------------------------------------------------------
# Cutting chunks from the inputs and gathering their results

XLA_CPU_ALIGN = 64  # XLA's CPU client wraps host memory aligned to this without copying


def host_arrays(tree: Any) -> Any:
    """``tree`` with every leaf an array, none copied to a device: jax arrays and tracers as they
    are, anything else (NumPy arrays, lists) as a NumPy array of JAX's canonical dtype (the one
    ``jnp.asarray`` would give; no copy when it already has it)."""
    def leaf(l):
        if isinstance(l, (jax.Array, jax.core.Tracer)):
            return l
        a = np.asarray(l)
        return np.asarray(a, dtype=jax.dtypes.canonicalize_dtype(a.dtype))
    return jax.tree_util.tree_map(leaf, tree)


def take_rows(leaf, start: int, size: int, n: int):
    """Rows ``start … start + size − 1`` of ``leaf`` (leading axis ``n``), the last row repeated
    past ``n`` (a padded last chunk keeps the chunks' shape). A NumPy leaf stays on the host (a
    view unless padded), so only the chunk is transferred when it is used; so does a jax array
    held in the CPU's memory (read in place: cut on the device, each chunk's shape compiled a
    gather and its index arithmetic, six small programs, 0.1 s on the MNIST CNN's first
    chunked call); other jax arrays and tracers are gathered on their device."""
    if isinstance(leaf, jax.Array) and in_host_memory(leaf) and len(leaf.devices()) == 1:
        leaf = np.asarray(leaf)  # (an array sharded over devices keeps its placement)
    if isinstance(leaf, np.ndarray) and start + size <= n:
        return leaf[start:start + size]
    return leaf[np.minimum(np.arange(start, start + size), n - 1)]


def aligned_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """An uninitialised C-contiguous NumPy array whose data starts at a multiple of
    ``XLA_CPU_ALIGN`` bytes, so that ``jax.device_put`` wraps it on the CPU without a copy."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    raw = np.empty(nbytes + XLA_CPU_ALIGN, np.uint8)
    skip = -raw.ctypes.data % XLA_CPU_ALIGN
    return raw[skip:skip + nbytes].view(dtype).reshape(shape)


def output_buffer(chunk_leaf, n: int):
    """Room for ``n`` rows shaped like the rows of ``chunk_leaf`` (one chunk's result): an
    aligned host array, or, inside a trace (``attribute`` under the user's ``jit``), zeros
    filled functionally by :func:`store_rows`."""
    shape = (n, *chunk_leaf.shape[1:])
    if isinstance(chunk_leaf, jax.core.Tracer):
        return jnp.zeros(shape, chunk_leaf.dtype)
    return aligned_empty(shape, chunk_leaf.dtype)


def store_rows(buf, start: int, chunk_leaf, rows: int):
    """``buf`` with the first ``rows`` rows of ``chunk_leaf`` written at ``start``: in place for
    a host buffer (waiting for the chunk; on the CPU its result is read without a copy), as a
    functional update inside a trace."""
    if isinstance(buf, np.ndarray):
        buf[start:start + rows] = np.asarray(chunk_leaf)[:rows]
        return buf
    return buf.at[start:start + rows].set(chunk_leaf[:rows])


def as_jax(buf) -> jax.Array:
    """A filled buffer as a jax array: a host buffer moves to the default device (on the CPU
    the array wraps the aligned buffer, no copy); a traced one is returned as it is."""
    return jax.device_put(buf) if isinstance(buf, np.ndarray) else buf


# -----------------------------------------------------------------------------------------
# Planning chunks of a call and running them

@functools.lru_cache(maxsize=64)
def fn_pair_bytes(fn, target, params_key, x_key) -> int:
    """:func:`pair_bytes` of ``fn``'s program for ``target`` (one trace, shared with the rest
    of the call: :func:`jaxlift.program.traced_program`)."""
    program, _ = traced_program(per_example(fn, target), structs_of(params_key),
                                structs_of(x_key))
    out = program.outputs[0]
    all_targets = isinstance(target, str) and target == "all" and isinstance(out, int)
    targets = math.prod(program.avals[out].shape) if all_targets else 1
    return pair_bytes(program, targets)


def plan_chunk(batch_size, fn, target, params, x, n: int, k: int, mesh,
               rows_per_pair: int = 1, shapes: tuple | None = None) -> int:
    """Inputs per compiled chunk: ``batch_size`` pairs, everything (``None``), or sized from
    memory (``"auto"``, see :mod:`jaxlift.chunking`; a pair that runs ``fn`` on
    ``rows_per_pair`` points, like integrated gradients' steps, counts as that many pairs).
    Traced inputs (``attribute`` inside ``jit``/``vmap``/``grad``) run as one chunk: a Python
    loop would unroll into the trace. The ``"auto"`` plan is cached per (fn, target, shapes,
    N, K, devices): the free memory it reads is the one at the first call for those shapes.
    ``shapes`` is ``(signature(params), signature(x, drop_leading=True))`` if the caller has it."""
    if batch_size is None:
        return n
    if not (isinstance(batch_size, str) and batch_size == "auto"):
        return min(n, max(1, int(batch_size) // k))
    if shapes is None:
        if not is_concrete((params, x)):
            return n  # traced inputs: one chunk (a Python loop would unroll into the trace)
        shapes = signature(params), signature(x, drop_leading=True)
    devices = tuple(mesh.devices.flat) if mesh is not None else (jax.devices()[0],)
    return memoized(chunk_plan, fn, target, shapes, n, k, rows_per_pair, devices,
                    (CPU_CHUNK_BYTES, MIN_CACHED_PAIRS, MEMORY_FRACTION, ONE_CHUNK_FACTOR))


@functools.lru_cache(maxsize=256)
def chunk_plan(fn, target, shapes, n: int, k: int, rows_per_pair: int, devices,
                constants) -> int:
    """:func:`plan_chunk` for ``"auto"``; ``constants`` (the tunables above) are in the key so
    that changing them re-plans."""
    params_key, x_key = shapes
    nbytes = memoized(fn_pair_bytes, fn, target, params_key, x_key)
    per_device = inputs_per_chunk(
        math.ceil(n / len(devices)), k * rows_per_pair, nbytes, devices[0].platform,
        free_memory_bytes(devices[0]))
    return min(n, per_device * len(devices))


# the (rows, references) each one-chunk program has run with, per program and shapes other than
# N and K: a cache of what XLA has compiled, read by one_chunk_rows (bounded like the program
# caches it mirrors)
_ROWS_RUN: dict = {}
_ROWS_RUN_MAX = 512
PADDED_RUNS = 4  # an (N, K) run padded this many times gets its own program next
MAX_PIECES = 8  # more inputs than a program has run with: at most this many runs of it


def references_key(refs, per_input: bool) -> tuple:
    """The key of ``refs``' structure, shapes and dtypes without their N (per-input
    references) and K axes: what a program compiled for other numbers of inputs and references
    shares with this call (:func:`one_chunk_rows`' ``program_key``)."""
    leaves, treedef = jax.tree_util.tree_flatten(refs)
    drop = 2 if per_input else 1
    return treedef, tuple((tuple(np.shape(l))[drop:],
                           str(l.dtype if hasattr(l, "dtype") else np.result_type(l)))
                          for l in leaves)


def one_chunk_rows(batch_size, fn, target, n: int, k: int, shapes: tuple | None, mesh,
                   rows_per_pair: int | None = 1, program_key=None,
                   memory_cap: float | None = None, tile_refs: bool = False
                   ) -> tuple[int, int]:
    """``(rows, references)`` to run a one-chunk call of ``n`` inputs and ``k`` references
    with: ``(n, k)``, or a size whose program has already been compiled where that saves
    compiling one for ``(n, k)`` — more rows, or fewer: then the inputs run in pieces of
    ``rows`` (at most ``MAX_PIECES``, the last padded).

    A new N or K is a new shape, and a new shape compiles the whole program again (0.4 s on
    the MNIST CNN, seconds on a transformer), while the pairs of a few more inputs (their
    working set at most ``CPU_CHUNK_BYTES``) take milliseconds to tens of milliseconds.
    ``program_key`` names the compiled program and every shape but N and K. A size the program
    has not run with runs padded (:func:`padded`) to the size it has run with that computes the
    fewest pairs, if the extra pairs keep at most ``CPU_CHUNK_BYTES`` and a run's pairs at most
    ``memory_cap`` (default :func:`chunk_memory_cap`): more rows, or pieces of fewer (20 inputs
    after 16: two runs of 16), the last input repeated, its copies' results dropped; and, with
    ``tile_refs`` (methods whose pairs are computed apart and averaged over references:
    DeepLIFT), a multiple of ``k`` references, the ``k`` repeated in turn, so that the average
    over them is the average over the ``k`` (to rounding) and every pair past them repeats one
    of them. Explaining 16 inputs against 4 references, then 13 against 4, 1 against 4, 16
    against 1 or 20 against 4, compiles once. Otherwise ``(n, k)`` runs as it is (one compile,
    as always). A size that comes back after ``PADDED_RUNS`` padded runs is a steady workload
    and gets its own program then (the one compile it would have had at once), so a fixed size
    never pays for padding for long. Under ``batch_size="auto"`` only, and not for traced
    inputs (inside a caller's ``jit``: ``shapes`` is ``None``), a mesh, or a method that cannot
    say how many forward passes a pair makes (``rows_per_pair=None``)."""
    if (not (isinstance(batch_size, str) and batch_size == "auto") or shapes is None
            or mesh is not None or rows_per_pair is None or program_key is None):
        return n, k
    try:
        state = _ROWS_RUN.get(program_key)
    except TypeError:  # an unhashable part: no bookkeeping, every size as it is
        return n, k
    if state is None:
        if len(_ROWS_RUN) >= _ROWS_RUN_MAX:
            _ROWS_RUN.clear()
        state = _ROWS_RUN[program_key] = (set(), {})  # sizes compiled; size → padded runs
    compiled, padded_runs = state
    size = (n, k)
    if size not in compiled and padded_runs.get(size, 0) < PADDED_RUNS:
        # (pairs computed, pieces, rows, references) of each compiled size that can serve
        options = [(-(-n // r) * r * kk, -(-n // r), r, kk) for r, kk in compiled
                   if (kk == k or (tile_refs and kk % k == 0)) and -(-n // r) <= MAX_PIECES]
        if options:
            params_key, x_key = shapes
            nbytes = memoized(fn_pair_bytes, fn, target, params_key, x_key) * rows_per_pair
            pairs, _, r, kk = min(options)  # the fewest pairs, then the fewest pieces
            cap = chunk_memory_cap() if memory_cap is None else memory_cap
            if (pairs - n * k) * nbytes <= CPU_CHUNK_BYTES and r * kk * nbytes <= cap:
                size = (r, kk)
    if size == (n, k):
        compiled.add(size)
    else:
        padded_runs[(n, k)] = padded_runs.get((n, k), 0) + 1
    return size


def padded(run, rows: int, per_input: bool, k: int = 1, refs_to: int | None = None,
           averaged: bool = True):
    """``run(params, x, refs, start) -> (scores, Δt, checks)`` on inputs (and per-input
    references) padded on the host to ``rows`` by repeating their last row and, for
    ``refs_to``, on the ``k`` references repeated in turn up to ``refs_to`` (a multiple of
    ``k``: ``r0, r1, r0, r1`` for two references to four). The scores and ``Δt`` are cut back
    to the inputs' rows (into aligned host buffers, as chunks are gathered) and, not
    ``averaged`` over references, to the ``k`` references; the checks to the ``k`` references
    (every pair past them repeats one of theirs) but not to the rows (a padded pair repeats the
    last input's; the certificate's summary leaves them out)."""
    def pad(leaf):
        n = leaf.shape[0]
        return np.asarray(leaf)[np.minimum(np.arange(rows), n - 1)]

    def tile(leaf, axis):
        return np.take(np.asarray(leaf), np.arange(refs_to) % k, axis=axis)

    tiled = refs_to is not None and refs_to != k

    def padded_run(params, x, refs, start):
        n = jax.tree_util.tree_leaves(x)[0].shape[0]
        refs_in = refs
        if tiled:
            refs_in = jax.tree_util.tree_map(lambda l: tile(l, 1 if per_input else 0), refs)
        res, delta, checks = run(params, jax.tree_util.tree_map(pad, x),
                                 jax.tree_util.tree_map(pad, refs_in) if per_input else refs_in,
                                 start)

        def cut(leaf, refs_axis: bool):
            if refs_axis and tiled:
                leaf = np.asarray(leaf)[:, :k]
            return as_jax(store_rows(output_buffer(leaf, n), 0, leaf, n))
        res, delta = jax.tree_util.tree_map(lambda l: cut(l, not averaged), (res, delta))
        if tiled and np.size(checks["gap"]):
            checks = {**checks, **{name: np.asarray(checks[name])[:, :k]
                                   for name in ("gap", "bound")}}
        return res, delta, checks
    return padded_run


def sharded(run, mesh, per_input: bool):
    """``run`` with the inputs (and per-input references) split over every device of ``mesh``
    along their leading axis N, and parameters and shared references replicated: each device
    explains its share of the N × K pairs; XLA's SPMD partitioner does the rest. With
    ``jax.distributed`` initialised, a mesh over all hosts' devices works the same way."""
    from jax.sharding import NamedSharding, PartitionSpec

    split = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))
    replicated = NamedSharding(mesh, PartitionSpec())

    def put(tree, sharding):
        return jax.tree_util.tree_map(lambda l: jax.device_put(l, sharding), tree)

    def sharded_run(params, x, refs, start, *more):
        return run(put(params, replicated), put(x, split),
                   put(refs, split if per_input else replicated), start, *more)
    return sharded_run


PROGRESS_DELAY_S = 2.0


def progress_bar(items, total: int, progress: bool | None):
    """``items`` wrapped in a tqdm bar over chunks: always for ``progress=True``; for ``None``
    (the default) only on a terminal and once the run has taken ``PROGRESS_DELAY_S``, so long
    runs show their progress and short ones, logs and tests stay quiet."""
    from tqdm.auto import tqdm
    quiet_unless_long = {"disable": None, "delay": PROGRESS_DELAY_S} if progress is None else {}
    return tqdm(items, total=total, desc="jaxlift", unit="chunk", **quiet_unless_long)


def run_chunked(run, params, x, refs, n, chunk, per_input, progress):
    """Run ``run`` on chunks of ``chunk`` inputs (the last padded to the same shape, so one
    compilation serves all) and gather the results, Δ included, in one buffer per leaf.

    NumPy inputs (and per-input references) are cut on the host, so a chunk at a time goes to
    the device; each chunk's result is written into a preallocated host buffer while the next
    chunk runs. Memory beyond the inputs is the output plus about two chunks' working sets,
    whatever N. Returns jax arrays (on the CPU they wrap the host buffers without a copy).
    """
    starts = range(0, n, chunk)
    if progress is not False:
        starts = progress_bar(starts, math.ceil(n / chunk), progress)
    bufs, pending = None, None
    for s in starts:
        xc = jax.tree_util.tree_map(lambda l, s=s: take_rows(l, s, chunk, n), x)
        rc = (jax.tree_util.tree_map(lambda l, s=s: take_rows(l, s, chunk, n), refs)
              if per_input else refs)
        out = run(params, xc, rc, s)  # dispatched before the previous chunk is read back
        if pending is not None:
            bufs = store_chunk(bufs, *pending, n, chunk)
        pending = s, out
    bufs = store_chunk(bufs, *pending, n, chunk)
    return jax.tree_util.tree_map(as_jax, bufs)


def store_chunk(bufs, start: int, out, n: int, chunk: int):
    """``bufs`` (allocated at the first chunk, shaped like ``out`` with N rows) holding the
    rows of ``out``, one chunk's result, at ``start`` (padding rows dropped)."""
    if bufs is None:
        bufs = jax.tree_util.tree_map(lambda l: output_buffer(l, n), out)
    rows = min(chunk, n - start)
    return jax.tree_util.tree_map(lambda b, l: store_rows(b, start, l, rows), bufs, out)
