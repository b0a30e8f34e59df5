"""Array helpers that keep jaxlift's programs on XLA's fast paths."""
from __future__ import annotations

import contextlib
import functools
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np


def mean_axis(a: jax.Array, axis: int, contraction: bool = True) -> jax.Array:
    """``a.mean(axis)`` (``Σ_k a[…, k, …]/K``, K = ``a.shape[axis]``), computed for
    float32/float64 ``a`` as a contraction with the weights ``1/K`` where ``contraction``.

    With XLA's defaults, XLA:CPU (jaxlib 0.10) hands a ``reduce`` to its YNNPACK library,
    which runs one over a middle axis of an array like ``(N, K, 28, 28, 1)`` some 25× slower
    than the same sum as a ``dot_general`` (averaging the MNIST scores over 8 references took
    a quarter of the whole attribution). jaxlift's own programs keep reductions in XLA
    (:mod:`jaxlift._compiler`), where the plain mean fuses the work that produces ``a`` and is
    the faster by 3–16× and needs no temporary (the contraction first copies ``a`` transposed,
    as large as ``a``): they pass ``contraction=False``. Either gives the same numbers up to
    float rounding.
    """
    if not contraction or a.dtype not in (jnp.float32, jnp.float64):  # half: accumulate wide
        return a.mean(axis=axis)
    axis = axis % a.ndim
    k = a.shape[axis]
    weights = jnp.full((k,), 1.0 / k, dtype=a.dtype)
    return jnp.tensordot(a, weights, axes=((axis,), (0,)))


def in_host_memory(leaf) -> bool:
    """Whether NumPy reads ``leaf`` in the host's memory: anything but a tracer, or a jax array
    held (even in part) on an accelerator or by another process. Such a leaf is cut, summed or
    tested on the host, where the same on a jax array eagerly would compile a small program per
    shape."""
    if isinstance(leaf, jax.core.Tracer):
        return False
    if isinstance(leaf, jax.Array):
        return leaf.is_fully_addressable and all(d.platform == "cpu" for d in leaf.devices())
    return True


SUM_WINDOW = 32  # XLA:CPU's tree-reduction window: a reduction over at most this many fuses


def sum_in_windows(a: jax.Array) -> jax.Array:
    """``Σ a`` over every element, as two reductions kept apart by an optimization barrier:
    first over windows of ``SUM_WINDOW`` consecutive elements (zero-padded), then over the
    windows' sums — the pairwise order XLA:CPU's tree-reduction rewrite gives a long sum.

    That rewrite turns a reduction over more than ``SUM_WINDOW`` elements into a
    ``reduce-window``, which reads its operand from memory, so the elementwise work feeding
    every such per-pair sum (``ΣC``, ``Σ|C|``, ``Σ|m|·(|v| + |v0|)``) was written out first:
    one temporary of N × K × features per sum, five on a dense layer's chunk (34 MB of a
    200 × 8 × 1024 chunk's working set). Over ``SUM_WINDOW`` elements no rewrite applies, so
    the first reduction fuses its producers; the barrier keeps XLA from merging the two back
    into the one long reduction. Shapes: any ``a`` → a scalar (per example under ``vmap``)."""
    flat = jnp.reshape(a, (-1,))
    if flat.shape[0] <= SUM_WINDOW:
        return jnp.sum(flat)
    return jnp.sum(jax.lax.optimization_barrier(window_sums(flat)))


def window_sums(a: jax.Array) -> jax.Array:
    """The first of :func:`sum_in_windows`'s two reductions: ``a`` flattened, zero-padded to
    whole windows of ``SUM_WINDOW`` elements and summed per window (one window where ``a`` has
    no more elements). Shapes: any ``a`` → ``(⌈size/SUM_WINDOW⌉,)``."""
    flat = jnp.reshape(a, (-1,))
    if flat.shape[0] <= SUM_WINDOW:
        return jnp.sum(flat, keepdims=True)
    pad = -flat.shape[0] % SUM_WINDOW
    if pad:
        flat = jnp.pad(flat, (0, pad))
    return jnp.sum(jnp.reshape(flat, (-1, SUM_WINDOW)), axis=1)


