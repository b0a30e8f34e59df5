"""``jaxlift.attribute`` and ``jaxlift.multipliers``: DeepLIFT over inputs × references.

``fn(params, xb)`` is called the way a model is called for prediction: a batch in (leading axis),
a batch of outputs out. jaxlift traces it at one example, interprets the jaxpr on every
(input, reference) pair with ``vmap`` over N inputs × K references, and ``jit``-compiles the
whole once per (fn, target, mode, shapes). Examples of a batch are assumed not to interact.

Shapes (for each leaf of the pytree ``x``, with ``S`` an example's shape):

* ``x``: ``(N, *S)``; ``refs``: ``(K, *S)`` shared by all inputs, ``(N, K, *S)`` one set per
  input, or a callable ``ref_fn(x, key)`` returning either;
* result: ``(N, *S)`` averaged over references, ``(N, K, *S)`` with ``average_refs=False``; with
  ``target="all"`` an axis of size T (the number of outputs) follows N (and K).
"""
from __future__ import annotations

import contextlib
import functools
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift import baselines, chunking, interpreter
from jaxlift._memo import memoized
from jaxlift._ops import difference, mean_axis
from jaxlift.errors import NonFiniteScoresError
from jaxlift.interpreter import GATINGS, MAX_MODES, MODES, Composite, Config
from jaxlift.program import MARKER_PREFIX, build_program
from jaxlift.validation import check_examples_independent, check_target, signature

# ---------------------------------------------------------------------------------------------
# Layer markers ("find_scores_layer" of the original deeplift)

@functools.lru_cache(maxsize=None)
def _marker(name: str) -> Callable:
    def identity(v):
        return v
    identity.__name__ = MARKER_PREFIX + name
    return jax.jit(identity)


