"""The interpreter family: methods that re-interpret ``fn``'s program with a rule per primitive.

:func:`runner` is what the pipeline calls for a method of ``scope="interpreter"`` (DeepLIFT:
``rescale``, ``reveal_cancel``, ``genomics_default``, or a user's own composite): the
interpreter's forward pass on every (input, reference) pair, ``vmap``ped over N inputs × K
references, and its backward pass of multipliers from the target. :func:`multipliers_at_input`
runs a composite with the reference equal to the input, for the reference-free methods built on
it (guided backprop, ε-LRP). :func:`refuse_non_finite` names the primitive whose multipliers
overflowed.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift import certificate, interpreter, stored_programs
from jaxlift._compiler import options_here
from jaxlift._memo import memoized
from jaxlift._ops import (calls_inlined, difference, example_structs, finite_flag, mean_axis,
                          sum_in_windows, widen)
from jaxlift.chunking import take_rows
from jaxlift.methods.call import Call, Inputs
from jaxlift.markers import marker_of, tree_of
from jaxlift.rules import registry
from jaxlift.errors import InputValueError, NonFiniteScoresError
from jaxlift.jaxpr_walk import nested_jaxprs
from jaxlift.rules.composites import COMPOSITES, Composite, resolve
from jaxlift.program import origin_of, traced_program, view_of_input
from jaxlift.targets import PerInput, per_example, seed_of, weighted


def same_example(x_leaves, r_leaves):
    """Whether input and reference are the same example (every leaf equal)."""
    same = jnp.asarray(True)
    for a, b in zip(x_leaves, r_leaves):
        same = same & jnp.all(a == b)
    return same


def scored_atoms(program, layer_name: str | None) -> tuple:
    """The variables whose scores are returned: the live inputs, or every leaf of every site
    of the marked layer (one cut)."""
    if layer_name is None:
        return tuple(program.live_inputs)
    return program.marked_ids(layer_name)


def pair_fn(program, composite: Composite, what: str, layer_name: str | None, target=None,
            certify: bool = False, precision: str = "default", bypass: str = "refuse"):
    """``pair(fixed_leaves, x_leaves, r_leaves, r_values=None, seed=None) -> (scores, Δt,
    (gap, τ))`` of one pair: contributions ``m·Δx`` or multipliers ``m`` of every
    live input (or of every leaf of the marked layer, then, for ``bypass="credit"``, of every
    live input too: the share of ``Δt`` that reaches the target around the layer), with a
    leading T axis for ``target="all"``; ``(gap, τ)`` is the completeness certificate of the
    returned contributions (:mod:`jaxlift.certificate`; zeros unless ``certify``). For a
    per-input target (:class:`~jaxlift.targets.PerInput`) the program's output is the flat
    vector of outputs and the target is ``seed · o`` (``seed`` given, or the one-hot of the
    input's own argmax for ``"pred"``)."""
    out_atom = program.outputs[0]
    scored = scored_atoms(program, layer_name)
    stop = frozenset(a for a in scored if isinstance(a, int)) if layer_name is not None \
        else frozenset()
    credit = layer_name is not None and bypass == "credit"
    read, tail = values_read(program, scored) if certify else ((), frozenset())
    inputs = frozenset(program.live_inputs)
    all_targets = isinstance(target, str) and target == "all"
    per_input = isinstance(target, PerInput)
    computed_in = narrowest_live_float(program) if certify else None

    def pair(fixed_leaves, x_leaves, r_leaves, r_values=None, seed=None):
        fwd = interpreter.forward(program, composite, fixed_leaves, x_leaves, r_leaves, r_values)
        if program.is_live(out_atom):
            y, y0 = fwd.x[out_atom], fwd.r[out_atom]
        else:
            y = y0 = fwd.value(out_atom, "x")
        # x == r: Δt = 0 and every score 0, exactly, whichever kernels computed the two sides
        same = same_example(x_leaves, r_leaves if r_values is None else
                            [r_values[i] for i in program.live_inputs])
        delta = jnp.where(same, 0, difference(y, y0))
        dtype = jnp.result_type(delta)
        if per_input:
            seed = seed_of(seed, y).astype(dtype)
            delta = jnp.sum(weighted(seed, delta))

        def back(seed):
            mult = (interpreter.backward(fwd, {out_atom: seed}, stop=stop)
                    if program.is_live(out_atom) else {})
            atoms = scored + (tuple(program.live_inputs) if credit else ())
            contribs = [_contribution(fwd, mult, a) for a in atoms]
            if what == "contributions":
                res = contribs
            elif layer_name is None:
                res = interpreter.input_multipliers(fwd, mult)
            else:
                res = [_multiplier(fwd, mult, a) for a in atoms]
            if what == "contributions":
                res = [jnp.where(same, jnp.zeros_like(r), r) for r in res]
            if not certify:
                zero = jnp.zeros((), dtype)
                return res, (zero, zero)
            contribs = [jnp.where(same, jnp.zeros_like(c), c) for c in contribs]
            total = sum(_dot_sum(c) for c in contribs)
            size = sum(_dot_sum(jnp.abs(c)) for c in contribs)
            scored_scales = [_input_rounding_scale(fwd, mult, a, c) if a in inputs
                             else _rounding_scale(fwd, mult, a) for a, c in zip(atoms, contribs)]
            # what t is computed from along its linear tail: |t| on both sides, the frontier
            # and the scored values that reach t linearly (certificate.pair_bound's `scale`)
            scale = (jnp.sum(jnp.abs(weighted(seed, widen(y))))
                     + jnp.sum(jnp.abs(weighted(seed, widen(y0))))
                     + sum(_rounding_scale(fwd, mult, a) for a in read)
                     + sum(s for a, s in zip(atoms, scored_scales) if a in tail))
            kappa = scale + sum(s for a, s in zip(atoms, scored_scales) if a not in tail)
            dt = jnp.sum(weighted(seed, difference(y, y0) if per_input else delta))
            dt = jnp.where(same, jnp.zeros_like(dt), dt)
            return res, certificate.pair_bound(total, size, kappa, dt,
                                               _bound_dtype(dt.dtype, computed_in), precision,
                                               scale)

        if all_targets:
            res, cert = jax.vmap(back)(jnp.eye(delta.shape[0], dtype=dtype))
        else:
            res, cert = back(seed if per_input else jnp.ones((), dtype))
        return res, delta, cert

    return pair


def _bound_dtype(dt_dtype, computed_in):
    """The type whose tolerances bound a pair: ``Δt``'s, or the least precise type the program
    computes it in where that is narrower (float32 operations inside a float64 program, as
    Keras computes a float64 model's means; half precision is evaluated in float32)."""
    if computed_in is None or jnp.finfo(computed_in).bits >= jnp.finfo(dt_dtype).bits:
        return dt_dtype
    return jnp.promote_types(computed_in, jnp.float32)


def narrowest_live_float(program):
    """The real float type with the fewest bits among the values the program computes from
    the input (the live operations' results, the steps of fused chains, loop bodies), ``None``
    if none is a real float. Complex values count by their real type."""
    dtypes = []
    for op in program.ops:
        if not op.is_live:
            continue
        dtypes += [program.avals[o].dtype for o in op.outs if isinstance(o, int)]
        for sub in op.body or ():
            if sub.eqn is not None:
                dtypes += [v.aval.dtype for v in sub.eqn.outvars if hasattr(v.aval, "dtype")]
        if op.sub is not None:  # a loop's body
            inner = narrowest_live_float(op.sub)
            dtypes += [] if inner is None else [inner]
    reals = []
    for d in dtypes:
        if jnp.issubdtype(d, jnp.complexfloating):
            d = jnp.finfo(d).dtype
        if jnp.issubdtype(d, jnp.floating):
            reals.append(jnp.dtype(d))
    return min(reals, key=lambda d: jnp.finfo(d).bits, default=None)


def _contribution(fwd, mult: dict, atom):
    """``C`` of a scored variable (zeros for a constant or a value no multiplier reached)."""
    if not isinstance(atom, int) or atom not in fwd.x:
        return jnp.zeros(jnp.shape(fwd.value(atom, "x")), jnp.float32)
    return interpreter.variable_contributions(fwd, mult, atom)


def _multiplier(fwd, mult: dict, atom):
    if not isinstance(atom, int) or atom not in fwd.x:
        return jnp.zeros(jnp.shape(fwd.value(atom, "x")), jnp.float32)
    return interpreter.variable_multipliers(fwd, mult, atom)


def values_read(program, scored) -> tuple[tuple, frozenset]:
    """``(frontier, read linearly)``: the variables whose rounding the certificate's ``κ̂``
    counts besides the scored ones — the *frontier*, values from which the target is reached
    through linear operations of one live operand only (the penultimate layer's activations, a
    product or a maximum that feeds the head) — and the scored variables that reach the
    target so themselves (an input of a linear model, a marked layer right below the head).
    There rounding of the forward pass enters ``Δt`` most: ``t = w·h + b`` with ``w·h ≈ −b``
    rounds at ``eps·Σ|w||h|``, which ``|m_h|·|h|`` measures, and ``|t|`` does not. (Every
    activation of a deep network would cost a pass over each per pair, as much as the backward
    pass itself; the frontier is one small layer.) Both make the scale ``s`` of the
    certificate's cap (:func:`jaxlift.certificate.pair_bound`)."""
    reach, frontier = _linear_tail(program)
    scored = set(scored)
    read = tuple(dict.fromkeys(a for a in frontier if isinstance(a, int) and a not in scored
                               and program.is_float(a)))
    return read, frozenset(a for a in scored if isinstance(a, int) and a in reach)


def _linear_tail(program) -> tuple[set, list]:
    """``(reach, frontier)``: the variables from which the target is reached through linear
    operations of one live operand only, and the outputs of the first operations (walking back
    from the target) that are not such — where the linear tail starts."""
    out = program.outputs[0]
    reach, frontier = {out} if isinstance(out, int) else set(), []
    for op in reversed(program.ops):
        if not op.is_live or not any(o in reach for o in op.outs):
            continue
        live = [a for a, l in zip(op.ins, op.live) if l]
        if op.eqn is not None and len(live) == 1 and _passes_linearly(op):
            reach.update(a for a in live if isinstance(a, int))
        else:
            frontier += [o for o in op.outs if o in reach]
    return reach, frontier


def _passes_linearly(op) -> bool:
    """An operation linear in its one live operand (a dense layer, a bias, a reshape …)."""
    return op.primitive in ("dot_general", "conv_general_dilated") or registry.is_linear(
        op.primitive, op.live) or op.primitive in _STRUCTURAL


_STRUCTURAL = frozenset(("reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims",
                         "slice", "dynamic_slice", "gather", "pad", "concatenate", "rev",
                         "reduce_sum", "reduce_window_sum", "copy", "copy_p", "stack", "split",
                         "unstack", "tile"))


def _rounding_scale(fwd, mult: dict, atom):
    """``Σ |m|·(|v| + |v0|)`` of a variable: how far rounding of its values can move ``t``
    (``|m|`` the larger of ``|m⁺|``, ``|m⁻|``; infinite values — a −inf mask — count 0: they
    carry no rounding)."""
    m = mult.get(atom) if isinstance(atom, int) else None
    if m is None:
        return 0.0
    size = _magnitude(m)
    return _dot_sum(size, _finite_magnitude(fwd.x[atom])) + _dot_sum(
        size, _finite_magnitude(fwd.r[atom]))


def _input_rounding_scale(fwd, mult: dict, atom, contributions):
    """:func:`_rounding_scale` of a live input, read off its contributions where it moved: an
    input's difference has one sign per element, so ``C = m±·Δx`` and ``|m±| = |C|/|Δx|``
    there; where it did not move (``Δx = 0``: a feature equal in input and reference, whose
    rounding still moves ``Δt``) its multipliers' larger magnitude, as for any value. One
    pass over what the certificate reads anyway (``C``) and over the multipliers where
    ``Δx = 0``, where the plain form kept ``|m|`` of every element per pair besides ``C``."""
    m = mult.get(atom)
    if m is None:
        return 0.0
    step = jnp.abs(difference(fwd.x[atom], fwd.r[atom])).astype(contributions.dtype)
    scale = (_finite_magnitude(fwd.x[atom]) + _finite_magnitude(fwd.r[atom])).astype(step.dtype)
    moved = step > 0
    read_off = jnp.abs(contributions) / jnp.where(moved, step, 1)
    return _dot_sum(jnp.where(moved, read_off, _magnitude(m).astype(step.dtype)), scale)


def _magnitude(m):
    """``|m|`` of split multipliers: the larger of ``|m⁺|``, ``|m⁻|`` (one array in Rescale)."""
    return jnp.abs(m.pos) if m.shared else jnp.maximum(jnp.abs(m.pos), jnp.abs(m.neg))


def _finite_magnitude(v):
    """``|v|``, 0 where ``v`` is infinite or NaN (one side's values: computed once per input or
    reference, not per pair)."""
    v = jnp.abs(widen(v))
    return jnp.where(jnp.isfinite(v), v, 0)


def _dot_sum(a, b=None):
    """``Σ a`` (``Σ a·b``) over every element, in reductions that fuse the work producing
    their operand (:func:`jaxlift._ops.sum_in_windows`: no temporary of the product, so a
    chunk's working set stays that of its scores)."""
    return sum_in_windows(a if b is None else a * b.astype(a.dtype))


def _squeeze_batch_axis(r, axis: int):
    """A marked layer was traced with a batch of one: drop that axis."""
    return jnp.squeeze(r, axis=axis) if r.ndim > axis and r.shape[axis] == 1 else r


def layer_structure(program, layer_name: str, leaves: list):
    """The scores of a marked layer's leaves in the structure that was marked: one array, the
    marked pytree, or a tuple of them for several sites of one name."""
    sites, k = [], 0
    for token, ids in program.markers[layer_name]:
        part = leaves[k:k + len(ids)]
        k += len(ids)
        tree = tree_of(token)
        sites.append(part[0] if tree is None else jax.tree_util.tree_unflatten(tree, part))
    return sites[0] if len(sites) == 1 else tuple(sites)


def check_layer(program, layer_name: str) -> None:
    if layer_name not in program.markers:
        known = ", ".join(sorted(program.markers)) or "none"
        source = getattr(program.source, "jaxpr", None)
        if source is not None and layer_name in _marked_in_loops(source):
            raise InputValueError(
                f"layer {layer_name!r} is marked inside the body of a loop (lax.scan, "
                "lax.while_loop or fori_loop; hk.dynamic_unroll, nn.scan and nn.RNN run their "
                "cell in one), where it has a value per step: a layer jaxlift scores must be one "
                "value every path to the target passes through, outside loops. Mark the loop's "
                f"output, or the value that enters it (marked layers outside loops: {known})")
        raise InputValueError(f"no layer named {layer_name!r} in fn (marked layers: {known}); mark "
                              "one with jaxlift.layer(value, name)")


def _marked_in_loops(jaxpr) -> set:
    """The names of the markers inside the bodies of ``jaxpr``'s loops (at any depth)."""
    names: set = set()

    def visit(jx, in_loop: bool) -> None:
        for eqn in jx.eqns:
            marker = marker_of(eqn)
            if marker is not None and in_loop:
                names.add(marker[0])
            loop = in_loop or eqn.primitive.name in ("scan", "while")
            for inner, _ in nested_jaxprs(eqn.params):
                visit(inner, loop)
    visit(jaxpr, False)
    return names


def compute(params, x, refs, ref_values=None, seeds=None, *, fn, target, composite, what,
            layer_name, per_input_refs, average, check_inputs=False, certify=False,
            poison=False, precision="default", bypass="refuse", xla_reductions=False,
            held=()):
    """Scores of N inputs × K references, ``Δt`` and the call's checks — the finite flag of
    :func:`jaxlift._ops.finite_flag` and the certificate's summary
    (:func:`jaxlift.certificate.summarize`) — all in the same program: no dispatch and no host
    sync before the result. Nothing in it depends on whether ``fn`` keeps the examples of a
    batch apart: the pipeline proves that (:mod:`jaxlift.independence`) or compares ``fn`` on a
    batch of two with a small program of its own (:func:`jaxlift.targets.batch_comparison`).
    ``ref_values`` (:func:`reference_values`, shared references only) holds the references'
    forward pass, computed once for all chunks; ``seeds`` ``(N, T)``: a per-input target's
    weights. ``poison``: NaN for the scores of pairs that fail the
    certificate (a caller's own ``jit``, where nothing can be raised). ``xla_reductions``:
    compiled with jaxlift's options (:mod:`jaxlift._compiler`), so reductions stay XLA's own
    and the average over references is a plain mean (:func:`jaxlift._ops.mean_axis`).
    ``held``: a flag per leaf of ``x``, the leaves equal to their references in every pair
    (:func:`jaxlift.references.held_leaves`): read as fixed per input, scored 0."""
    program, _ = traced_program(per_example(fn, target), params, example_structs(x, True),
                                held)
    if ref_values is not None and set(ref_values) != program.live_values():
        raise RuntimeError("jaxlift internal error: the references' forward values do not match "
                           "the traced program")
    if layer_name is not None:
        check_layer(program, layer_name)
    all_targets = isinstance(target, str) and target == "all"
    pair = pair_fn(program, composite, what, layer_name, target, certify, precision, bypass)
    fixed = jax.tree_util.tree_leaves(params)
    x_all = jax.tree_util.tree_leaves(x)
    held = tuple(held) or (False,) * len(x_all)
    x_leaves = [l for l, h in zip(x_all, held) if not h]
    r_leaves = [l for l, h in zip(jax.tree_util.tree_leaves(refs), held) if not h]
    per_input_fixed = [l for l, h in zip(x_all, held) if h]  # after the parameters, per input

    def pair_of(fixed, own, x_leaves, r_leaves, r_values, seed):
        return pair(fixed + own, x_leaves, r_leaves, r_values, seed)

    hoisted = None if ref_values is None else 0
    over_refs = jax.vmap(pair_of, in_axes=(None, None, None, 0, hoisted, None))
    over_pairs = jax.vmap(over_refs, in_axes=(None, 0, 0, 0 if per_input_refs else None, None,
                                              None if seeds is None else 0))
    with calls_inlined():  # the rules' jnp calls traced inline (docs/design.md §20.9)
        res, delta, (gap, bound) = over_pairs(fixed, per_input_fixed, x_leaves, r_leaves,
                                              ref_values, seeds)
    finite = finite_flag(res, delta, x, refs, check_inputs)
    summary = certificate.summarize(gap, bound) if certify else certificate.unchecked()
    if certify and poison:
        res = certificate.poisoned(res, gap <= bound)
    if layer_name is not None:
        n_layer = len(scored_atoms(program, layer_name))
        res = [_squeeze_batch_axis(r, 2 + all_targets) for r in res[:n_layer]] + res[n_layer:]
    if average:
        res = [mean_axis(r, 1, contraction=not xla_reductions) for r in res]
        delta = mean_axis(delta, 1, contraction=not xla_reductions)
    checks = {"finite": finite, **summary}
    if layer_name is not None:
        scores = layer_structure(program, layer_name, res[:n_layer])
        if bypass == "credit":
            scores = LayerScores(scores, jax.tree_util.tree_unflatten(
                jax.tree_util.tree_structure(x), _held_as_zeros(res[n_layer:], held, x_all)))
        return scores, delta, checks
    return (jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(x),
                                         _held_as_zeros(res, held, x_all)), delta, checks)


