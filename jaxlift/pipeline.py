"""The pipeline under every method: validation, references, finite checks, chunks.

``jaxlift.attribute`` and ``jaxlift.multipliers`` (:mod:`jaxlift.api`) call :func:`run`, which
does what every method of the table (:mod:`jaxlift.methods`) shares and leaves the method's own
computation to its family — :mod:`jaxlift.methods.interpreted` for the DeepLIFT composites,
:mod:`jaxlift.methods.kernels` for methods defined by a kernel of one pair or one input:

1. look the method up and validate its options, the target, the precision and batch size;
2. resolve the references (``None`` for a reference-free method, a callable ``ref_fn(x, key)``),
   validate the shapes of x and refs (``(K, *S)`` shared or ``(N, K, *S)`` per input) and
   check that ``fn`` treats the examples of a batch independently;
3. plan chunks of inputs (a number of pairs, ``"auto"`` from memory, or everything at once)
   and run the family's compiled program on each, writing results into host buffers; when the
   pairs fit in one chunk this is one compiled dispatch;
4. read the finite flags computed inside the program (scores, ``Δt``, and the inputs) and
   refuse NaN/Inf with an error naming the culprit.
"""
from __future__ import annotations

import contextlib
import functools
import math
import warnings
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift import certificate, chunking, methods, named_layers
from jaxlift._memo import memoized
from jaxlift._ops import tree_finite
from jaxlift.errors import CompletenessError, CompletenessWarning
from jaxlift.rules.composites import GATINGS, MAX_MODES
from jaxlift.methods import interpreted, kernels
from jaxlift.program import build_program
from jaxlift.targets import per_example
from jaxlift.validation import (check_examples_independent, check_target, independence_settled,
                                signature)


def family_of(method):
    """The module that runs ``method``'s computation (its ``runner`` and ``refuse`` hooks)."""
    return interpreted if method.scope == "interpreter" else kernels


def check_method_options(method, max_mode, gating, layer_name, mesh) -> None:
    """Refuse options the method does not take: ``max_mode``/``gating`` choose DeepLIFT rules,
    ``layer=`` and ``mesh=`` need the interpreter on pairs."""
    if gating not in GATINGS:
        raise ValueError(f"unknown gating {gating!r}; choose one of {', '.join(GATINGS)}")
    if max_mode not in MAX_MODES:
        raise ValueError(f"unknown max_mode {max_mode!r}; choose one of {', '.join(MAX_MODES)}")
    deeplift = method.scope == "interpreter"
    if not deeplift and gating != "shapley":
        raise ValueError(f"gating= chooses a DeepLIFT rule; mode {method.name!r} has no gating "
                         "rule")
    if not deeplift and max_mode != "preserving":
        raise ValueError(f"max_mode= chooses a DeepLIFT rule for max-pooling; mode "
                         f"{method.name!r} has none (guided backprop and ε-LRP already route "
                         "max-pooling to the argmax)")
    if layer_name is not None and not deeplift:
        raise ValueError(f"layer= is supported by the DeepLIFT modes only, not mode "
                         f"{method.name!r}")
    if mesh is not None and not deeplift:
        raise ValueError(f"mesh= shards the DeepLIFT modes; mode {method.name!r} runs on one "
                         "device")