def layer(x, name: str):
    """Mark an intermediate value so that ``attribute(..., layer=name)`` scores it.

    Identity in value (and under ``jit``, ``vmap`` and ``grad``). Returns ``x``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"layer name must be a non-empty string, got {name!r}")
    return jax.tree_util.tree_map(_marker(name), x)


# ---------------------------------------------------------------------------------------------
# Targets

def token_scores(scores: Any, axis: int = -1) -> Any:
    """One score per token from scores at an embedding layer: ``s_t = Σ_e C_{t,e}``, the sum
    over the embedding axis (``(N, T, E) → (N, T)``; a pytree of such arrays maps leaf by
    leaf). Summation-to-delta carries over: ``Σ_t s_t = Σ_{t,e} C_{t,e}``. For additive scores
    (DeepLIFT, gradient × input, integrated gradients); occlusion copies a window's drop to
    every feature in it, so its per-token score is the mean over the embedding, not the sum."""
    return jax.tree_util.tree_map(lambda s: jnp.sum(s, axis=axis), scores)


def _select_target(out, target) -> jax.Array:
    if callable(target) and not isinstance(target, str):
        t = jnp.asarray(target(out))
        if t.size != 1:
            raise ValueError(f"target callable must return a scalar, got shape {t.shape}")
        return t.reshape(())
    leaves = jax.tree_util.tree_leaves(out)
    if len(leaves) != 1:
        raise ValueError(
            f"fn returns a pytree of {len(leaves)} arrays per example; pass target as a "
            "callable that picks the scalar to explain")
    (o,) = leaves
    if target is None:
        if o.size != 1:
            raise ValueError(
                f"fn's output per example has shape {o.shape}; pass target=<index> to explain "
                "one output, or target='all' to explain every output")
        return o.reshape(())
    if isinstance(target, str):
        if target != "all":
            raise ValueError(f"unknown target {target!r}; use an index, a tuple, a callable "
                             "or 'all'")
        return o.reshape(-1)
    if isinstance(target, (int, np.integer)):
        if o.ndim == 0:
            raise ValueError("fn's output per example is a scalar; use target=None")
        n = o.shape[-1]
        if not -n <= int(target) < n:
            raise ValueError(f"target index {int(target)} is out of range for fn's output with "
                             f"{n} entries per example (shape {o.shape})")
        t = o[..., int(target)]
        if t.ndim:
            raise ValueError(f"target index {int(target)} selects shape {t.shape}, not a scalar; "
                             f"pass a tuple index into the per-example output of shape {o.shape}")
        return t
    if isinstance(target, tuple):
        if len(target) != o.ndim:
            raise ValueError(f"tuple target {target} must index all {o.ndim} axes of the "
                             f"per-example output of shape {o.shape}")
        for i, n in zip(target, o.shape):
            if not -n <= int(i) < n:
                raise ValueError(f"target {target} is out of range for the per-example output "
                                 f"of shape {o.shape}")
        return o[target]
    raise TypeError(f"target must be None, an int, a tuple, a callable or 'all', got "
                    f"{type(target).__name__}")


def _per_example(fn: Callable, target) -> Callable:
    def f(params, x_example):
        xb = jax.tree_util.tree_map(lambda leaf: leaf[None], x_example)
        out = fn(params, xb)
        out_example = jax.tree_util.tree_map(lambda o: o[0], out)
        return _select_target(out_example, target)
    return f


# ---------------------------------------------------------------------------------------------
# The computation over pairs

def _same_example(x_leaves, r_leaves):
    """Whether input and reference are the same example (every leaf equal)."""
    same = jnp.asarray(True)
    for a, b in zip(x_leaves, r_leaves):
        same = same & jnp.all(a == b)
    return same


def _pair_fn(program, config: Config, what: str, layer_name: str | None, all_targets: bool):
    out_atom = program.outputs[0]
    marked = None if layer_name is None else program.markers[layer_name]

    def pair(fixed_leaves, x_leaves, r_leaves, r_values=None):
        fwd = interpreter.forward(program, config, fixed_leaves, x_leaves, r_leaves, r_values)
        if program.is_live(out_atom):
            y, y0 = fwd.x[out_atom], fwd.r[out_atom]
        else:
            y = y0 = fwd.value(out_atom, "x")
        # x == r: Δt = 0 and every score 0, exactly, whichever kernels computed the two sides
        same = _same_example(x_leaves, r_leaves if r_values is None else
                             [r_values[i] for i in program.live_inputs])
        delta = jnp.where(same, 0, difference(y, y0))

        def back(seed):
            mult = (interpreter.backward(fwd, {out_atom: seed}, stop_at=marked)
                    if program.is_live(out_atom) else {})
            if marked is not None:
                if what == "contributions":
                    return [interpreter.variable_contributions(fwd, mult, marked)]
                return [interpreter.variable_multipliers(fwd, mult, marked)]
            ms = interpreter.input_multipliers(fwd, mult)
            if what == "contributions":
                return [m * fwd.delta(i) for m, i in zip(ms, program.live_inputs)]
            return ms

        dtype = jnp.result_type(delta)
        if all_targets:
            res = jax.vmap(back)(jnp.eye(delta.shape[0], dtype=dtype))
        else:
            res = back(jnp.ones((), dtype))
        if what == "contributions":
            res = [jnp.where(same, jnp.zeros_like(r), r) for r in res]
        return res, delta

    return pair


def _all_finite(res, delta):
    ok = jnp.all(jnp.isfinite(delta))
    for r in jax.tree_util.tree_leaves(res):
        ok = ok & jnp.all(jnp.isfinite(r))
    return ok


def _tree_finite(tree):
    """Whether every float (or complex) leaf of ``tree`` is free of NaN/Inf (other leaves —
    integers, PRNG keys, flags in a model's state — are not checked); one scalar bool."""
    ok = jnp.asarray(True)
    for leaf in jax.tree_util.tree_leaves(tree):
        dtype = leaf.dtype  # traced: every leaf has one; PRNG keys have an extended dtype
        if jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating):
            # v·0 is 0 for finite v and NaN for NaN/Inf, so the sum is NaN iff one is: one
            # fused multiply-add pass, which XLA:CPU runs ~3× faster than all(isfinite(v))
            ok = ok & jnp.isfinite(jnp.sum(leaf * jnp.zeros((), leaf.dtype)))
    return ok