def _held_as_zeros(res: list, held: tuple, x_leaves: list) -> list:
    """Scores per leaf of ``x``: ``res`` (one per live leaf) with zeros in place of the held
    leaves (equal to their references in every pair: ``Δ = 0``, nothing to credit), shaped as
    the live leaves' scores are (their leading axes, the leaf's example shape)."""
    if not any(held):
        return res
    first = next(l for l, h in zip(x_leaves, held) if not h)  # res[0]'s leaf
    lead = res[0].shape[:res[0].ndim - (jnp.ndim(first) - 1)]
    live = iter(res)
    return [jnp.zeros(lead + jnp.shape(l)[1:], res[0].dtype) if h else next(live)
            for l, h in zip(x_leaves, held)]


class LayerScores(NamedTuple):
    """Scores at a marked layer with ``layer_bypass="credit"``: ``layer`` (the cut's own) and
    ``bypass`` (shaped like ``x``: the share of ``Δt`` that reaches the target around the cut,
    credited to the inputs it comes from; zeros where none does). Together they sum to ``Δt``."""

    layer: Any
    bypass: Any


def _reference_side(params, refs, *, fn, target):
    """The forward pass of K shared references (every live value, by id, with a leading K):
    computed once and handed to each chunk of inputs instead of re-running it per chunk."""
    program, _ = traced_program(per_example(fn, target), params, example_structs(refs, True))
    fixed = jax.tree_util.tree_leaves(params)
    with calls_inlined():
        return jax.vmap(lambda r: interpreter.side_values(program, fixed, r))(
            jax.tree_util.tree_leaves(refs))


