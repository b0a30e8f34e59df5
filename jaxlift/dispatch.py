"""One dispatch for a call seen before (docs/design.md §20.4).

A call like an earlier one — the same ``fn`` and options, params/x/refs of the same pytree
structures, shapes, dtypes and array classes — needs no validation and no chunk plan (they read
nothing else): it is the compiled one-chunk program of that earlier call and one read of its
checks. :func:`one_dispatch_key` builds the key from the pytrees in a few microseconds;
:func:`one_dispatch_slot` holds, per key, the :func:`one_dispatch` of a call that ran as one
chunk (once ``fn``'s batch independence was confirmed). ``functools.partial`` objects count as
their function and arguments (:func:`canonical_fn`), as ``jax.jit``'s cache counts functions.
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from jaxlift import certificate, chunking, references
from jaxlift._ops import flag_up
from jaxlift.validation import params_check_passed, params_finite_check, precision_context


def canonical_fn(fn):
    """``fn``, or for a ``functools.partial`` whose arguments are hashable the first partial seen
    with the same function, positional and keyword arguments (and their types: ``1`` and
    ``True`` differ): every cache of the pipeline is keyed on ``fn``'s identity, as
    ``jax.jit``'s is, and ``partial(model.apply, logits=True)`` written anew at each call would
    otherwise be traced, checked and compiled at each call."""
    if type(fn) is not functools.partial:
        return fn
    try:
        return equal_partial(canonical_fn(fn.func),
                             tuple((type(a), a) for a in fn.args),
                             tuple(sorted((k, type(v), v) for k, v in fn.keywords.items())))
    except TypeError:  # an unhashable argument (an array, a dict): keep this very partial
        return fn


@functools.lru_cache(maxsize=256)
def equal_partial(func, typed_args: tuple, typed_keywords: tuple) -> functools.partial:
    """The one partial kept per (function, arguments) key of :func:`canonical_fn`."""
    return functools.partial(func, *(a for _, a in typed_args),
                             **{k: v for k, _, v in typed_keywords})


ONE_DISPATCH_SCALARS = frozenset((bool, int, float, complex))
ARRAY_KINDS = {np.ndarray}  # concrete array classes seen (jax's is added at its first call)


def leaf_kind(leaf):
    """A leaf's part of :func:`call_signature` when its class is not yet in ``ARRAY_KINDS``:
    its class for a Python number, ``None`` for a tracer or anything else."""
    kind = type(leaf)
    if kind in ONE_DISPATCH_SCALARS:
        return kind
    if isinstance(leaf, jax.core.Tracer) or not isinstance(leaf, jax.Array):
        return None
    ARRAY_KINDS.add(kind)
    return kind, leaf.shape, leaf.dtype


def call_signature(tree) -> tuple | None:
    """``(treedef, per-leaf (class, shape, dtype))`` of ``tree``, or ``None`` when a leaf is a
    tracer (inside a transformation the caller's own ``jit`` is the one dispatch) or not an
    array or Python number. The class is in the key because NumPy leaves are converted to
    JAX's canonical dtypes on the way in and jax arrays are not."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    sig = tuple([(kind, leaf.shape, leaf.dtype) if (kind := type(leaf)) in ARRAY_KINDS
                 else leaf_kind(leaf) for leaf in leaves])
    return None if None in sig else (treedef, sig)


def one_dispatch_key(what, fn, params, x, refs, *, target, mode, max_mode, average_refs,
                     batch_size, layer_name, key, return_delta, check_finite, mode_options,
                     mesh, gating, precision, check_completeness="raise",
                     layer_bypass="refuse") -> tuple | None:
    """The key under which a call's one-dispatch program is kept, or ``None`` for calls that
    always take the full path: a PRNG ``key``, a ``mesh``, a callable ``refs``, traced or
    non-array leaves (an unhashable option, an array in ``mode_options`` say, makes the key
    unusable: :func:`one_dispatch_cell` answers ``None``). Everything
    the validation and the chunk plan read is in it: the options, and the structures, shapes,
    dtypes and array types of params, x and refs (not their values: NaN/Inf is checked inside
    the program on every call)."""
    if key is not None or mesh is not None or callable(refs):
        return None
    sigs = (call_signature(params), call_signature(x),
            True if refs is None else call_signature(refs))
    if None in sigs:
        return None
    if mode_options is not None:
        if not isinstance(mode_options, dict):
            return None
        mode_options = tuple(sorted(mode_options.items(), key=lambda kv: str(kv[0])))
    # held inputs (references.held_leaves) make another program: by value, per call
    held = () if refs is None else references.held_leaves(
        x, refs, references.floats_held(what, layer_name, layer_bypass))
    return (what, fn, target, mode, max_mode, average_refs, batch_size, layer_name,
            return_delta, check_finite, mode_options, gating, precision, check_completeness,
            layer_bypass, sigs, held)


def one_dispatch_cell(fast_key: tuple | None) -> list | None:
    """:func:`one_dispatch_slot` of a key, ``None`` for no key or an unhashable one."""
    if fast_key is None:
        return None
    try:
        return one_dispatch_slot(fast_key)
    except TypeError:
        return None


@functools.lru_cache(maxsize=128)
def one_dispatch_slot(fast_key: tuple) -> list:
    """A cell per :func:`one_dispatch_key`: empty until a call with that key has run as one
    chunk (and ``fn``'s examples were checked independent), then holding its
    :func:`one_dispatch`."""
    return []


def one_dispatch(one_run, precision: str, return_delta: bool, refs_from_x: bool,
                 check_params: bool):
    """``call(params, x, refs)``: ``one_run`` (a family's one-chunk program) on the whole
    call, or ``None`` when a finite flag is down or the certificate failed (the caller then runs
    the full path, which names the NaN/Inf or explains the gap)."""
    def call(params, x, refs):
        if refs_from_x:  # a reference-free method: refs only shape the (unused) reference side
            x = chunking.host_arrays(x)
            refs = jax.tree_util.tree_map(lambda l: l[:1], x)
        params_check = params_finite_check(params) if check_params else None
        with precision_context(precision):
            res, delta, checks = one_run(params, x, refs, 0)  # fn's batch: settled
        # small reads: np.asarray wraps a CPU buffer (~2 µs), jax.device_get of the same
        # arrays walks them as a pytree (~20 µs, a tenth of the 1 × 1 call's overhead)
        if not (flag_up(checks["finite"]) and not certificate.failing_pairs(checks)
                and params_check_passed(params_check)):
            return None
        return (res, delta) if return_delta else res
    return call