FLAG_NAMES = ("scores", "x", "refs", "params")  # the order of _compute's finite flags


def _compute(params, x, refs, ref_values=None, *, fn, target, config, what, layer_name,
             per_input_refs, average, check_inputs=False):
    """Scores of N inputs × K references, ``Δt``, and finite flags ``[scores and Δt, x, refs,
    params]`` (one bool array; the inputs' flags are computed in the same program when
    ``check_inputs``, else ``True``), so that checking them costs no dispatch and no host sync
    before the result; ``ref_values`` (from :func:`_reference_side`, shared references only)
    holds the references' forward pass, computed once for all chunks."""
    program, _ = build_program(_per_example(fn, target), params, _example_structs(x, True))
    if ref_values is not None and set(ref_values) != program.live_values():
        raise RuntimeError("jaxlift internal error: the references' forward values do not match "
                           "the traced program")
    if layer_name is not None and layer_name not in program.markers:
        known = ", ".join(sorted(program.markers)) or "none"
        raise ValueError(f"no layer named {layer_name!r} in fn (marked layers: {known}); mark "
                         "one with jaxlift.layer(value, name)")
    all_targets = isinstance(target, str) and target == "all"
    pair = _pair_fn(program, config, what, layer_name, all_targets)
    fixed = jax.tree_util.tree_leaves(params)
    x_leaves = jax.tree_util.tree_leaves(x)
    r_leaves = jax.tree_util.tree_leaves(refs)
    hoisted = None if ref_values is None else 0
    over_refs = jax.vmap(pair, in_axes=(None, None, 0, hoisted))
    over_pairs = jax.vmap(over_refs, in_axes=(None, 0, 0 if per_input_refs else None, None))
    res, delta = over_pairs(fixed, x_leaves, r_leaves, ref_values)
    inputs_ok = ([_tree_finite(x), _tree_finite(refs), _tree_finite(params)] if check_inputs
                 else [jnp.asarray(True)] * 3)
    finite = jnp.stack([_all_finite(res, delta), *inputs_ok])
    if layer_name is not None:
        res = [_squeeze_batch_axis(r, 2 + all_targets) for r in res]
    if average:
        res = [mean_axis(r, 1) for r in res]
        delta = mean_axis(delta, 1)
    if layer_name is not None:
        return res[0], delta, finite
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(x), res), delta, finite


def _reference_side(params, refs, *, fn, target):
    """The forward pass of K shared references (every live value, by id, with a leading K):
    computed once and handed to each chunk of inputs instead of re-running it per chunk."""
    program, _ = build_program(_per_example(fn, target), params, _example_structs(refs, True))
    fixed = jax.tree_util.tree_leaves(params)
    return jax.vmap(lambda r: interpreter.side_values(program, fixed, r))(
        jax.tree_util.tree_leaves(refs))


@functools.lru_cache(maxsize=64)
def _reference_side_jit(fn, target):
    return jax.jit(functools.partial(_reference_side, fn=fn, target=target))


def _reference_values(fn, target, params, refs):
    return memoized(_reference_side_jit, fn, target)(params, refs)


def _with_reference_values(run, ref_values):
    def run_chunk(params, x_chunk, refs):
        return run(params, x_chunk, refs, ref_values)
    return run_chunk


def _squeeze_batch_axis(r, axis: int):
    """A marked layer was traced with a batch of one: drop that axis."""
    return jnp.squeeze(r, axis=axis) if r.ndim > axis and r.shape[axis] == 1 else r


@functools.lru_cache(maxsize=256)
def _cached_jit(fn, target, config, what, layer_name, per_input_refs, average,
                precision="default", check_inputs=False):
    """One jitted program per key. ``precision`` is part of the key (and the program is traced
    and run under :func:`precision_context`, which JAX's own cache also keys on), so the
    default and ``"highest"`` programs never share a compilation."""
    return jax.jit(functools.partial(
        _compute, fn=fn, target=target, config=config, what=what, layer_name=layer_name,
        per_input_refs=per_input_refs, average=average, check_inputs=check_inputs))