def all_finite(*arrays) -> jax.Array:
    """Whether no float or complex array of ``arrays`` holds a NaN or an Inf (integer, boolean
    and key arrays always pass), one bool: ``Σ a·0`` is 0 for finite values and NaN as soon as
    one is not (:func:`_window_partials`, summed)."""
    joined = _window_partials(arrays)
    return (jnp.asarray(True) if joined is None
            else jnp.isfinite(jnp.sum(jax.lax.optimization_barrier(joined))))


def finite_sums(*arrays) -> jax.Array | None:
    """A short vector that is all finite iff no float or complex array of ``arrays`` holds a
    NaN or an Inf (``None`` when none is float): :func:`_window_partials` summed once more over
    windows, where summing them to one bool in the program took three kernels more (XLA:CPU's
    rewrite of a long sum into a window and a rest, then the test): the host tests the
    ``⌈windows/32⌉`` sums instead (docs/design.md §20.11)."""
    joined = _window_partials(arrays)
    return None if joined is None else window_sums(jax.lax.optimization_barrier(joined))


def _window_partials(arrays) -> jax.Array | None:
    """Each float or complex array's ``a·0`` summed over windows (:func:`window_sums`: a
    reduction fused with the work producing ``a``, no temporary of it), all of them joined in
    one vector (``None`` when no array is float) — one kernel per array, where a flag per array
    took two kernels each."""
    partials = []
    for a in arrays:
        dtype = jnp.result_type(a)
        if jnp.issubdtype(dtype, jnp.complexfloating):
            zero = a * jnp.zeros((), dtype)
            partials.append(window_sums(jnp.real(zero) + jnp.imag(zero)))
        elif jnp.issubdtype(dtype, jnp.floating):
            partials.append(window_sums(a * jnp.zeros((), dtype)))
    if not partials:
        return None
    dtype = jnp.result_type(jnp.float32, *partials)
    return jnp.concatenate([p.astype(dtype) for p in partials])


def difference_dtype(dtype) -> jnp.dtype:
    """The dtype that holds differences of values of ``dtype`` (docs/design.md §19.1): float32 for
    float16/bfloat16 (whose differences can overflow or lose all digits) and for booleans and
    integers (a boolean counts as 0/1; float32 mixes into float32 and float64 programs without
    changing their type), else ``dtype`` itself."""
    dtype = jnp.dtype(dtype)
    if jnp.issubdtype(dtype, jnp.floating):
        return jnp.promote_types(dtype, jnp.float32)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        return dtype
    return jnp.dtype(jnp.float32)


def widen(v) -> jax.Array:
    """``v`` in :func:`difference_dtype` (a no-op for float32/float64)."""
    v = jnp.asarray(v)
    target = difference_dtype(v.dtype)
    return v if v.dtype == target else v.astype(target)


def zeros_of_difference(value) -> jax.Array:
    """Zeros shaped like ``value`` in the dtype of its differences (and multipliers)."""
    return jnp.zeros(jnp.shape(value), difference_dtype(jnp.result_type(value)))


def difference(a, b) -> jax.Array:
    """``a − b`` computed in :func:`difference_dtype`: never overflows for half-precision values,
    and is a number (−1, 0, 1) for booleans."""
    a, b = widen(a), widen(b)
    if jnp.issubdtype(a.dtype, jnp.inexact):  # equal infinities (a −inf mask on both sides)
        return jnp.where(a == b, jnp.zeros((), a.dtype), a - b)
    return a - b


def example_structs(tree, drop_leading: bool):
    """``ShapeDtypeStruct``s of ``tree``'s leaves (without their leading batch axis if
    ``drop_leading``): what a method traces ``fn`` on."""
    return jax.tree_util.tree_map(
        lambda l: jax.ShapeDtypeStruct(jnp.shape(l)[1:] if drop_leading else jnp.shape(l),
                                       jnp.result_type(l)), tree)


def tree_finite(tree) -> jax.Array:
    """Whether every float (or complex) leaf of ``tree`` is free of NaN/Inf (other leaves —
    integers, PRNG keys, flags in a model's state — are not checked); one scalar bool."""
    return all_finite(*jax.tree_util.tree_leaves(tree))


