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
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jaxlift import interpreter
from jaxlift._memo import memoized
from jaxlift._ops import difference, example_structs, finite_flags, mean_axis
from jaxlift.errors import NonFiniteScoresError
from jaxlift.interpreter import Config
from jaxlift.program import build_program
from jaxlift.targets import per_example


def same_example(x_leaves, r_leaves):
    """Whether input and reference are the same example (every leaf equal)."""
    same = jnp.asarray(True)
    for a, b in zip(x_leaves, r_leaves):
        same = same & jnp.all(a == b)
    return same


def pair_fn(program, config: Config, what: str, layer_name: str | None, all_targets: bool):
    """``pair(fixed_leaves, x_leaves, r_leaves, r_values=None) -> (scores, Δt)`` of one pair:
    contributions ``m·Δx`` or multipliers ``m`` of every live input (or of the marked layer),
    with a leading T axis for ``all_targets``."""
    out_atom = program.outputs[0]
    marked = None if layer_name is None else program.markers[layer_name]

    def pair(fixed_leaves, x_leaves, r_leaves, r_values=None):
        fwd = interpreter.forward(program, config, fixed_leaves, x_leaves, r_leaves, r_values)
        if program.is_live(out_atom):
            y, y0 = fwd.x[out_atom], fwd.r[out_atom]
        else:
            y = y0 = fwd.value(out_atom, "x")
        # x == r: Δt = 0 and every score 0, exactly, whichever kernels computed the two sides
        same = same_example(x_leaves, r_leaves if r_values is None else
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


def _squeeze_batch_axis(r, axis: int):
    """A marked layer was traced with a batch of one: drop that axis."""
    return jnp.squeeze(r, axis=axis) if r.ndim > axis and r.shape[axis] == 1 else r


def compute(params, x, refs, ref_values=None, *, fn, target, config, what, layer_name,
            per_input_refs, average, check_inputs=False):
    """Scores of N inputs × K references, ``Δt``, and the finite flags of
    :func:`jaxlift._ops.finite_flags` (computed in the same program: no dispatch and no host
    sync before the result); ``ref_values`` (:func:`reference_values`, shared references only)
    holds the references' forward pass, computed once for all chunks."""
    program, _ = build_program(per_example(fn, target), params, example_structs(x, True))
    if ref_values is not None and set(ref_values) != program.live_values():
        raise RuntimeError("jaxlift internal error: the references' forward values do not match "
                           "the traced program")
    if layer_name is not None and layer_name not in program.markers:
        known = ", ".join(sorted(program.markers)) or "none"
        raise ValueError(f"no layer named {layer_name!r} in fn (marked layers: {known}); mark "
                         "one with jaxlift.layer(value, name)")
    all_targets = isinstance(target, str) and target == "all"
    pair = pair_fn(program, config, what, layer_name, all_targets)
    fixed = jax.tree_util.tree_leaves(params)
    x_leaves = jax.tree_util.tree_leaves(x)
    r_leaves = jax.tree_util.tree_leaves(refs)
    hoisted = None if ref_values is None else 0
    over_refs = jax.vmap(pair, in_axes=(None, None, 0, hoisted))
    over_pairs = jax.vmap(over_refs, in_axes=(None, 0, 0 if per_input_refs else None, None))
    res, delta = over_pairs(fixed, x_leaves, r_leaves, ref_values)
    finite = finite_flags(res, delta, x, refs, check_inputs)
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
    program, _ = build_program(per_example(fn, target), params, example_structs(refs, True))
    fixed = jax.tree_util.tree_leaves(params)
    return jax.vmap(lambda r: interpreter.side_values(program, fixed, r))(
        jax.tree_util.tree_leaves(refs))


@functools.lru_cache(maxsize=64)
def _reference_side_jit(fn, target):
    return jax.jit(functools.partial(_reference_side, fn=fn, target=target))


def reference_values(fn, target, params, refs):
    """:func:`_reference_side`, compiled once per ``(fn, target)``."""
    return memoized(_reference_side_jit, fn, target)(params, refs)


@functools.lru_cache(maxsize=256)
def compiled_program(fn, target, config, what, layer_name, per_input_refs, average,
                     precision="default", check_inputs=False):
    """One jitted :func:`compute` per key. ``precision`` is part of the key (the program is
    traced and run under the pipeline's precision context, which JAX's own cache also keys
    on), so the default and ``"highest"`` programs never share a compilation."""
    return jax.jit(functools.partial(
        compute, fn=fn, target=target, config=config, what=what, layer_name=layer_name,
        per_input_refs=per_input_refs, average=average, check_inputs=check_inputs))


def config_of(method, opts: dict, max_mode: str, gating: str) -> Config:
    """The interpreter's :class:`~jaxlift.interpreter.Config` for ``method`` (its composite,
    or ``composite(opts)`` when the method builds it from its options)."""
    composite = method.composite(opts) if callable(method.composite) else method.composite
    return Config(mode=composite, max_mode=max_mode, gating=gating)


def runner(method, opts, *, fn, target, what, layer_name, per_input, average, precision,
           check_inputs, max_mode, gating, params, refs, chunked, **_) -> Callable:
    """``run(params, x, refs, start) -> (scores, Δt, finite flags)`` for one chunk of inputs
    (``start``, the chunk's first input, is not needed here). When the inputs run in several
    chunks against shared references, the references' forward pass runs once, here."""
    config = config_of(method, opts, max_mode, gating)
    program = memoized(compiled_program, fn, target, config, what, layer_name, per_input,
                       average, precision, check_inputs)
    ref_values = (reference_values(fn, target, params, refs)
                  if chunked and not per_input else None)

    def run(p, x, r, start):
        return program(p, x, r, ref_values)
    return run


def lowered_text(fn, params, x, refs, *, target=None, config: Config = Config(),
                 what="contributions", precision="default", check_inputs=True) -> str:
    """The StableHLO text of the one-chunk program for these arguments (shared references
    ``(K, *S)``); the caller traces it under the precision context it inspects."""
    run = compiled_program(fn, target, config, what, None, False, True, precision, check_inputs)
    return run.lower(params, x, refs).as_text()


# ---------------------------------------------------------------------------------------------
# Reference-free methods on the interpreter (guided backprop, ε-LRP)

def multipliers_at_input(f: Callable, params, x, composite) -> Any:
    """The backward pass of ``composite`` with the reference equal to the input: every
    point-dependent rule takes its derivative at ``x`` (max-pooling routes to the argmax of
    ``x``, linear ops transpose), the composite's nonlinearity rule replaces the chain rule.
    ``f(params, x_example)`` returns the target (a scalar, or ``(T,)``); the result is shaped
    like ``x`` (with a leading T axis for a vector target)."""
    program, _ = build_program(f, params, example_structs(x, False))
    out = program.outputs[0]
    all_targets = isinstance(out, int) and len(program.avals[out].shape) == 1
    pair = pair_fn(program, Config(mode=composite, max_mode="gradient"), "multipliers", None,
                   all_targets)
    x_leaves, tree = jax.tree_util.tree_flatten(x)
    res, _ = pair(jax.tree_util.tree_leaves(params), x_leaves, x_leaves)
    return jax.tree_util.tree_unflatten(tree, res)


# ---------------------------------------------------------------------------------------------
# Non-finite scores: find where they came from

def refuse_non_finite(i: int, *, fn, params, x, refs, target, config: Config, layer_name,
                      per_input) -> None:
    """Raise :class:`NonFiniteScoresError` for input ``i`` (whose score or ``Δt`` is NaN/Inf),
    naming the primitive whose multipliers first stopped being finite (found by re-running that
    input's pairs, one at a time, outside ``jit``)."""
    program, _ = build_program(per_example(fn, target), params, example_structs(x, True))
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


def refuse(i: int, *, method, opts, fn, params, x, refs, target, layer_name, per_input,
           max_mode, gating, **_) -> None:
    """The pipeline's hook: :func:`refuse_non_finite` with this method's config."""
    refuse_non_finite(i, fn=fn, params=params, x=x, refs=refs, target=target,
                      config=config_of(method, opts, max_mode, gating), layer_name=layer_name,
                      per_input=per_input)


__all__ = ["compute", "compiled_program", "config_of", "lowered_text", "multipliers_at_input",
           "pair_fn", "reference_values", "refuse", "refuse_non_finite", "runner",
           "same_example"]