@functools.lru_cache(maxsize=64)
def _reference_side_jit(fn, target, compiler=()):
    jitted = jax.jit(functools.partial(_reference_side, fn=fn, target=target),
                     compiler_options=dict(compiler) or None)
    return stored_programs.StoredProgram(jitted, functools.partial(
        stored_programs.program_fingerprint, fn=fn,
        static=(dict(target=target, side="references"), compiler)))


def reference_values(fn, target, params, refs):
    """:func:`_reference_side`, compiled once per ``(fn, target)`` (and kept by what it is made
    from, :mod:`jaxlift.stored_programs`)."""
    return memoized(_reference_side_jit, fn, target, options_here())(params, refs)


@functools.lru_cache(maxsize=256)
def compiled_program(fn, target, composite, what, layer_name, per_input_refs, average,
                     precision="default", check_inputs=False, certify=False, poison=False,
                     bypass="refuse", compiler=(), held=()):
    """One jitted :func:`compute` per key (``compiler``: XLA options,
    :func:`jaxlift._compiler.options_here`), its executables kept between processes where
    the program store is on (:mod:`jaxlift.stored_programs`, described by
    :func:`~jaxlift.stored_programs.program_fingerprint`). ``precision`` is part of the key
    (the program is traced and run under the pipeline's precision context, which JAX's own
    cache also keys on), so the default and ``"highest"`` programs never share a
    compilation."""
    static = dict(target=target, composite=composite, what=what, layer_name=layer_name,
                  per_input_refs=per_input_refs, average=average, check_inputs=check_inputs,
                  certify=certify, poison=poison, precision=precision, bypass=bypass,
                  xla_reductions=bool(compiler), held=tuple(held))
    jitted = jax.jit(functools.partial(compute, fn=fn, **static),
                     compiler_options=dict(compiler) or None)
    return stored_programs.StoredProgram(jitted, functools.partial(
        stored_programs.program_fingerprint, fn=fn, static=(static, compiler)))