def run(what, fn, params, x, refs, *, target, mode, max_mode, average_refs, batch_size,
        layer_name, key, progress, return_delta, check_finite, mode_options=None, mesh=None,
        gating="shapley", precision="default", check_completeness="raise",
        layer_bypass="refuse"):
    """``what`` (``"contributions"`` or ``"multipliers"``) of ``mode`` for N inputs × K
    references: see :func:`jaxlift.attribute` for the arguments and shapes.

    A call like an earlier one that ran as one chunk — the same ``fn``, options, and pytree
    structures, shapes, dtypes and array types of params, x and refs — skips validation and
    planning (they depend on nothing else) and is one compiled dispatch plus the read of its
    finite flags (:func:`one_dispatch_key`). A ``functools.partial`` counts as its function and
    arguments (:func:`canonical_fn`), so a new but equal partial per call is not compiled
    again."""
    fn = canonical_fn(fn)
    fast = one_dispatch_key(what, fn, params, x, refs, target=target, mode=mode,
                            max_mode=max_mode, average_refs=average_refs,
                            batch_size=batch_size, layer_name=layer_name, key=key,
                            return_delta=return_delta, check_finite=check_finite,
                            mode_options=mode_options, mesh=mesh, gating=gating,
                            precision=precision, check_completeness=check_completeness,
                            layer_bypass=layer_bypass)
    slot = one_dispatch_cell(fast)
    if slot:
        out = slot[0](params, x, refs)
        if out is not None:
            return out
        # a NaN/Inf flag or a failed certificate: the full path below runs again and names
        # the culprit
    check_target(target)
    check_precision(precision)
    check_completeness = certificate.check_mode(check_completeness)
    check_layer_bypass(layer_bypass, layer_name)
    check_batch_size(batch_size)
    method = methods.lookup(mode)
    opts = method.check_options(mode_options)
    check_method_options(method, max_mode, gating, layer_name, mesh)
    fn = named_layers.resolve(fn, layer_name, params, x)  # layer= a module's name (memoised)
    family = family_of(method)
    refs_from_x = refs is None
    if refs is None:
        if method.requires_refs(opts):
            raise ValueError(f"mode {method.name!r} needs references (refs=None given); pass "
                             "refs of shape (K, *S) or (N, K, *S)")
        if return_delta:
            raise ValueError(
                f"return_delta=True gives Δt = t(x) − t(r), which needs references: mode "
                f"{method.name!r} runs without them (refs=None) but then has no t(r). Pass refs "
                "(e.g. jaxlift.references.zeros_like(x[:1]); the scores of this mode do not "
                "depend on them), or drop return_delta")
        x = chunking.host_arrays(x)
        refs = jax.tree_util.tree_map(lambda l: l[:1], x)  # only shapes the result
        average_refs = True
    x, refs, n, k, per_input = prepare_inputs(x, refs, key)
    if method.scope != "interpreter":
        kernels.check_inputs(method, x)
    concrete = is_concrete((params, x, refs))
    # The inputs' finite check runs inside the compiled program (no host sync before the
    # result); its flags are read with the scores' flag once the result is there.
    check_inputs = bool(check_finite and concrete)
    shapes = (signature(params), signature(x, drop_leading=True)) if concrete else None
    if concrete:
        try:
            check_examples_independent(fn, params, x, refs, n=n, per_input_refs=per_input,
                                       shapes_key=shapes)
        except ValueError:  # a NaN input makes fn's outputs differ: name the NaN instead
            if check_inputs:
                check_inputs_finite(x, refs, params)
            raise
    if method.scope == "interpreter":
        chunk = inputs_per_chunk(batch_size, fn, target, params, x, n, k, mesh, shapes=shapes)
    else:  # "auto" sizes chunks for methods that say how many forward passes a pair makes
        rows = None if method.rows_per_pair is None else method.rows_per_pair(opts)
        chunk = inputs_per_chunk(None if batch_size == "auto" and rows is None else batch_size,
                                 fn, target, params, x, n, k, None, rows_per_pair=rows or 1,
                                 shapes=shapes)
    if mesh is not None:  # every chunk splits evenly over the devices (the last one padded)
        chunk = -(-chunk // mesh.size) * mesh.size
    setup = dict(method=method, opts=opts, fn=fn, target=target, what=what,
                 layer_name=layer_name, per_input=per_input, average=average_refs,
                 precision=precision, check_inputs=check_inputs, max_mode=max_mode,
                 gating=gating, key=key, params=params, x=x, refs=refs,
                 check_completeness=check_completeness, traced=not concrete,
                 layer_bypass=layer_bypass)
    params_check = params_finite_check(params) if check_inputs else None
    with precision_context(precision):
        one_run = family.runner(**setup, chunked=chunk != n and mesh is None)
        if mesh is not None:
            one_run = sharded(one_run, mesh, per_input)
        run_chunk, recorded = recording_checks(one_run)
        if chunk == n:  # one compiled dispatch: reference side, scores and finite checks
            res, delta = run_chunk(params, x, refs, 0)
            if (slot is not None and not slot and mesh is None and concrete
                    and independence_settled(fn, shapes)):
                slot.append(one_dispatch(one_run, precision, return_delta,
                                         refs_from_x=refs_from_x, check_params=check_inputs))
        else:
            res, delta = run_chunked(run_chunk, params, x, refs, n, chunk, per_input, progress)
        if concrete:
            ok, summary = checks_on_host(recorded, k, targets_of(delta, average_refs))
            if not (ok[1:].all() and params_check_passed(params_check)):
                check_inputs_finite(x, refs, params)
            if not ok[0]:
                family.refuse(first_bad_input(res, delta), **setup)
            if summary["failing"]:
                report_incomplete(family.explain_gap(summary, **setup), summary,
                                  check_completeness, n * k)
    return (res, delta) if return_delta else res


def check_layer_bypass(layer_bypass, layer_name) -> None:
    if layer_bypass not in ("refuse", "credit"):
        raise ValueError(f"layer_bypass must be 'refuse' or 'credit', got {layer_bypass!r}")
    if layer_bypass == "credit" and layer_name is None:
        raise ValueError("layer_bypass='credit' credits the inputs with what reaches the "
                         "target around a marked layer: it needs layer=")


def targets_of(delta, averaged: bool) -> int:
    """T, the number of targets per pair, from the shape of ``Δt`` (``(N[, K][, T])``)."""
    return math.prod(np.shape(delta)[1 if averaged else 2:])


def report_incomplete(cause: str, summary: dict, mode: str, total_pairs: int) -> None:
    """Raise :class:`~jaxlift.errors.CompletenessError` (``mode="raise"``) or warn about the
    pairs whose scores do not sum to ``Δt`` within the certificate's bound."""
    worst = summary["where"]
    message = (f"{summary['failing']} of {total_pairs} (input, reference) pair(s) have "
               f"contributions that do not sum to Δt: worst {worst} with |ΣC − Δt| = "
               f"{summary['gap']:.3g} over its bound {summary['bound']:.3g} "
               f"({summary['ratio']:.3g}×). {cause}")
    if mode == "warn":
        warnings.warn(message, CompletenessWarning, stacklevel=3)
        return
    raise CompletenessError(message, pairs=summary["failing"], worst=summary["where_tuple"],
                            gap=summary["gap"], bound=summary["bound"], cause=cause)


# ---------------------------------------------------------------------------------------------
# One dispatch for a call seen before

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
    return (what, fn, target, mode, max_mode, average_refs, batch_size, layer_name,
            return_delta, check_finite, mode_options, gating, precision, check_completeness,
            layer_bypass, sigs)


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
    call, or ``None`` when a finite flag is down (the caller then runs the full path, which
    names the NaN/Inf)."""
    def call(params, x, refs):
        if refs_from_x:  # a reference-free method: refs only shape the (unused) reference side
            x = chunking.host_arrays(x)
            refs = jax.tree_util.tree_map(lambda l: l[:1], x)
        params_check = params_finite_check(params) if check_params else None
        with precision_context(precision):
            res, delta, checks = one_run(params, x, refs, 0)
        finite, failing = jax.device_get((checks["finite"], checks["failing"]))
        if not (finite.all() and not failing and params_check_passed(params_check)):
            return None
        return (res, delta) if return_delta else res
    return call


def lowered_text(fn, params, x, refs, *, target=None, mode="rescale", what="contributions",
                 precision="default", check_inputs=True) -> str:
    """The StableHLO text of the one-chunk program a DeepLIFT ``mode`` compiles for these
    arguments (shared references ``(K, *S)``), traced under :func:`precision_context` as a call
    is: for inspecting what a precision choice compiles to."""
    check_precision(precision)
    composite = interpreted.composite_of(methods.lookup(mode), {})
    with precision_context(precision):
        return interpreted.lowered_text(fn, params, x, refs, target=target, composite=composite,
                                        what=what, precision=precision,
                                        check_inputs=check_inputs)


# ---------------------------------------------------------------------------------------------
# Parameters' finite check: once per array

FINITE_ARRAYS: dict = {}  # id → weakref of a jax array seen free of NaN/Inf (arrays are immutable)
tree_finite_program = jax.jit(tree_finite)


def seen_finite(leaf) -> bool:
    ref = FINITE_ARRAYS.get(id(leaf))
    return ref is not None and ref() is leaf


def remember_finite(leaf) -> None:
    """Record the jax array ``leaf`` as finite for as long as it lives (NumPy arrays can change
    in place and are checked on every call)."""
    if not isinstance(leaf, jax.Array) or isinstance(leaf, jax.core.Tracer):
        return
    key = id(leaf)

    def forget(ref, key=key):
        if FINITE_ARRAYS.get(key) is ref:
            del FINITE_ARRAYS[key]
    FINITE_ARRAYS[key] = weakref.ref(leaf, forget)


def params_finite_check(params):
    """The NaN/Inf check of the parameters, dispatched and not read: ``None`` when every leaf is
    a jax array already seen finite (a model's weights, call after call), else ``(leaves,
    flag)`` for the other leaves. :func:`params_check_passed` reads it after the result."""
    fresh = [l for l in jax.tree_util.tree_leaves(params) if not seen_finite(l)]
    return (fresh, tree_finite_program(fresh)) if fresh else None


def params_check_passed(check) -> bool:
    """Whether the parameters of :func:`params_finite_check` are finite (remembering those that
    are jax arrays)."""
    if check is None:
        return True
    fresh, flag = check
    if not np.asarray(flag):
        return False
    for leaf in fresh:
        remember_finite(leaf)
    return True


def is_concrete(tree) -> bool:
    return not any(isinstance(l, jax.core.Tracer) for l in jax.tree_util.tree_leaves(tree))


def refuse_non_finite_input(name: str, tree) -> None:
    """Refuse NaN/Inf in the float leaves of ``tree`` (other leaves — integers, PRNG keys,
    flags in a model's state — are not checked)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and not (jnp.issubdtype(dtype, jnp.floating)
                                      or jnp.issubdtype(dtype, jnp.complexfloating)):
            continue
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path) or ""
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(f"{name}{where} contains {bad} NaN or Inf value(s); jaxlift needs "
                             "finite inputs, references and parameters")


