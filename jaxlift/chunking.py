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

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift.program import Program

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
    view unless padded), so only the chunk is transferred when it is used; jax arrays and tracers
    are gathered on their device."""
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