def composite_of(method, opts: dict, max_mode: str = "preserving",
                 gating: str = "shapley") -> Composite:
    """Which rule where for ``method`` with its options: its composite (or
    ``composite(opts)`` when the method builds it from its options), with the ``max_mode`` and
    ``gating`` entries on top (:func:`jaxlift.rules.composites.resolve`)."""
    base = method.composite(opts) if callable(method.composite) else method.composite
    return resolve(base, max_mode, gating)


def certified(method, composite: Composite, check_completeness: str) -> bool:
    """Whether a call's scores are checked by the certificate: a method that promises
    completeness (``completeness="exact"``) whose composite chooses only exact rules (not
    ``max_mode="gradient"``, ``gating="gate_as_weight"``, nor a user's composite built on
    them), unless the user turned the check off. Others report their gap (``return_delta=True``,
    :func:`jaxlift.completeness_gap`) and are never refused for it."""
    return (check_completeness != "off" and method.completeness == "exact"
            and composite.exact)


def runner(call: Call, inputs: Inputs, chunked: bool) -> Callable:
    """``run(params, x, refs, start) -> (scores, Δt, checks)`` for one chunk of inputs whose
    first input is global input ``start`` (the Family protocol, :mod:`jaxlift.methods.call`).
    When the inputs run in several chunks against shared references, the references' forward
    pass runs once, here."""
    certify = certified(call.method, call.composite, call.check_completeness)
    program = memoized(compiled_program, call.fn, call.target, call.composite, call.what,
                       call.layer, inputs.per_input, call.average_refs, call.precision,
                       inputs.check_inputs, certify, certify and not inputs.concrete,
                       call.layer_bypass, options_here(), inputs.held)
    ref_values = (reference_values(call.fn, call.target, inputs.params, inputs.refs)
                  if chunked and not inputs.per_input else None)
    seeds, n = inputs.seeds, inputs.n
    # all of them, on the device once: a call that runs as one chunk (and every repeat of it on
    # the one-dispatch path) passes them without a slice and a transfer per call
    # (device_put: jnp.asarray compiles a staging program per shape in JAX 0.10)
    whole = None if seeds is None or chunked or not inputs.concrete else jax.device_put(seeds)

    def run(p, x, r, start):
        rows = jax.tree_util.tree_leaves(x)[0].shape[0]
        if whole is not None and start == 0 and rows == n:
            s = whole
        else:
            s = None if seeds is None else take_rows(seeds, start, rows, n)
        return program(p, x, r, ref_values, s)
    run.program = program  # what it compiles: the key of chunking.one_chunk_rows
    return run


