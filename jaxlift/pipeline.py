"""The pipeline under every method: it orchestrates, and computes nothing itself.

``jaxlift.attribute`` and ``jaxlift.multipliers`` (:mod:`jaxlift.api`) call :func:`run`:

1. a call seen before goes straight to its compiled program (:mod:`jaxlift.dispatch`);
2. otherwise the arguments become one typed :class:`~jaxlift.methods.call.Call` and the data one
   :class:`~jaxlift.methods.call.Inputs`, validated once (:mod:`jaxlift.validation`): options,
   target (per-input targets become weights per input), references (``None`` for a
   reference-free method, a callable ``ref_fn(x, key)``), shapes;
3. the chunks are planned (:func:`jaxlift.chunking.plan_chunk`) and the method's family
   (:mod:`jaxlift.methods.interpreted` for DeepLIFT, :mod:`jaxlift.methods.kernels` for the
   rest; the :class:`~jaxlift.methods.call.Family` protocol) runs its compiled program on each;
4. the checks the programs computed — the finite flag, the completeness certificate, the
   comparison of ``fn`` on a batch of two with ``fn`` on each example — are read in one
   transfer, and anything wrong is refused by name.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift import (certificate, chunking, dispatch, independence, methods, named_layers,
                     references)
from jaxlift._ops import flag_up
from jaxlift.errors import InputValueError, JaxliftError
from jaxlift.methods import interpreted, kernels
from jaxlift.methods.call import Call, Inputs
from jaxlift.program import at_one_trace, signature, structs_of, traced_program
from jaxlift.targets import (GIVEN, PREDICTED, PerInput, asks_prediction, batch_comparison,
                             normalize_target, per_example, predicted_rows)
from jaxlift.validation import (check_batch_size, check_inputs_finite, check_layer_bypass,
                                check_method_options, check_precision, check_target,
                                explain_trace_failure, independence_settled, is_concrete,
                                params_check_passed, params_finite_check, precision_context,
                                settle_independence, validate_pairs)


def family_of(method):
    """The module that runs ``method``'s computation (the Family protocol)."""
    return interpreted if method.scope == "interpreter" else kernels


def run(what, fn, params, x, refs, *, target, mode, max_mode, average_refs, batch_size,
        layer_name, key, progress, return_delta, check_finite, mode_options=None, mesh=None,
        gating="shapley", precision="default", check_completeness="raise",
        layer_bypass="refuse"):
    """``what`` (``"contributions"`` or ``"multipliers"``) of ``mode`` for N inputs × K
    references: see :func:`jaxlift.attribute` for the arguments and shapes.

    A call like an earlier one that ran as one chunk — the same ``fn``, options, and pytree
    structures, shapes, dtypes and array types of params, x and refs — skips validation and
    planning (they depend on nothing else) and is one compiled dispatch plus the read of its
    checks (:mod:`jaxlift.dispatch`)."""
    fn = dispatch.canonical_fn(fn)
    fast = dispatch.one_dispatch_key(
        what, fn, params, x, refs, target=target, mode=mode, max_mode=max_mode,
        average_refs=average_refs, batch_size=batch_size, layer_name=layer_name, key=key,
        return_delta=return_delta, check_finite=check_finite, mode_options=mode_options,
        mesh=mesh, gating=gating, precision=precision, check_completeness=check_completeness,
        layer_bypass=layer_bypass)
    slot = dispatch.one_dispatch_cell(fast)
    if slot:
        out = slot[0](params, x, refs)
        if out is not None:
            return out
        # a NaN/Inf flag or a failed certificate: the full path below runs again and names it
    call = make_call(what, fn, target=target, mode=mode, max_mode=max_mode,
                     average_refs=average_refs, batch_size=batch_size, layer_name=layer_name,
                     key=key, progress=progress, return_delta=return_delta,
                     check_finite=check_finite, mode_options=mode_options, mesh=mesh,
                     gating=gating, precision=precision,
                     check_completeness=check_completeness, layer_bypass=layer_bypass)
    # layer= a module's name: fn with that module marked (memoised, so later calls share it)
    call = dataclasses.replace(call, fn=named_layers.resolve(fn, layer_name, params, x))
    refs_from_x = refs is None
    inputs, call = make_inputs(call, params, x, refs, target)
    res, delta, one_run = execute(call, inputs)
    if (slot is not None and not slot and one_run is not None and inputs.concrete
            and independence_settled(call.fn, shapes_of(inputs))):
        slot.append(dispatch.one_dispatch(one_run, call.precision, call.return_delta,
                                          refs_from_x=refs_from_x,
                                          check_params=inputs.check_inputs))
    return (res, delta) if call.return_delta else res