def validate_pairs(x, refs) -> tuple[int, int, bool]:
    """Check shapes and dtypes; return ``(N, K, per_input_refs)``."""
    x_leaves, x_tree = jax.tree_util.tree_flatten(x)
    r_leaves, r_tree = jax.tree_util.tree_flatten(refs)
    if not x_leaves:
        raise ValueError("x is empty: pass a batch of inputs (leading axis N)")
    if x_tree != r_tree:
        raise ValueError(f"refs must have the same pytree structure as x; got {r_tree} for x "
                         f"structured as {x_tree}")
    ns = {jnp.shape(l)[0] if jnp.ndim(l) else None for l in x_leaves}
    if None in ns:
        raise ValueError("every leaf of x needs a leading batch axis (N, ...); got a scalar")
    if len(ns) != 1:
        raise ValueError(f"the leaves of x disagree on the batch size N: {sorted(ns)}")
    (n,) = ns
    if n == 0:
        raise ValueError("x is an empty batch (N = 0); pass at least one input")
    layouts, ks = set(), set()
    for xl, rl in zip(x_leaves, r_leaves):
        xs, rs = jnp.shape(xl), jnp.shape(rl)
        if len(rs) == len(xs) and rs[1:] == xs[1:]:
            layouts.add(False)
            ks.add(rs[0])
        elif len(rs) == len(xs) + 1 and rs[0] == n and rs[2:] == xs[1:]:
            layouts.add(True)
            ks.add(rs[1])
        elif len(rs) == len(xs) + 1 and rs[1:] == xs:  # the references are examples like x
            raise ValueError(
                f"x of shape {xs} looks like one example without its batch axis (the "
                f"references, {rs}, are a batch of examples of that shape): pass x[None]")
        elif len(rs) == len(xs) + 1 and rs[1:] == xs[1:] + (1,):
            raise ValueError(
                f"x of shape {xs} has no trailing axis of size 1 but the references, {rs}, "
                "have one: if fn takes (…, 1) examples (a channel axis), pass x[..., None]; "
                "otherwise drop it from the references (refs[..., 0])")
        else:
            raise ValueError(
                f"refs of shape {rs} do not fit x of shape {xs}: expected (K, {', '.join(map(str, xs[1:]))}) "
                f"references shared by all inputs or ({n}, K, {', '.join(map(str, xs[1:]))}) "
                "references per input")
        if xl.dtype != rl.dtype:  # both arrays (chunking.host_arrays), canonical dtypes
            raise ValueError(f"refs dtype {rl.dtype} differs from x dtype {xl.dtype}; cast "
                             "them, e.g. refs.astype(x.dtype)")
    if len(layouts) != 1 or len(ks) != 1:
        raise ValueError("all leaves of refs must use the same layout and number of references K")
    (k,) = ks
    if k == 0:
        raise ValueError("refs is an empty batch (K = 0); pass at least one reference")
    return n, k, layouts.pop()