def _compiled(*key):
    return memoized(_cached_jit, *key)


def _lowered_text(fn, params, x, refs, *, target=None, mode="rescale", what="contributions",
                  precision="default", check_inputs=True) -> str:
    """The StableHLO text of the one-chunk program ``attribute`` compiles for these arguments
    (shared references ``(K, *S)``), traced under :func:`precision_context` as a call is: for
    inspecting what a precision choice compiles to."""
    check_precision(precision)
    run = _cached_jit(fn, target, Config(mode=mode), what, None, False, True, precision,
                      check_inputs)
    with precision_context(precision):
        return run.lower(params, x, refs).as_text()


# ---------------------------------------------------------------------------------------------
# Validation

def _is_concrete(tree) -> bool:
    return not any(isinstance(l, jax.core.Tracer) for l in jax.tree_util.tree_leaves(tree))


def _check_finite(name: str, tree) -> None:
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


def _validate(x, refs) -> tuple[int, int, bool]:
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


def _check_options(mode: str, max_mode: str, gating: str) -> None:
    if gating not in GATINGS:
        raise ValueError(f"unknown gating {gating!r}; choose one of {', '.join(GATINGS)}")
    if not isinstance(mode, Composite) and mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of "
                         f"{', '.join(MODES + baselines.MODES)}")
    if max_mode not in MAX_MODES:
        raise ValueError(f"unknown max_mode {max_mode!r}; choose one of {', '.join(MAX_MODES)}")


# ---------------------------------------------------------------------------------------------
# Public API

def _run(what, fn, params, x, refs, *, target, mode, max_mode, average_refs, batch_size,
         layer_name, key, progress, return_delta, check_finite, mode_options=None, mesh=None,
         gating="shapley", precision="default"):
    check_target(target)
    check_precision(precision)
    if mode in baselines.MODES and gating != "shapley":
        raise ValueError(f"gating= chooses a DeepLIFT rule ({', '.join(MODES)}); mode {mode!r} "
                         "has no gating rule")
    if mesh is not None and mode in baselines.MODES:
        raise ValueError(f"mesh= shards the DeepLIFT modes ({', '.join(MODES)}); mode {mode!r} "
                         "runs on one device")
    _check_batch_size(batch_size)
    if mode in baselines.MODES:  # gradient / IG / perturbation modes (jaxlift.baselines)
        with precision_context(precision):
            return baselines.run(what, fn, params, x, refs, target=target, mode=mode,
                                 mode_options=mode_options, average_refs=average_refs,
                                 batch_size=batch_size, layer_name=layer_name, key=key,
                                 progress=progress, return_delta=return_delta,
                                 check_finite=check_finite)
    if mode_options:
        raise ValueError(f"mode {mode!r} takes no mode_options (got {sorted(mode_options)})")
    _check_options(mode, max_mode, gating)
    x, refs, n, k, per_input = _inputs(x, refs, key)
    concrete = _is_concrete((params, x, refs))
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
                _check_inputs_finite(x, refs, params)
            raise
    config = Config(mode=mode, max_mode=max_mode, gating=gating)
    run, finite_flags = _recording_finite(_compiled(
        fn, target, config, what, layer_name, per_input, average_refs, precision, check_inputs))
    chunk = _inputs_per_chunk(batch_size, fn, target, params, x, n, k, mesh, shapes=shapes)
    if mesh is not None:  # every chunk splits evenly over the devices
        run, chunk = _sharded(run, mesh, per_input), -(-chunk // mesh.size) * mesh.size
    with precision_context(precision):
        if chunk == n:  # one compiled dispatch: reference side, scores and finite checks
            res, delta = run(params, x, refs)
        else:
            if not per_input and mesh is None:  # run the shared references' forward pass once
                run = _with_reference_values(run, _reference_values(fn, target, params, refs))
            res, delta = _run_chunked(run, params, x, refs, n, chunk, per_input, progress)
        if concrete:
            ok = _flags_on_host(finite_flags)
            if not ok[1:].all():
                _check_inputs_finite(x, refs, params)
            if not ok[0]:
                _refuse_non_finite(fn, params, x, refs, res, delta, target=target,
                                   config=config, layer_name=layer_name, per_input=per_input)
    return (res, delta) if return_delta else res


def _check_inputs_finite(x, refs, params) -> None:
    """Raise the ``ValueError`` naming the first of x, refs, params with a NaN or Inf."""
    _check_finite("x", x)
    _check_finite("refs", refs)
    _check_finite("params", params)


def _flags_on_host(flags) -> np.ndarray:
    """The finite flags of every chunk (:data:`FLAG_NAMES`), and-ed, read in one transfer."""
    if len(flags) == 1:
        return np.asarray(flags[0])
    return np.logical_and.reduce(np.stack(jax.device_get(flags)), axis=0)


def _recording_finite(run):
    """``run`` returning ``(scores, Δt)``, with each call's finite flags kept in a list."""
    flags: list = []

    def run_and_record(*args):
        res, delta, finite = run(*args)
        flags.append(finite)
        return res, delta
    return run_and_record, flags


def _inputs(x, refs, key):
    """``(x, refs, N, K, per_input_refs)`` validated, with NumPy leaves of x and of per-input
    references kept on the host (:func:`jaxlift.chunking.host_arrays`: no full copy on the
    device; chunks are cut from them) and shared references as jax arrays. A callable ``refs``
    is called on x as jax arrays."""
    x = chunking.host_arrays(x)
    if callable(refs):
        refs = refs(jax.tree_util.tree_map(jnp.asarray, x),
                    jax.random.PRNGKey(0) if key is None else key)
    refs = chunking.host_arrays(refs)
    n, k, per_input = _validate(x, refs)
    if not per_input and not all(isinstance(l, (jax.Array, jax.core.Tracer))
                                 for l in jax.tree_util.tree_leaves(refs)):
        refs = jax.tree_util.tree_map(jnp.asarray, refs)
    return x, refs, n, k, per_input


def _check_batch_size(batch_size) -> None:
    ok = batch_size is None or isinstance(batch_size, str) and batch_size == "auto" or (
        isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool)
        and batch_size >= 1)
    if not ok:
        raise ValueError(f"batch_size must be a positive number of pairs, \"auto\" or None; "
                         f"got {batch_size!r}")