def finite_flag(res, delta, x, refs, check_inputs: bool) -> jax.Array:
    """A short vector that is all finite iff the scores, ``Δt`` and, with ``check_inputs``, the
    inputs and references are all free of NaN/Inf (:func:`finite_sums`; read on the host by
    :func:`flag_up`). Where it is down the host finds which (``jaxlift.pipeline.read_checks``:
    the inputs and parameters by NumPy first, then the scores), so the program computes one
    flag where a flag per part cost two kernels per leaf. Parameters are checked apart, once per
    array (``jaxlift.validation.params_finite_check``): they are usually the same arrays call
    after call, and larger than the inputs."""
    leaves = jax.tree_util.tree_leaves((res, delta) + ((x, refs) if check_inputs else ()))
    sums = finite_sums(*leaves)
    return jnp.zeros((1,), jnp.float32) if sums is None else sums


def flag_up(flag) -> bool:
    """:func:`finite_flag`'s verdict, on the host: everything it covers is finite."""
    return bool(np.isfinite(np.asarray(flag)).all())


@contextlib.contextmanager
def calls_inlined() -> Iterator[None]:
    """Trace the body of the ``with`` with every ``jax.jit``-wrapped function it calls inlined
    (``jax.disable_jit``): most of ``jax.numpy`` is such a function, and each call of one
    under the interpreter's two ``vmap`` s traces its own small jaxpr and batches it twice
    (``pjit``'s batching rule), which made the rules' tracing 3–4× that of the same operations
    written with ``lax``. The program XLA compiles is the same (XLA inlines those calls), so
    this changes the first call's time only. Only for code being traced into jaxlift's own
    program: ``jax.disable_jit`` also makes ``lax.scan`` a Python loop, so rules that build a
    scan call :func:`scan` (docs/design.md §20.9)."""
    with jax.disable_jit():
        yield


def scan(step: Callable, init, xs, **kwargs):
    """``jax.lax.scan(step, init, xs, **kwargs)`` as one scan whether or not
    :func:`calls_inlined` is in effect, its body traced in the caller's mode."""
    inlined = jax.config.jax_disable_jit

    def body(carry, x):
        with jax.disable_jit(inlined):
            return step(carry, x)
    with jax.disable_jit(False):
        return jax.lax.scan(body, init, xs, **kwargs)


def varying_like(tree, *sources):
    """``tree`` itself, made to vary over every ``vmap`` axis that ``sources`` vary over (a
    select of ``tree`` or ``tree`` on a predicate read from the sources, which XLA folds
    away). For a loop's initial carry: JAX batches a scan's body once per ``vmap`` when the
    carry it starts with varies as the carry its body returns, and twice when it does not (the
    carry fixpoint of ``lax.scan``'s batching rule) — the loop rule's initial carries (a
    model's zero state, zero multipliers) vary over nothing (docs/design.md §20.9)."""
    leaves = [l for l in jax.tree_util.tree_leaves(sources) if jnp.size(l)]
    if not leaves:
        return tree
    first = [jnp.ravel(l)[0] for l in leaves]
    vary = functools.reduce(jnp.logical_and, [v == v for v in first])
    return jax.tree_util.tree_map(lambda v: jnp.where(vary, v, v), tree)


def computed_together(*arrays: jax.Array) -> tuple:
    """``arrays`` as they are, computed by one kernel (docs/design.md §20.10).

    XLA:CPU fuses cheap elementwise work (compares, selects, ``isfinite``, adds) into every
    kernel that reads its result rather than storing the result once, and does not fuse
    siblings into one kernel. RevealCancel's ``Δy⁺``, ``Δy⁻``, ``m⁺``, ``m⁻`` share their
    guards, so each part's readers compiled and ran all of them again, and each next rule's
    readers all of those (a 2-block decoder's reveal_cancel program held 4.6× the operations
    it was written with). Stacked, they are one array made by one kernel; the optimization
    barrier keeps XLA's simplifier from turning the slices back into the separate expressions
    (a barrier on the separate arrays is removed before fusion and does not do it). The cost:
    the arrays are written to memory where XLA might have kept them in registers, so use it
    where readers would repeat the work. Arrays of different dtypes, or of shapes that do not
    broadcast together, are returned as they are."""
    if len(arrays) < 2:
        return tuple(arrays)
    try:
        shape = jnp.broadcast_shapes(*(jnp.shape(a) for a in arrays))
    except ValueError:
        return tuple(arrays)
    dtype = jnp.result_type(arrays[0])
    if any(jnp.result_type(a) != dtype for a in arrays):
        return tuple(arrays)
    stacked = jax.lax.optimization_barrier(
        jnp.stack([jnp.broadcast_to(a, shape) for a in arrays]))
    return tuple(stacked[i] for i in range(len(arrays)))