def lowered_text(fn, params, x, refs, *, target=None, composite: Composite = COMPOSITES["rescale"],
                 what="contributions", precision="default", check_inputs=True) -> str:
    """The StableHLO text of the one-chunk program for these arguments (shared references
    ``(K, *S)``); the caller traces it under the precision context it inspects."""
    run = compiled_program(fn, target, composite, what, None, False, True, precision, check_inputs)
    return run.lower(params, x, refs).as_text()


# ---------------------------------------------------------------------------------------------
# Reference-free methods on the interpreter (guided backprop, ε-LRP)

def multipliers_at_input(f: Callable, params, x, composite) -> Any:
    """The backward pass of ``composite`` with the reference equal to the input: every
    point-dependent rule takes its derivative at ``x`` (max-pooling routes to the argmax of
    ``x``, linear ops transpose), the composite's nonlinearity rule replaces the chain rule.
    ``f(params, x_example)`` returns the target (a scalar, or ``(T,)``); the result is shaped
    like ``x`` (with a leading T axis for a vector target)."""
    program, _ = traced_program(f, params, example_structs(x, False))
    out = program.outputs[0]
    all_targets = isinstance(out, int) and len(program.avals[out].shape) == 1
    pair = pair_fn(program, resolve(composite, "gradient"), "multipliers", None,
                   "all" if all_targets else None)
    x_leaves, tree = jax.tree_util.tree_flatten(x)
    with calls_inlined():
        res, _, _ = pair(jax.tree_util.tree_leaves(params), x_leaves, x_leaves)
    return jax.tree_util.tree_unflatten(tree, res)


# ---------------------------------------------------------------------------------------------
# Non-finite scores: find where they came from

def _one_pair_leaves(params, x, refs, i: int, held: tuple):
    """``(fixed, x_leaves, refs' leaves)`` of input ``i`` as :func:`compute` hands them to a
    pair: the held leaves of ``x`` (fixed per input) after the parameters, and the live ones."""
    x_all = [l[i] for l in jax.tree_util.tree_leaves(x)]
    held = tuple(held) or (False,) * len(x_all)
    fixed = jax.tree_util.tree_leaves(params) + [l for l, h in zip(x_all, held) if h]
    r_all = [l for l, h in zip(jax.tree_util.tree_leaves(refs), held) if not h]
    return fixed, [l for l, h in zip(x_all, held) if not h], r_all


def refuse_non_finite(i: int, *, fn, params, x, refs, target, composite: Composite, layer_name,
                      per_input, seeds=None, held=()) -> None:
    """Raise :class:`NonFiniteScoresError` for input ``i`` (whose score or ``Δt`` is NaN/Inf),
    naming the primitive whose multipliers first stopped being finite (found by re-running that
    input's pairs, one at a time, outside ``jit``)."""
    program, _ = traced_program(per_example(fn, target), params, example_structs(x, True),
                                held)
    fixed, x_leaves, r_all = _one_pair_leaves(params, x, refs, i, held)
    k = (r_all[0].shape[1] if per_input else r_all[0].shape[0])
    out = program.outputs[0]
    for j in range(k):
        r_leaves = [l[i, j] if per_input else l[j] for l in r_all]
        fwd = interpreter.forward(program, composite, fixed, x_leaves, r_leaves)
        for side, values in (("input", fwd.x), ("reference", fwd.r)):
            if program.is_live(out) and not bool(jnp.all(jnp.isfinite(values[out]))):
                raise NonFiniteScoresError(
                    f"fn's target is NaN or Inf at the {side} of pair (input {i}, reference "
                    f"{j}); jaxlift explains finite outputs only")
        if not program.is_live(out):
            continue
        seed = jnp.ones(jnp.shape(fwd.x[out]), difference(fwd.x[out], fwd.r[out]).dtype)
        if isinstance(target, PerInput):
            seed = seed_of(None if seeds is None else seeds[i], fwd.x[out]).astype(seed.dtype)

        def inspect(op, m_out, m_in, j=j, fwd=fwd):
            came_finite = all(m is None or bool(jnp.all(jnp.isfinite(m.pos)))
                              for m in m_out)
            went_bad = any(m is not None and not (bool(jnp.all(jnp.isfinite(m.pos)))
                                                  and bool(jnp.all(jnp.isfinite(m.neg))))
                           for m in m_in)
            if came_finite and went_bad:
                why = ("it picks a −inf or finfo.min mask bias by a predicate that differs "
                       "between input and reference, and the bias's difference times any "
                       "multiplier has no float value. Hold the mask fixed per example (pass "
                       "it as an input of its own with references equal to the input's own: "
                       "jaxlift.references.hold)" if _switches_a_mask_bias(op, fwd) else
                       "its input differs between input and reference by less than the float "
                       "type can divide by (a step or a very steep function crossed within a "
                       "tiny interval). Use a reference further from the input, or float64 "
                       "(jax_enable_x64)")
                raise NonFiniteScoresError(
                    f"jaxlift's multipliers overflowed at primitive '{op.primitive}' (at "
                    f"{op.where}) for pair (input {i}, reference {j}): {why}",
                    op.primitive, op.where)

        interpreter.backward(fwd, {out: seed}, stop=frozenset(
            a for a in scored_atoms(program, layer_name) if isinstance(a, int))
            if layer_name is not None else frozenset(), inspect=inspect)
    raise NonFiniteScoresError(
        f"jaxlift produced NaN or Inf scores for input {i}; no single operation could be "
        "blamed (the product of finite multipliers overflowed). Use float64 (jax_enable_x64) "
        "or rescale the inputs")