PRECISIONS = ("default", "highest")


def check_precision(precision) -> None:
    if not (isinstance(precision, str) and precision in PRECISIONS):
        raise ValueError(f"unknown precision {precision!r}; choose \"default\" (JAX's default "
                         "matmul precision: fast, TF32 float32 convolutions and dots on recent "
                         "NVIDIA GPUs) or \"highest\" (exact float32)")


def precision_context(precision: str):
    """The context a program is traced and run under: nothing for ``"default"`` (JAX's setting,
    the user's own ``jax.default_matmul_precision`` included), ``jax.default_matmul_precision(
    "highest")`` for ``"highest"`` (every dot and convolution at full float32)."""
    if precision == "highest":
        return jax.default_matmul_precision("highest")
    return contextlib.nullcontext()


def check_inputs_finite(x, refs, params) -> None:
    """Raise the ``ValueError`` naming the first of x, refs, params with a NaN or Inf."""
    refuse_non_finite_input("x", x)
    refuse_non_finite_input("refs", refs)
    refuse_non_finite_input("params", params)


def recording_checks(run):
    """``run`` returning ``(scores, Δt)``, with each chunk's ``(start, checks)`` — the finite
    flags and the certificate's summary, still on the device — kept in a list."""
    recorded: list = []

    def run_and_record(*args):
        res, delta, checks = run(*args)
        recorded.append((args[3], checks))
        return res, delta
    return run_and_record, recorded