def _example_structs(tree, drop_leading: bool):
    """``ShapeDtypeStruct``s of ``tree``'s leaves (without their leading batch axis)."""
    return jax.tree_util.tree_map(
        lambda l: jax.ShapeDtypeStruct(jnp.shape(l)[1:] if drop_leading else jnp.shape(l),
                                       jnp.result_type(l)), tree)


def _structs_of(key):
    treedef, leaves = key
    return jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])


@functools.lru_cache(maxsize=64)
def _pair_bytes_cached(fn, target, params_key, x_key) -> int:
    return _pair_bytes(fn, target, _structs_of(params_key), _structs_of(x_key))


def _pair_bytes(fn, target, params_structs, x_structs) -> int:
    program, _ = build_program(_per_example(fn, target), params_structs, x_structs)
    out = program.outputs[0]
    all_targets = isinstance(target, str) and target == "all" and isinstance(out, int)
    targets = math.prod(program.avals[out].shape) if all_targets else 1
    return chunking.pair_bytes(program, targets)


def _inputs_per_chunk(batch_size, fn, target, params, x, n: int, k: int, mesh,
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
        if not _is_concrete((params, x)):
            return n
        shapes = signature(params), signature(x, drop_leading=True)
    devices = tuple(mesh.devices.flat) if mesh is not None else (jax.devices()[0],)
    return memoized(_chunk_plan, fn, target, shapes, n, k, rows_per_pair, devices,
                    (chunking.CPU_CHUNK_BYTES, chunking.MIN_CACHED_PAIRS,
                     chunking.MEMORY_FRACTION, chunking.ONE_CHUNK_FACTOR))


@functools.lru_cache(maxsize=256)
def _chunk_plan(fn, target, shapes, n: int, k: int, rows_per_pair: int, devices,
                constants) -> int:
    """``_inputs_per_chunk`` for ``"auto"``; ``constants`` (the tunables of
    :mod:`jaxlift.chunking`) are in the key so that changing them re-plans."""
    params_key, x_key = shapes
    nbytes = memoized(_pair_bytes_cached, fn, target, params_key, x_key)
    per_device = chunking.inputs_per_chunk(
        math.ceil(n / len(devices)), k * rows_per_pair, nbytes, devices[0].platform,
        chunking.free_memory_bytes(devices[0]))
    return min(n, per_device * len(devices))


def _sharded(run, mesh, per_input: bool):
    """``run`` with the inputs (and per-input references) split over every device of ``mesh``
    along their leading axis N, and parameters and shared references replicated: each device
    explains its share of the N × K pairs; XLA's SPMD partitioner does the rest. With
    ``jax.distributed`` initialised, a mesh over all hosts' devices works the same way."""
    from jax.sharding import NamedSharding, PartitionSpec

    split = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))
    replicated = NamedSharding(mesh, PartitionSpec())

    def put(tree, sharding):
        return jax.tree_util.tree_map(lambda l: jax.device_put(l, sharding), tree)

    def sharded_run(params, x, refs):
        return run(put(params, replicated), put(x, split),
                   put(refs, split if per_input else replicated))
    return sharded_run