def _switches_a_mask_bias(op, fwd) -> bool:
    """Whether ``op`` is a select whose cases hold a −inf or finfo.min-sized value (a mask
    bias) on either side."""
    if op.primitive != "select_n":
        return False
    for a in op.ins[1:]:
        for side in ("x", "r"):
            v = fwd.value(a, side)
            if jnp.issubdtype(jnp.result_type(v), jnp.floating) and bool(
                    jnp.any(jnp.abs(widen(v)) >= jnp.finfo(jnp.result_type(v)).max / 4)):
                return True
    return False


def refuse(call: Call, inputs: Inputs, i: int) -> None:
    """The Family protocol's hook: :func:`refuse_non_finite` for input ``i``."""
    refuse_non_finite(i, fn=call.fn, params=inputs.params, x=inputs.x, refs=inputs.refs,
                      target=call.target, composite=call.composite, layer_name=call.layer,
                      per_input=inputs.per_input, seeds=inputs.seeds, held=inputs.held)


# ---------------------------------------------------------------------------------------------
# A failed certificate: why

def explain_gap(call: Call, inputs: Inputs, summary: dict) -> str:
    """The Family protocol's hook for a failed certificate: the likely cause, read off the
    program and the worst pair (:func:`diagnose_pair`)."""
    i, j = summary["where_tuple"][:2]
    t = summary["where_tuple"][2] if len(summary["where_tuple"]) > 2 else None
    try:
        return diagnose_pair(call.fn, inputs.params, inputs.x, inputs.refs, i, j, t,
                             target=call.target, composite=call.composite,
                             layer_name=call.layer, per_input=inputs.per_input,
                             seed=None if inputs.seeds is None else inputs.seeds[i],
                             held=inputs.held)
    except Exception as exc:  # the diagnosis must never hide the refusal itself
        return f"(jaxlift could not diagnose the cause: {type(exc).__name__}: {exc})"


def diagnose_pair(fn, params, x, refs, i: int, j: int, t: int | None, *, target, composite,
                  layer_name, per_input, precision="default", seed=None, held=()) -> str:
    """Re-run pair (input ``i``, reference ``j``[, target ``t``]) and say where ``Δt`` was lost:
    a path around the marked layer (with its junction and origin lines), or the operation whose
    rule did not conserve ``Σ m·Δ`` (``Σ`` over its outputs ≠ ``Σ`` over its inputs), noting
    NaN/Inf among its operands (a NaN hidden by a select, a −inf mask)."""
    program, _ = traced_program(per_example(fn, target), params, example_structs(x, True),
                                held)
    fixed, x_leaves, r_all = _one_pair_leaves(params, x, refs, i, held)
    r_leaves = [l[i, j] if per_input else l[j] for l in r_all]
    stop = frozenset(a for a in scored_atoms(program, layer_name) if isinstance(a, int)) \
        if layer_name is not None else frozenset()
    out = program.outputs[0]
    seen: list = []

    def run(fixed, x_leaves, r_leaves):
        fwd = interpreter.forward(program, composite, fixed, x_leaves, r_leaves)
        y, y0 = fwd.x[out], fwd.r[out]
        dt_all = difference(y, y0)
        if isinstance(target, PerInput):
            weights = seed_of(seed, y).astype(dt_all.dtype)
        elif t is None:
            weights = jnp.ones((), dt_all.dtype)
        else:
            weights = jnp.zeros(dt_all.shape, dt_all.dtype).at[t].set(1)
        losses, scales, grows, bad, lost = [], [], [], [], []

        def inspect(op, m_out, m_in):
            c_out = [_contribution_of(fwd, o, m) for o, m in zip(op.outs, m_out)
                     if m is not None and program.carries(o)]
            c_in = [_contribution_of(fwd, a, m) for a, m, l in zip(op.ins, m_in, op.live)
                    if m is not None and l and program.carries(a)]
            losses.append(sum(jnp.sum(c) for c in c_out) - sum(jnp.sum(c) for c in c_in))
            size_out = sum(jnp.sum(jnp.abs(c)) for c in c_out)
            size_in = sum(jnp.sum(jnp.abs(c)) for c in c_in)
            scales.append(size_out + size_in)
            # how much larger the terms it hands back are than those it was given: where the
            # terms that cancel are made
            grows.append(jnp.where(size_out > 0, size_in / jnp.where(size_out > 0, size_out, 1),
                                   0) if c_out and c_in else jnp.zeros(()))
            values = [widen(fwd.value(a, side)) for a in op.ins if isinstance(a, int)
                      for side in ("x", "r") if a in fwd.x or a in fwd.fixed]
            bad.append(jnp.any(jnp.stack([~jnp.all(jnp.isfinite(v)) for v in values]))
                       if values else jnp.asarray(False))
            parts = [p for m in m_in if m is not None for p in (m.pos, m.neg)]
            lost.append(jnp.any(jnp.stack([~jnp.all(jnp.isfinite(p)) for p in parts]))
                        if parts else jnp.asarray(False))
            seen.append(op)

        mult = interpreter.backward(fwd, {out: weights}, stop=stop, inspect=inspect)
        around = sum((jnp.sum(_contribution_of(fwd, a, mult[a]))
                      for a in program.live_inputs if a in mult and a not in stop), 0.0)
        dt = jnp.sum(weights * dt_all)
        stack = lambda v: jnp.stack(v) if v else jnp.zeros((0,))  # noqa: E731
        return stack(losses), stack(scales), stack(grows), stack(bad), stack(lost), around, dt

    losses, scales, grows, bad, lost, around, dt = jax.device_get(
        jax.jit(run)(fixed, x_leaves, r_leaves))
    paths = [path for (path, _), h in zip(jax.tree_util.tree_leaves_with_path(x),
                                           tuple(held) or (False,) * len(x_leaves)) if not h]
    names = {i: "x" + jax.tree_util.keystr(path) for i, path in zip(program.live_inputs, paths)}
    eps = float(jnp.finfo(jnp.result_type(dt)).eps)
    # fn casts float64 inputs down (a model built with dtype=float32): x64 alone does not help
    cast_down = eps > 1e-10 and any(jnp.result_type(l) == jnp.float64 for l in x_leaves)
    return cause_of(program, seen, losses, scales, bad, lost, float(around), float(dt),
                    layer_name, names, eps, split=composite.carries_split,
                    cast_down=cast_down, flat_reference=_flat(r_leaves), grows=grows)