def checks_on_host(recorded: list, k: int, t: int) -> tuple[np.ndarray, dict]:
    """Every chunk's checks read in one transfer: the finite flags (:data:`FLAG_NAMES`) and-ed
    over chunks, and the certificate's summary over the whole call
    (:func:`jaxlift.certificate.worst_on_host`), with the worst pair's ``(input, reference
    [, target])`` under ``"where_tuple"`` and as words under ``"where"``."""
    starts = [start for start, _ in recorded]
    host = jax.device_get([checks for _, checks in recorded])
    ok = np.logical_and.reduce(np.stack([np.asarray(c["finite"]) for c in host]), axis=0)
    summary = certificate.worst_on_host(host, starts, k * t)
    j, target = divmod(summary["rest"], t)
    where = (summary["input"], j) + ((target,) if t > 1 else ())
    summary["where_tuple"] = where
    summary["where"] = f"(input {where[0]}, reference {where[1]}" + (
        f", target {where[2]})" if t > 1 else ")")
    return ok, summary


def prepare_inputs(x, refs, key):
    """``(x, refs, N, K, per_input_refs)`` validated, with NumPy leaves of x and of per-input
    references kept on the host (:func:`jaxlift.chunking.host_arrays`: no full copy on the
    device; chunks are cut from them) and shared references as jax arrays. A callable ``refs``
    is called on x as jax arrays."""
    x = chunking.host_arrays(x)
    if callable(refs):
        refs = refs(jax.tree_util.tree_map(jnp.asarray, x),
                    jax.random.PRNGKey(0) if key is None else key)
    refs = chunking.host_arrays(refs)
    n, k, per_input = validate_pairs(x, refs)
    if not per_input and not all(isinstance(l, (jax.Array, jax.core.Tracer))
                                 for l in jax.tree_util.tree_leaves(refs)):
        refs = jax.tree_util.tree_map(jnp.asarray, refs)
    return x, refs, n, k, per_input