PROGRESS_DELAY_S = 2.0


def progress_bar(items, total: int, progress: bool | None):
    """``items`` wrapped in a tqdm bar over chunks: always for ``progress=True``; for ``None``
    (the default) only on a terminal and once the run has taken ``PROGRESS_DELAY_S``, so long
    runs show their progress and short ones, logs and tests stay quiet."""
    from tqdm.auto import tqdm
    quiet_unless_long = {"disable": None, "delay": PROGRESS_DELAY_S} if progress is None else {}
    return tqdm(items, total=total, desc="jaxlift", unit="chunk", **quiet_unless_long)


def _run_chunked(run, params, x, refs, n, chunk, per_input, progress):
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
        out = run(params, xc, rc)  # dispatched before the previous chunk is read back
        if pending is not None:
            bufs = _store_chunk(bufs, *pending, n, chunk)
        pending = s, out
    bufs = _store_chunk(bufs, *pending, n, chunk)
    return jax.tree_util.tree_map(chunking.as_jax, bufs)


def _store_chunk(bufs, start: int, out, n: int, chunk: int):
    """``bufs`` (allocated at the first chunk, shaped like ``out`` with N rows) holding the
    rows of ``out``, one chunk's result, at ``start`` (padding rows dropped)."""
    if bufs is None:
        bufs = jax.tree_util.tree_map(lambda l: chunking.output_buffer(l, n), out)
    rows = min(chunk, n - start)
    return jax.tree_util.tree_map(lambda b, l: chunking.store_rows(b, start, l, rows), bufs, out)