def _flat(leaves) -> bool | None:
    """Whether a reference is one constant value throughout (zeros, a flat colour) — the
    reference that puts a normalization at its pole — ``False`` where its float leaves vary,
    ``None`` where it has other leaves (token ids: what they embed to is not known here)."""
    arrays = [np.asarray(l) for l in leaves]
    if not arrays or any(not np.issubdtype(a.dtype, np.floating) for a in arrays):
        return None
    return all(a.size == 0 or np.ptp(a) == 0 for a in arrays)


def _contribution_of(fwd, atom, m):
    """``m⁺·Δ⁺ + m⁻·Δ⁻`` of one variable (its split, or ``m·Δ``)."""
    if fwd.composite.carries_split and atom in fwd.split:
        pos, neg = fwd.split[atom]
        return m.pos * pos + m.neg * neg
    return m.pos * fwd.delta(atom)


ROUNDING_LEVEL = 64  # a loss within this many ulps of its operation's scale is its rounding
CANCELLATION_ONSET = 1e3  # scores this much larger than Δt's own scale are cancelling
# terms up to about this many times Δt's own scale cancel within float64's bound (rtol 1e-9 of
# t's scale against a few ulps, 2.2e-16 each, of the terms; a LayerNorm at variance 0 with
# BERT's ε: 1e6, resolved; equimo's Mlla GroupNorm at a black image: 4e10, refused in float64)
FLOAT64_RESOLVES = 1e7


def _cancellation(ops: list, scales, dt: float, eps: float, split: bool = False,
                  cast_down: bool = False, flat_reference: bool | None = None,
                  grows=None) -> str:
    """Words for a pair whose every rule conserved ``Σ m·Δ`` to its rounding, but whose
    contributions are so much larger than ``Δt`` that this rounding alone misses the bound
    (docs/design.md §18.1): the operation that makes them — of those whose terms exceed
    ``CANCELLATION_ONSET`` times ``Δt``'s scale, the one that hands back the largest terms for
    the terms it was given (``grows``: ``Σ|C|`` of its operands ÷ ``Σ|C|`` of its results; a
    normalization at its pole, not a layer between two of them that the growing terms merely
    pass); else where their size first exceeds that, walking back from the target — and the
    fixes — in RevealCancel modes Rescale first (its parts do not grow apart);
    a varied reference where the pair's is constant (``flat_reference``, :func:`_flat`), one
    nearer the input where it already varies; float64. ``cast_down``: the inputs are float64
    and the target float32 — ``fn`` computes in float32 whatever it is given, so the float64
    fix is to build the model in float64."""
    base = max(abs(dt), float(scales[0]) if len(scales) else 0.0)
    onset = next((k for k, s in enumerate(scales) if s > CANCELLATION_ONSET * base), None)
    onset = int(np.argmax(scales)) if onset is None else onset
    if grows is not None and len(grows):
        made = np.where((np.asarray(scales) > CANCELLATION_ONSET * base)
                        & np.isfinite(grows), grows, 0.0)
        if made.max() > 1.0:
            onset = int(np.argmax(made))
    precision = "float64" if eps < 1e-10 else "float32"
    parts = (" In RevealCancel modes the positive and negative parts of a difference can "
             "grow far apart where they cancel (each is taken through the operations at points "
             "the network never visited, x0 + Δx⁺ and x0 + Δx⁻), beyond what Rescale's single "
             "multipliers do: mode='rescale' may resolve it." if split else "")
    if flat_reference is False:
        where = (" This pair's reference is not constant, so it is not the usual case (a "
                 "constant reference that gives a normalization a variance of 0); the input "
                 "and the reference still put some operation at very different scales (a "
                 "normalization or a quotient whose variance or denominator is near 0 on one "
                 "side): a reference nearer the input (a blurred copy of it, the data's mean) "
                 "may resolve it.")
    else:
        where = (" Most often the input and the reference put some operation at very "
                 "different scales (a normalization or a quotient whose variance or denominator "
                 "is near 0 on one side, as a constant reference gives a LayerNorm with a tiny "
                 "epsilon): a reference that keeps it away from there (a blurred copy of the "
                 "input, noise, the data's mean) resolves it.")
    growth = float(np.max(scales)) / base if base > 0 else float("inf")
    if eps < 1e-10 or growth > FLOAT64_RESOLVES:
        wider = ("" if eps < 1e-10 else
                 f"float64 will not resolve it either: the terms are {growth:.1e} times Δt's "
                 f"own scale, beyond the ~{FLOAT64_RESOLVES:.0e} that float64's bound "
                 "resolves.")
        return (f"Cause: the contributions cancel beyond what {precision} resolves. From "
                f"primitive '{ops[onset].primitive}' at {_where_text(ops[onset].where)} down, "
                f"terms of size up to {float(np.max(scales)):.3g} add up to Δt = {dt:.3g}; "
                "every rule conserves Σ m·Δ to its rounding, and that rounding alone is more "
                f"than Δt's own scale allows.{parts}{where} {wider}").rstrip()
    return (f"Cause: the contributions cancel beyond what {precision} resolves. From primitive "
            f"'{ops[onset].primitive}' at {_where_text(ops[onset].where)} down, terms of size "
            f"up to {float(np.max(scales)):.3g} add up to Δt = {dt:.3g}; every rule conserves "
            "Σ m·Δ to its rounding, and that rounding alone is more than Δt's own scale "
            f"allows.{parts}{where} " + (
                "float64 would resolve it in any mode, but fn computes in float32 though its "
                "inputs are float64: it casts them (a model built with dtype=jnp.float32, as "
                "Hugging Face Flax models and Flax layers with dtype= are, or an astype); build "
                "it with dtype=jnp.float64 and float64 parameters." if cast_down else
                "float64 resolves it in any mode (jax.config.update('jax_enable_x64', True) "
                "with float64 parameters and inputs)."))