def make_call(what, fn, *, target, mode, max_mode, average_refs, batch_size, layer_name, key,
              progress, return_delta, check_finite, mode_options, mesh, gating, precision,
              check_completeness, layer_bypass) -> Call:
    """The validated :class:`Call` (everything but the data)."""
    static, _ = normalize_target(target)
    if not isinstance(static, PerInput):
        check_target(static)
    check_precision(precision)
    check_layer_bypass(layer_bypass, layer_name)
    check_batch_size(batch_size)
    method = methods.lookup(mode)
    opts = method.check_options(mode_options)
    check_method_options(method, max_mode, gating, layer_name, mesh)
    composite = (interpreted.composite_of(method, opts, max_mode, gating)
                 if method.scope == "interpreter" else None)
    return Call(what=what, fn=fn, method=method, opts=opts, composite=composite,
                target=static, layer=layer_name, layer_bypass=layer_bypass,
                average_refs=average_refs, batch_size=batch_size, precision=precision,
                check_completeness=certificate.check_mode(check_completeness),
                check_finite=check_finite, return_delta=return_delta, progress=progress,
                key=key, mesh=mesh)


def make_inputs(call: Call, params, x, refs, target) -> tuple[Inputs, Call]:
    """The validated :class:`Inputs` (references resolved, per-input targets as weights), and
    the call (a reference-free method averages its copies of the scores over one reference)."""
    method = call.method
    if refs is None:
        if method.requires_refs(call.opts):
            raise InputValueError(f"mode {method.name!r} needs references (refs=None given); pass "
                                  "refs of shape (K, *S) or (N, K, *S)")
        if call.return_delta:
            raise InputValueError(
                f"return_delta=True gives Δt = t(x) − t(r), which needs references: mode "
                f"{method.name!r} runs without them (refs=None) but then has no t(r). Pass refs "
                "(e.g. jaxlift.references.zeros_like(x[:1]); the scores of this mode do not "
                "depend on them), or drop return_delta")
        x = chunking.host_arrays(x)
        refs = jax.tree_util.tree_map(lambda l: l[:1], x)  # only shapes the result
        call = dataclasses.replace(call, average_refs=True)
    x, refs, n, k, per_input = prepare_inputs(x, refs, call.key)
    if method.scope != "interpreter":
        kernels.check_inputs(method, x)
    concrete = is_concrete((params, x, refs))
    seeds = None
    if call.target is GIVEN:
        _, classes = normalize_target(target)
        seeds = classes.seeds(n, output_size(call.fn, params, x))
    elif target_as_data(call, concrete):
        size = vector_output_size(call.fn, params, x)
        if call.target is PREDICTED and size is not None:
            # each input's predicted class, found inside the program (targets.seed_of): the
            # program of an int or per-input target, so that switching between them compiles
            # nothing
            seeds = predicted_rows(n, size)
            call = dataclasses.replace(call, target=GIVEN)
        elif call.target is not PREDICTED and size is not None and -size <= call.target < size:
            # one class of a vector output: the same program as per-input classes, with the
            # class as data, so that the next call with another class compiles nothing
            # (one row, broadcast to N without copies: chunks are cut as views of it)
            row = np.zeros(size, np.float32)
            row[call.target % size] = 1.0
            seeds = np.broadcast_to(row, (n, size))
            call = dataclasses.replace(call, target=GIVEN)
    floats = references.floats_held(call.what, call.layer, call.layer_bypass)
    held = (references.held_leaves(x, refs, floats)
            if per_input and concrete and method.scope == "interpreter" else ())
    inputs = Inputs(params=params, x=x, refs=refs, n=n, k=k, per_input=per_input, seeds=seeds,
                    concrete=concrete, check_inputs=bool(call.check_finite and concrete),
                    held=held)
    return inputs, call


def target_as_data(call: Call, concrete: bool) -> bool:
    """Whether an int ``target`` (one-hot weights) or ``"pred"`` (rows asking for each input's
    predicted class) runs as data, in the program of :data:`GIVEN` weights: a DeepLIFT mode's
    scores at the inputs, outside a caller's trace."""
    return ((type(call.target) is int or call.target is PREDICTED)
            and call.method.scope == "interpreter" and call.layer is None and concrete)


def vector_output_size(fn, params, x) -> int | None:
    """``T`` where ``fn``'s output per example is one vector of ``T`` entries, else ``None``."""
    try:
        key = (fn, signature(params), signature(x, drop_leading=True))
        hash(key)
    except TypeError:
        return None
    return _vector_output_size(*key)


