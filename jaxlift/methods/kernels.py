"""The kernel family: methods defined by a function of one (input, reference) pair or one input.

:func:`runner` is what the pipeline calls for a method of ``scope="pair"`` or ``scope="input"``
(:mod:`jaxlift.methods.base`): the method's ``kernel`` ``vmap``ped over the N inputs of a chunk
(and their K references), ``Δt = t(x) − t(r)`` of every pair, multipliers ``attr/Δx`` where the
kernel gives none, averaging over references and the finite flag, all in one compiled program.
Each input's PRNG key is ``fold_in(key, global input index)``, so results do not depend on how
the inputs are chunked.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxlift import certificate, stored_programs
from jaxlift._memo import memoized
from jaxlift._ops import finite_flag, mean_axis
from jaxlift.chunking import take_rows
from jaxlift.errors import InputTypeError, NonFiniteScoresError
from jaxlift.methods.call import Call, Inputs
from jaxlift.targets import (PerInput, per_example, predicted_seed,
                             weigh, weighted)


def targets_of_pairs(g, params, x, refs, per_input_refs: bool, seeds=None):
    """``(t(x), t(r))`` of every pair, ``(N, K[, T])`` each: ``g`` is the example's target (a
    scalar, or ``(T,)``); ``seeds`` ``(N, T)`` weigh ``g``'s vector per input (a per-input
    target)."""
    t_x = jax.vmap(lambda xe: g(params, xe))(x)
    if per_input_refs:
        t_r = jax.vmap(jax.vmap(lambda re: g(params, re)))(refs)
    else:
        t_r = jax.vmap(lambda re: g(params, re))(refs)[None]
    if seeds is not None:
        t_x = jnp.sum(weighted(seeds, t_x), axis=-1)
        t_r = jnp.sum(weighted(seeds[:, None], t_r), axis=-1)
    k = t_r.shape[1]
    t_x = jnp.broadcast_to(t_x[:, None], (t_x.shape[0], k) + t_x.shape[1:])
    return t_x, jnp.broadcast_to(t_r, t_x.shape)


def ratio_multipliers(attr, x, refs, per_input_refs: bool):
    """``attr/Δx`` per pair (0 where ``Δx = 0``): ``attr`` is ``(N, K, [T,] *S)`` per leaf."""
    def to_mult(a, xl, rl):
        d = (xl[:, None] - rl) if per_input_refs else (xl[:, None] - rl[None])
        d = d.reshape(d.shape[:2] + (1,) * (a.ndim - d.ndim) + d.shape[2:])
        safe = jnp.where(d == 0, jnp.ones_like(d), d)
        return jnp.where(d == 0, jnp.zeros_like(a), a / safe)
    return jax.tree_util.tree_map(to_mult, attr, x, refs)


def compute(params, x, refs, arrays, key, start, seeds=None, *, method, opts_key, fn, target,
            what, per_input_refs, average, check_inputs=False):
    """Scores ``(N, K, [T,] *S)`` (averaged over K when ``average``), ``Δt`` and the checks
    (the finite flag; the batch-independence comparison) of one chunk of N inputs starting at
    global input ``start``. A per-input target explains ``t_i = s_i · o_i``: the kernel of
    input i gets that function of its own (``seeds`` given, or each input's argmax)."""
    g = per_example(fn, target, traced_once=False)
    per_input = isinstance(target, PerInput)
    if per_input and seeds is None:  # target="pred"
        seeds = jax.vmap(lambda xe: predicted_seed(g(params, xe)))(x)
    opts = dict(opts_key)
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, start + i))(jnp.arange(n))
    t_x, t_r = targets_of_pairs(g, params, x, refs, per_input_refs,
                                seeds if per_input else None)
    delta = t_x - t_r
    k = delta.shape[1]
    weights = seeds if per_input else jnp.zeros((n,))

    def kernel(xe, re, ke, seed):
        f = (lambda p, v: weigh(target, seed, g(p, v))) if per_input else g  # noqa: E731
        return method.kernel(f, params, xe, re, opts=opts, arrays=arrays, key=ke)

    if method.scope_for(opts) == "input":
        attr, mult = jax.vmap(lambda xe, ke, se: kernel(xe, None, ke, se))(x, keys, weights)

        def over_refs(a):
            return jnp.broadcast_to(a[:, None], (a.shape[0], k) + a.shape[1:])
        attr = jax.tree_util.tree_map(over_refs, attr)
        mult = None if mult is None else jax.tree_util.tree_map(over_refs, mult)
    else:
        over_refs = jax.vmap(kernel, in_axes=(None, 0, None, None))
        attr, mult = jax.vmap(over_refs, in_axes=(0, 0 if per_input_refs else None, 0, 0))(
            x, refs, keys, weights)
    if what == "multipliers":
        res = ratio_multipliers(attr, x, refs, per_input_refs) if mult is None else mult
    else:
        res = attr
    finite = finite_flag(res, delta, x, refs, check_inputs)
    checks = {"finite": finite, **certificate.unchecked()}
    if average:
        res = jax.tree_util.tree_map(lambda a: mean_axis(a, 1), res)
        delta = mean_axis(delta, 1)
    return res, delta, checks