UNRESOLVED_SHARE = 1e6  # a share around a cut this many times max(|Δt|, 1): a mask bias's


def cause_of(program, ops: list, losses, scales, bad, lost, around: float, dt: float,
             layer_name, input_names: dict | None = None, eps: float = 2.0 ** -23,
             split: bool = False, cast_down: bool = False,
             flat_reference: bool | None = None, grows=None) -> str:
    """Words for :func:`diagnose_pair`'s findings, per operation in the order the backward pass
    met them: ``losses`` (``Σ`` out − ``Σ`` in of ``m·Δ``), ``scales``, ``bad`` (NaN/Inf among
    the operands' values) and ``lost`` (NaN/Inf among the multipliers it produced); ``eps``
    that of the float type the pair was evaluated in; ``split``: the mode carries positive and
    negative parts (RevealCancel); ``cast_down``: ``fn`` evaluated float64 inputs in float32;
    ``flat_reference``: the pair's reference is one constant value (:func:`_flat`); ``grows``:
    per operation, ``Σ|m·Δ|`` of its operands ÷ that of its results."""
    if layer_name is not None and around != 0:  # NaN too: a −inf/finfo.min mask around it
        # a share far beyond Δt: multipliers of a finfo.min mask bias times its difference
        resolved = bool(np.isfinite(around)) and abs(around) <= UNRESOLVED_SHARE * max(
            abs(dt), 1.0)
        share = (f"{around:.3g} of Δt = {dt:.3g}" if resolved else
                 f"with multipliers {'of' if np.isfinite(around) else 'beyond'} the size of a "
                 f"−inf or finfo.min mask bias's difference, which no float type resolves "
                 f"({around:.3g}); Δt = {dt:.3g}")
        return (f"Cause: part of Δt reaches the target around layer {layer_name!r} ({share}): "
                + describe_bypasses(program, layer_name, input_names, credit=resolved))
    first_nan = next((k for k in range(len(lost)) if lost[k]), None)
    if first_nan is not None:
        op = ops[first_nan]
        values = (" Its operands hold NaN or Inf on the input or the reference side (a −inf "
                  "mask, an overflow)." if bad[first_nan] else "")
        return (f"Cause: multipliers stop being finite at primitive '{op.primitive}' at "
                f"{_where_text(op.where)}, and a guard further on (a select, a product's "
                f"finite check) dropped them with part of the difference.{values} Report it "
                "(with this message) if the rule is jaxlift's.")
    finite = np.where(np.isfinite(losses), np.abs(losses), 0) if len(losses) else losses
    if len(losses) and finite.max() > 0:
        k = int(np.argmax(finite))
        op = ops[k]
        if finite[k] <= ROUNDING_LEVEL * eps * scales[k]:
            return _cancellation(ops, scales, dt, eps, split, cast_down, flat_reference,
                                 grows)
        nan = (" Its operands hold NaN or Inf on the input or the reference side: a NaN or "
               "an infinite value masked by a select (jnp.where) or a −inf mask." if bad[k]
               else "")
        body = " (in its body)" if op.sub is not None else ""
        return (f"Cause: the rule for primitive '{op.primitive}'{body} at {_where_text(op.where)} "
                f"does not conserve Σ m·Δ: {losses[k]:.3g} of Δt (its scale {scales[k]:.3g}) "
                f"is lost there.{nan} Report it (with this message) if the rule is jaxlift's; "
                "a rule of your own composite is the first suspect.")
    return ("Cause: no single operation loses the difference; rounding accumulated along the "
            "program exceeds the bound (float32 at large offsets?). Use float64 "
            "(jax.config.update('jax_enable_x64', True)), or check_completeness='warn'.")


def describe_bypasses(program, layer_name: str, input_names: dict | None = None,
                      credit: bool = True) -> str:
    """The paths around a marked layer: where each joins the layer's descendants (primitive and
    line) and what joins there (the input, or the operation computing it), with the fixes.
    ``input_names``: live input id -> a name (``"x['mask']"``); ``credit``: whether
    ``layer_bypass="credit"`` is among them (not where the share is a mask bias's)."""
    below = set(a for a in program.marked_ids(layer_name) if isinstance(a, int))
    parts, seen = [], set()
    for op in program.ops:
        if not op.is_live or not any(l and a in below for a, l in zip(op.ins, op.live)):
            continue
        below.update(op.outs)
        for a in (a for a, l in zip(op.ins, op.live) if l and a not in below):
            source = view_of_input(program, a)
            origin = None if source is not None else origin_of(program, a)
            key = source if source is not None else id(origin)
            if key in seen:
                continue
            seen.add(key)
            what = ((input_names or {}).get(source, "an input of fn") if source is not None
                    else f"a value computed by '{origin.primitive}' at "
                    f"{_where_text(origin.where)}" if origin is not None else "a constant")
            parts.append(f"'{op.primitive}' at {_where_text(op.where)} also reads {what}, "
                         "which does not pass through the layer")
    if not parts:
        parts = ["the target depends on the inputs through values that do not pass through "
                 "the layer"]
    last = ("; or pass layer_bypass='credit' to get the inputs' share beside the layer's."
            if credit else ". layer_bypass='credit' cannot help here: a mask bias's share has no "
            "float value to credit.")
    return ("; ".join(parts[:3]) + ". Fixes: mark a value every path passes through (the sum "
            "of a residual block, not its branch); hold what goes around fixed per example (an "
            "attention or padding mask: pass it as an input of its own with per-input "
            "references equal to the input's own, jaxlift.references.hold)" + last)


def _where_text(where) -> str:
    return where.described() if hasattr(where, "described") else str(where)


__all__ = ["LayerScores", "compute", "compiled_program", "composite_of", "diagnose_pair",
           "explain_gap", "lowered_text", "multipliers_at_input", "pair_fn",
           "reference_values", "refuse", "refuse_non_finite", "runner", "same_example"]