@functools.lru_cache(maxsize=256)
def _vector_output_size(fn, params_key, example_key) -> int | None:
    batch_of_one = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct((1, *s.shape), s.dtype),
                                          structs_of(example_key))
    try:
        out = jax.eval_shape(at_one_trace(fn), structs_of(params_key), batch_of_one)
    except Exception:  # noqa: BLE001 the int path reports fn's own failure as it always has
        return None
    leaves = jax.tree_util.tree_leaves(out)
    if len(leaves) != 1 or len(leaves[0].shape) != 2 or leaves[0].shape[0] != 1:
        return None
    return int(leaves[0].shape[1])


def output_size(fn, params, x) -> int:
    """The number of outputs per example (the width of per-input target weights)."""
    program = trace(fn, "all", params, x)
    out = program.outputs[0]
    return math.prod(program.avals[out].shape) if isinstance(out, int) else 1


def trace(fn, target, params, x):
    """``fn``'s program for ``target`` at one example of ``x`` (one trace per shapes: the
    families reuse it)."""
    structs = jax.tree_util.tree_map(
        lambda l: jax.ShapeDtypeStruct(tuple(jnp.shape(l)[1:]), jnp.result_type(l)), x)
    return traced_program(per_example(fn, target), params, structs)[0]


def shapes_of(inputs: Inputs) -> tuple:
    return signature(inputs.params), signature(inputs.x, drop_leading=True)


def execute(call: Call, inputs: Inputs):
    """Plan the chunks, run the family's program on each, read every check in one transfer and
    refuse what is wrong: ``(scores, Δt, one_run)`` (``one_run`` the one-chunk program when the
    call ran as one chunk, else ``None``). Where ``fn`` itself fails on a batch of ``x``, the
    error says how jaxlift called it and what ``x`` looks like
    (:func:`jaxlift.validation.explain_trace_failure`)."""
    try:
        return _execute(call, inputs)
    except JaxliftError:
        raise
    except Exception as exc:
        better = (explain_trace_failure(call.fn, inputs.params, inputs.x, exc)
                  if inputs.concrete else None)
        if better is None:
            raise
        raise better from exc