@functools.lru_cache(maxsize=128)
def compiled_program(method, opts_key, fn, target, what, per_input_refs, average, precision,
                     check_inputs):
    """One jitted :func:`compute` per key (``precision`` only keys the cache: the pipeline
    traces and runs the program under its precision context, which the program's
    description reads), its executables also kept by what they are made from
    (:mod:`jaxlift.stored_programs`: a model built again compiles nothing)."""
    static = dict(method=method, opts_key=opts_key, target=target, what=what,
                  per_input_refs=per_input_refs, average=average, check_inputs=check_inputs)
    jitted = jax.jit(functools.partial(compute, fn=fn, **static))
    return stored_programs.StoredProgram(jitted, functools.partial(
        stored_programs.program_fingerprint, fn=fn, static=(static, ())))


def check_inputs(method, x) -> None:
    """Refuse inputs the method cannot take: non-float leaves (kernels differentiate or mix
    inputs with references), or a pytree where the method needs one array."""
    leaves = jax.tree_util.tree_leaves(x)
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise InputTypeError(f"mode {method.name!r} needs floating-point inputs, got dtype "
                                 f"{jnp.result_type(leaf)}")
    if method.single_array and len(leaves) != 1:
        raise InputTypeError(f"mode {method.name!r} needs x to be a single array, not a pytree of "
                             f"{len(leaves)} arrays")


@functools.lru_cache(maxsize=1)
def default_key() -> jax.Array:
    """``PRNGKey(0)``, made once (making a key costs a dispatch, ~0.5 ms on a CPU)."""
    return jax.random.PRNGKey(0)


def runner(call: Call, inputs: Inputs, chunked: bool) -> Callable:
    """``run(params, x, refs, start) -> (scores, Δt, checks)`` for one chunk of inputs whose
    first input is global input ``start`` (the Family protocol, :mod:`jaxlift.methods.call`).
    ``prepare`` runs here, once per call; no ``key`` means :func:`default_key`."""
    method, opts = call.method, call.opts
    key = default_key() if call.key is None else call.key
    shape = tuple(jnp.shape(jax.tree_util.tree_leaves(inputs.x)[0])[1:])
    arrays = {} if method.prepare is None else method.prepare(opts, shape,
                                                               jax.random.fold_in(key, 1))
    program = memoized(compiled_program, method, method.static_options(opts), call.fn,
                       call.target, call.what, inputs.per_input, call.average_refs,
                       call.precision, inputs.check_inputs)
    seeds, n = inputs.seeds, inputs.n

    def run(p, xc, rc, start):
        rows = jax.tree_util.tree_leaves(xc)[0].shape[0]
        s = None if seeds is None else take_rows(seeds, start, rows, n)
        return program(p, xc, rc, arrays, key, start, s)
    run.program = program  # what it compiles: the key of chunking.one_chunk_rows
    return run


def explain_gap(call: Call, inputs: Inputs, summary: dict) -> str:  # pragma: no cover
    """The Family protocol's hook for a failed certificate (kernel methods compute none)."""
    return ""


def refuse(call: Call, inputs: Inputs, i: int) -> None:
    """The Family protocol's hook for a NaN/Inf score or ``Δt`` at input ``i``."""
    raise NonFiniteScoresError(
        f"mode {call.method.name!r} produced NaN or Inf scores (or t(x) − t(r)) for input {i}; "
        "check that fn is finite on the inputs, the references and the points between them "
        "the method evaluates")