_DOC_ARGS = """
    Args:
      fn: ``fn(params, xb) -> outputs``, called on a batch ``xb`` (leading axis), e.g. a Flax
        ``model.apply``.
      params: pytree of parameters (fixed: ``Δ = 0``).
      x: pytree of input batches, each leaf ``(N, *S)``.
      refs: references ``(K, *S)`` shared by all inputs, ``(N, K, *S)`` per input, or a
        callable ``ref_fn(x, key)`` returning either.
      target: what to explain in each example's output ``o``: ``None`` (``o`` has one element),
        an int (``o[..., i]``), a tuple index, a callable ``o -> scalar``, or ``"all"`` (every
        output; an axis of size T after N).
      mode: ``"rescale"``, ``"reveal_cancel"`` or ``"genomics_default"`` (DeepLIFT), a
        :class:`~jaxlift.rules.registry.Composite` of one's own (which rule where), or a
        baseline of :mod:`jaxlift.baselines`: ``"gradient"``, ``"grad_times_input"``,
        ``"guided_backprop"`` (``refs`` may be ``None``), ``"integrated_gradients"``,
        ``"occlusion"``, ``"shapley_sampling"``.
      max_mode: ``"preserving"`` (exact) or ``"gradient"`` (the original's max-pooling).
      average_refs: average over the K references (else keep a K axis after N).
      batch_size: the number of (input, reference) pairs per compiled chunk (constant memory);
        ``"auto"`` sizes chunks from memory (:mod:`jaxlift.chunking`: cache-sized on the CPU, a
        quarter of free memory on an accelerator); ``None`` runs everything at once. Results do
        not depend on it. Integrated gradients sizes ``"auto"`` chunks counting each step as a
        pair; the other baseline modes run ``"auto"`` at once.
      layer: score the variable marked ``jaxlift.layer(v, layer)`` instead of the inputs.
      key: PRNG key passed to a callable ``refs``.
      progress: a progress bar over chunks: ``True`` always, ``False`` never, ``None`` (the
        default) on a terminal for runs longer than two seconds.
      return_delta: also return ``Δt = t(x) − t(r)`` (averaged like the result).
      check_finite: refuse NaN/Inf in x, refs and params (when they are concrete). The check
        runs inside the compiled program and is read with the result: no extra dispatch.
      mesh: a ``jax.sharding.Mesh``: split the inputs over all its devices (DeepLIFT modes);
        N is padded to a multiple of the device count. Results equal the one-device run.
      mode_options: options of a baseline mode (``steps``/``method`` for integrated
        gradients, ``window``/``stride`` for occlusion, ``num_permutations``/``feature_mask``
        for Shapley sampling …; see :mod:`jaxlift.baselines`). Unknown keys are an error.
      gating: the rule for a product of a gate ``g = σ(·)`` and a signal ``s`` (LSTM/GRU
        cells): ``"shapley"`` (the default; exact: ``m_s = (g + g0)/2``, ``m_g = (s + s0)/2``)
        or ``"gate_as_weight"`` (Arras et al. 2017: ``m_s = g``, ``m_g = 0``; misses
        ``s0·Δg`` of each product's difference, so scores do not sum to delta where the
        reference's signal is non-zero: compare with ``return_delta=True``).
      precision: ``"default"`` follows JAX's matmul precision (fast; float32 convolutions and
        dots run in TF32 on recent NVIDIA GPUs, so scores miss Δt by ~1e-5 of Σ|C|);
        ``"highest"`` compiles the whole program under
        ``jax.default_matmul_precision("highest")`` (exact float32, several times slower on
        such GPUs). On the CPU both are exact float32. See :func:`jaxlift.flag_gaps`.
"""


def attribute(fn: Callable, params: Any, x: Any, refs: Any, *, target=None,
              mode: str = "rescale", max_mode: str = "preserving", average_refs: bool = True,
              batch_size: int | str | None = "auto", layer: str | None = None,
              key: jax.Array | None = None, progress: bool | None = None,
              return_delta: bool = False, check_finite: bool = True,
              mode_options: dict | None = None, mesh=None, gating: str = "shapley",
              precision: str = "default"):
    """DeepLIFT contribution scores ``C(Δx_i → Δt)`` of every input feature.

    Summation-to-delta: ``Σ_i C_i = t(x) − t(r)`` for each pair (and on average over
    references), in every mode with the default ``max_mode="preserving"``.
    """
    return _run("contributions", fn, params, x, refs, target=target, mode=mode,
                max_mode=max_mode, average_refs=average_refs, batch_size=batch_size,
                layer_name=layer, key=key, progress=progress, return_delta=return_delta,
                check_finite=check_finite, mode_options=mode_options, mesh=mesh,
                gating=gating, precision=precision)