def _execute(call: Call, inputs: Inputs):
    family = family_of(call.method)
    n, k = inputs.n, inputs.k
    shapes = shapes_of(inputs) if inputs.concrete else None
    if call.method.scope == "interpreter":
        per_pair = 1
        chunk = chunking.plan_chunk(call.batch_size, call.fn, call.target, inputs.params,
                                    inputs.x, n, k, call.mesh, shapes=shapes)
    else:  # "auto" sizes chunks for methods that say how many forward passes a pair makes
        per_pair = (None if call.method.rows_per_pair is None
                    else call.method.rows_per_pair(call.opts))
        size = None if call.batch_size == "auto" and per_pair is None else call.batch_size
        chunk = chunking.plan_chunk(size, call.fn, call.target, inputs.params, inputs.x, n, k,
                                    None, rows_per_pair=per_pair or 1, shapes=shapes)
    if call.mesh is not None:  # every chunk splits evenly over the devices (the last padded)
        chunk = -(-chunk // call.mesh.size) * call.mesh.size
    params_check = params_finite_check(inputs.params) if inputs.check_inputs else None
    one_run = None
    with precision_context(call.precision):
        run_chunk = family.runner(call, inputs, chunked=chunk != n and call.mesh is None)
        # a later small call may run on more rows (and repeated references), so that a new
        # number of inputs or references compiles nothing (the program and every shape but N
        # and K name what XLA compiled)
        rows, refs_to = (n, k) if chunk != n else chunking.one_chunk_rows(
            call.batch_size, call.fn, call.target, n, k, shapes, call.mesh, per_pair,
            program_key=(run_chunk.program, shapes,
                         chunking.references_key(inputs.refs, inputs.per_input),
                         None if inputs.seeds is None else np.shape(inputs.seeds)[1:]),
            tile_refs=call.method.scope == "interpreter")
        if (rows, refs_to) != (n, k):
            run_chunk = chunking.padded(run_chunk, rows, inputs.per_input, k, refs_to,
                                        call.average_refs)
        if call.mesh is not None:
            run_chunk = chunking.sharded(run_chunk, call.mesh, inputs.per_input)
        recorded_run, recorded = recording_checks(run_chunk)
        if chunk == n and rows >= n:  # one compiled dispatch: reference side, scores, checks
            res, delta = recorded_run(inputs.params, inputs.x, inputs.refs, 0)
            # a padded run takes the full path next time too, which counts its runs
            one_run = run_chunk if call.mesh is None and (rows, refs_to) == (n, k) else None
        elif chunk == n:  # pieces of a compiled size, cut on the host (no gather to compile)
            on_host = functools.partial(jax.tree_util.tree_map, np.asarray)
            res, delta = chunking.run_chunked(
                recorded_run, inputs.params, on_host(inputs.x),
                on_host(inputs.refs) if inputs.per_input else inputs.refs, n, rows,
                inputs.per_input, False)  # a few short runs: no progress bar
        else:
            res, delta = chunking.run_chunked(recorded_run, inputs.params, inputs.x,
                                              inputs.refs, n, chunk, inputs.per_input,
                                              call.progress)
        # whether fn keeps the examples of a batch apart, until that has settled for fn at
        # these shapes (inside a caller's trace nothing could read it): proven from its jaxpr,
        # else compared by running it on a batch of two
        independence_result = None
        if inputs.concrete and not independence_settled(call.fn, shapes):
            independence_result = (
                (False, None, None, 0.0, True)
                if independence.proven(call.fn, inputs.params, inputs.x) else
                batch_comparison(call.fn, call.target, inputs.params, inputs.x, inputs.refs,
                                 inputs.per_input,
                                 None if asks_prediction(inputs.seeds) else inputs.seeds))
        if inputs.concrete:
            read_checks(call, inputs, family, recorded, res, delta, params_check, shapes,
                        independence_result)
    return res, delta, one_run


def read_checks(call: Call, inputs: Inputs, family, recorded, res, delta, params_check,
                shapes, independence: tuple | None = None) -> None:
    """Read every chunk's checks in one transfer and refuse, in this order: NaN/Inf in the
    inputs, references or parameters; ``fn`` mixing the examples of a batch (``independence``:
    ``(compared, batched, alone, eps, proven)``, or ``None`` where it has settled); NaN/Inf
    scores; scores that do not sum to ``Δt`` (the certificate)."""
    ok, summary = checks_on_host(recorded, inputs.k, targets_of(delta, call.average_refs),
                                 inputs.n)
    if inputs.check_inputs and not (ok and params_check_passed(params_check)):
        check_inputs_finite(inputs.x, inputs.refs, inputs.params)  # which part: inputs first
    if independence is not None:
        settle_independence(call.fn, shapes, *independence)
    if not ok:  # finite inputs and parameters: the scores are not
        family.refuse(call, inputs, first_bad_input(res, delta))
    if summary["failing"]:
        certificate.report(family.explain_gap(call, inputs, summary), summary,
                           call.check_completeness, inputs.n * inputs.k)


def targets_of(delta, averaged: bool) -> int:
    """T, the number of targets per pair, from the shape of ``Δt`` (``(N[, K][, T])``)."""
    return math.prod(np.shape(delta)[1 if averaged else 2:])


def recording_checks(run):
    """``run`` returning ``(scores, Δt)``, with each chunk's ``(start, checks)`` — still on the
    device — kept in a list."""
    recorded: list = []

    def run_and_record(*args):
        res, delta, checks = run(*args)
        recorded.append((args[3], checks))
        return res, delta
    return run_and_record, recorded


def checks_on_host(recorded: list, k: int, t: int, n: int | None = None
                   ) -> tuple[bool, dict]:
    """Every chunk's checks read in one transfer: the finite flag
    (:func:`jaxlift._ops.finite_flag`) and-ed over chunks; the certificate's summary over the
    whole call (:func:`jaxlift.certificate.worst_on_host`) with the worst pair's ``(input,
    reference[, target])`` under ``"where_tuple"`` and as words under ``"where"``. ``n``: the
    call's number of inputs (a padded last chunk's extra rows are left out of the summary)."""
    starts = [start for start, _ in recorded]
    host = jax.device_get([checks for _, checks in recorded])
    ok = all(flag_up(c["finite"]) for c in host)
    summary = certificate.worst_on_host(host, starts, k * t, n)
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
        # device_put, not jnp.asarray: JAX 0.10 compiles a program per shape for the latter
        refs = jax.tree_util.tree_map(jax.device_put, refs)
    return x, refs, n, k, per_input


def first_bad_input(res, delta) -> int:
    bad = ~np.isfinite(np.asarray(delta)).reshape(len(delta), -1).all(1)
    for leaf in jax.tree_util.tree_leaves(res):
        arr = np.asarray(leaf)
        bad |= ~np.isfinite(arr).reshape(arr.shape[0], -1).all(1)
    return int(np.argmax(bad))


def lowered_text(fn, params, x, refs, *, target=None, mode="rescale", what="contributions",
                 precision="default", check_inputs=True) -> str:
    """The StableHLO text of the one-chunk program a DeepLIFT ``mode`` compiles for these
    arguments (shared references ``(K, *S)``), traced under the precision context as a call
    is: for inspecting what a precision choice compiles to."""
    check_precision(precision)
    composite = interpreted.composite_of(methods.lookup(mode), {})
    with precision_context(precision):
        return interpreted.lowered_text(fn, params, x, refs, target=target, composite=composite,
                                        what=what, precision=precision,
                                        check_inputs=check_inputs)