def check_batch_size(batch_size) -> None:
    ok = batch_size is None or isinstance(batch_size, str) and batch_size == "auto" or (
        isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool)
        and batch_size >= 1)
    if not ok:
        raise ValueError(f"batch_size must be a positive number of pairs, \"auto\" or None; "
                         f"got {batch_size!r}")


def structs_of(key):
    treedef, leaves = key
    return jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])


@functools.lru_cache(maxsize=64)
def pair_bytes_cached(fn, target, params_key, x_key) -> int:
    return pair_bytes(fn, target, structs_of(params_key), structs_of(x_key))


def pair_bytes(fn, target, params_structs, x_structs) -> int:
    program, _ = build_program(per_example(fn, target), params_structs, x_structs)
    out = program.outputs[0]
    all_targets = isinstance(target, str) and target == "all" and isinstance(out, int)
    targets = math.prod(program.avals[out].shape) if all_targets else 1
    return chunking.pair_bytes(program, targets)


def inputs_per_chunk(batch_size, fn, target, params, x, n: int, k: int, mesh,
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
            return n
        shapes = signature(params), signature(x, drop_leading=True)
    devices = tuple(mesh.devices.flat) if mesh is not None else (jax.devices()[0],)
    return memoized(chunk_plan, fn, target, shapes, n, k, rows_per_pair, devices,
                    (chunking.CPU_CHUNK_BYTES, chunking.MIN_CACHED_PAIRS,
                     chunking.MEMORY_FRACTION, chunking.ONE_CHUNK_FACTOR))


@functools.lru_cache(maxsize=256)
def chunk_plan(fn, target, shapes, n: int, k: int, rows_per_pair: int, devices,
                constants) -> int:
    """``inputs_per_chunk`` for ``"auto"``; ``constants`` (the tunables of
    :mod:`jaxlift.chunking`) are in the key so that changing them re-plans."""
    params_key, x_key = shapes
    nbytes = memoized(pair_bytes_cached, fn, target, params_key, x_key)
    per_device = chunking.inputs_per_chunk(
        math.ceil(n / len(devices)), k * rows_per_pair, nbytes, devices[0].platform,
        chunking.free_memory_bytes(devices[0]))
    return min(n, per_device * len(devices))


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

    def sharded_run(params, x, refs, start):
        return run(put(params, replicated), put(x, split),
                   put(refs, split if per_input else replicated), start)
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
        xc = jax.tree_util.tree_map(lambda l: chunking.take_rows(l, s, chunk, n), x)
        rc = (jax.tree_util.tree_map(lambda l: chunking.take_rows(l, s, chunk, n), refs)
              if per_input else refs)
        out = run(params, xc, rc, s)  # dispatched before the previous chunk is read back
        if pending is not None:
            bufs = store_chunk(bufs, *pending, n, chunk)
        pending = s, out
    bufs = store_chunk(bufs, *pending, n, chunk)
    return jax.tree_util.tree_map(chunking.as_jax, bufs)


def store_chunk(bufs, start: int, out, n: int, chunk: int):
    """``bufs`` (allocated at the first chunk, shaped like ``out`` with N rows) holding the
    rows of ``out``, one chunk's result, at ``start`` (padding rows dropped)."""
    if bufs is None:
        bufs = jax.tree_util.tree_map(lambda l: chunking.output_buffer(l, n), out)
    rows = min(chunk, n - start)
    return jax.tree_util.tree_map(lambda b, l: chunking.store_rows(b, start, l, rows), bufs, out)


def first_bad_input(res, delta) -> int:
    bad = ~np.isfinite(np.asarray(delta)).reshape(len(delta), -1).all(1)
    for leaf in jax.tree_util.tree_leaves(res):
        arr = np.asarray(leaf)
        bad |= ~np.isfinite(arr).reshape(arr.shape[0], -1).all(1)
    return int(np.argmax(bad))