def multipliers(fn: Callable, params: Any, x: Any, refs: Any, *, target=None,
                mode: str = "rescale", max_mode: str = "preserving", average_refs: bool = True,
                batch_size: int | str | None = "auto", layer: str | None = None,
                key: jax.Array | None = None, progress: bool | None = None,
                return_delta: bool = False, check_finite: bool = True,
                mode_options: dict | None = None, mesh=None, gating: str = "shapley",
              precision: str = "default"):
    """DeepLIFT multipliers ``m_i = C(Δx_i → Δt)/Δx_i`` (the contribution per unit of
    difference-from-reference), shaped like :func:`attribute`'s result.

    With ``average_refs=True`` the multipliers are averaged over references.
    """
    return _run("multipliers", fn, params, x, refs, target=target, mode=mode,
                max_mode=max_mode, average_refs=average_refs, batch_size=batch_size,
                layer_name=layer, key=key, progress=progress, return_delta=return_delta,
                check_finite=check_finite, mode_options=mode_options, mesh=mesh,
                gating=gating, precision=precision)


attribute.__doc__ += _DOC_ARGS
multipliers.__doc__ += _DOC_ARGS


# ---------------------------------------------------------------------------------------------
# Non-finite scores: find where they came from, and refuse

def _first_bad_input(res, delta) -> int:
    bad = ~np.isfinite(np.asarray(delta)).reshape(len(delta), -1).all(1)
    for leaf in jax.tree_util.tree_leaves(res):
        arr = np.asarray(leaf)
        bad |= ~np.isfinite(arr).reshape(arr.shape[0], -1).all(1)
    return int(np.argmax(bad))


def _refuse_non_finite(fn, params, x, refs, res, delta, *, target, config, layer_name,
                       per_input) -> None:
    """Raise :class:`NonFiniteScoresError` for the first input with a NaN/Inf score or ``Δt``,
    naming the primitive whose multipliers first stopped being finite (found by re-running that
    input's pairs, one at a time, outside ``jit``)."""
    i = _first_bad_input(res, delta)
    program, _ = build_program(_per_example(fn, target), params, _example_structs(x, True))
    fixed = jax.tree_util.tree_leaves(params)
    x_leaves = [l[i] for l in jax.tree_util.tree_leaves(x)]
    r_all = jax.tree_util.tree_leaves(refs)
    k = (r_all[0].shape[1] if per_input else r_all[0].shape[0])
    out = program.outputs[0]
    for j in range(k):
        r_leaves = [l[i, j] if per_input else l[j] for l in r_all]
        fwd = interpreter.forward(program, config, fixed, x_leaves, r_leaves)
        for side, values in (("input", fwd.x), ("reference", fwd.r)):
            if program.is_live(out) and not bool(jnp.all(jnp.isfinite(values[out]))):
                raise NonFiniteScoresError(
                    f"fn's target is NaN or Inf at the {side} of pair (input {i}, reference "
                    f"{j}); jaxlift explains finite outputs only")
        if not program.is_live(out):
            continue
        seed = jnp.ones(jnp.shape(fwd.x[out]), difference(fwd.x[out], fwd.r[out]).dtype)

        def inspect(op, m_out, m_in):
            came_finite = all(m is None or bool(jnp.all(jnp.isfinite(m.pos)))
                              for m in m_out)
            went_bad = any(m is not None and not (bool(jnp.all(jnp.isfinite(m.pos)))
                                                  and bool(jnp.all(jnp.isfinite(m.neg))))
                           for m in m_in)
            if came_finite and went_bad:
                raise NonFiniteScoresError(
                    f"jaxlift's multipliers overflowed at primitive '{op.primitive}' (at "
                    f"{op.where}) for pair (input {i}, reference {j}): its input differs "
                    "between input and reference by less than the float type can divide by "
                    "(a step or a very steep function crossed within a tiny interval). Use "
                    "a reference further from the input, or float64 (jax_enable_x64)",
                    op.primitive, op.where)

        interpreter.backward(fwd, {out: seed}, stop_at=None if layer_name is None
                             else program.markers.get(layer_name), inspect=inspect)
    raise NonFiniteScoresError(
        f"jaxlift produced NaN or Inf scores for input {i}; no single operation could be "
        "blamed (the product of finite multipliers overflowed). Use float64 (jax_enable_x64) "
        "or rescale the inputs")
