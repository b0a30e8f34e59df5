"""The kernel family: methods defined by a function of one (input, reference) pair or one input.

:func:`runner` is what the pipeline calls for a method of ``scope="pair"`` or ``scope="input"``
(:mod:`jaxlift.methods.base`): the method's ``kernel`` ``vmap``ped over the N inputs of a chunk
(and their K references), ``Δt = t(x) − t(r)`` of every pair, multipliers ``attr/Δx`` where the
kernel gives none, averaging over references and the finite flags, all in one compiled program.
Each input's PRNG key is ``fold_in(key, global input index)``, so results do not depend on how
the inputs are chunked.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from jaxlift._memo import memoized
from jaxlift import certificate
from jaxlift._ops import finite_flags, mean_axis
from jaxlift.errors import NonFiniteScoresError
from jaxlift.targets import per_example


def target_deltas(f: Callable, params, x, refs, per_input_refs: bool):
    """``t(x) − t(r)`` of every pair, ``(N, K[, T])``."""
    t_x = jax.vmap(lambda xe: f(params, xe))(x)
    if per_input_refs:
        t_r = jax.vmap(jax.vmap(lambda re: f(params, re)))(refs)
        return t_x[:, None] - t_r
    t_r = jax.vmap(lambda re: f(params, re))(refs)
    return t_x[:, None] - t_r[None]


def ratio_multipliers(attr, x, refs, per_input_refs: bool):
    """``attr/Δx`` per pair (0 where ``Δx = 0``): ``attr`` is ``(N, K, [T,] *S)`` per leaf."""
    def to_mult(a, xl, rl):
        d = (xl[:, None] - rl) if per_input_refs else (xl[:, None] - rl[None])
        d = d.reshape(d.shape[:2] + (1,) * (a.ndim - d.ndim) + d.shape[2:])
        safe = jnp.where(d == 0, jnp.ones_like(d), d)
        return jnp.where(d == 0, jnp.zeros_like(a), a / safe)
    return jax.tree_util.tree_map(to_mult, attr, x, refs)


def compute(params, x, refs, arrays, key, start, *, method, opts_key, fn, target, what,
            per_input_refs, average, check_inputs=False):
    """Scores ``(N, K, [T,] *S)`` (averaged over K when ``average``), ``Δt`` and the finite
    flags of one chunk of N inputs starting at global input ``start``."""
    f = per_example(fn, target)
    opts = dict(opts_key)
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    keys = jax.vmap(lambda i: jax.random.fold_in(key, start + i))(jnp.arange(n))
    delta = target_deltas(f, params, x, refs, per_input_refs)
    k = delta.shape[1]

    def kernel(xe, re, ke):
        return method.kernel(f, params, xe, re, opts=opts, arrays=arrays, key=ke)

    if method.scope_for(opts) == "input":
        attr, mult = jax.vmap(lambda xe, ke: kernel(xe, None, ke))(x, keys)

        def over_refs(a):
            return jnp.broadcast_to(a[:, None], (a.shape[0], k) + a.shape[1:])
        attr = jax.tree_util.tree_map(over_refs, attr)
        mult = None if mult is None else jax.tree_util.tree_map(over_refs, mult)
    else:
        over_refs = jax.vmap(kernel, in_axes=(None, 0, None))
        attr, mult = jax.vmap(over_refs, in_axes=(0, 0 if per_input_refs else None, 0))(
            x, refs, keys)
    if what == "multipliers":
        res = ratio_multipliers(attr, x, refs, per_input_refs) if mult is None else mult
    else:
        res = attr
    finite = finite_flags(res, delta, x, refs, check_inputs)
    if average:
        res = jax.tree_util.tree_map(lambda a: mean_axis(a, 1), res)
        delta = mean_axis(delta, 1)
    return res, delta, {"finite": finite, **certificate.unchecked()}


@functools.lru_cache(maxsize=128)
def compiled_program(method, opts_key, fn, target, what, per_input_refs, average, precision,
                     check_inputs):
    """One jitted :func:`compute` per key (``precision`` only keys the cache: the pipeline
    traces and runs the program under its precision context)."""
    return jax.jit(functools.partial(
        compute, method=method, opts_key=opts_key, fn=fn, target=target, what=what,
        per_input_refs=per_input_refs, average=average, check_inputs=check_inputs))


def check_inputs(method, x) -> None:
    """Refuse inputs the method cannot take: non-float leaves (kernels differentiate or mix
    inputs with references), or a pytree where the method needs one array."""
    leaves = jax.tree_util.tree_leaves(x)
    for leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise TypeError(f"mode {method.name!r} needs floating-point inputs, got dtype "
                            f"{jnp.result_type(leaf)}")
    if method.single_array and len(leaves) != 1:
        raise TypeError(f"mode {method.name!r} needs x to be a single array, not a pytree of "
                        f"{len(leaves)} arrays")


@functools.lru_cache(maxsize=1)
def default_key() -> jax.Array:
    """``PRNGKey(0)``, made once (making a key costs a dispatch, ~0.5 ms on a CPU)."""
    return jax.random.PRNGKey(0)


def runner(method, opts, *, fn, target, what, per_input, average, precision, check_inputs,
           key, x, **_) -> Callable:
    """``run(params, x, refs, start) -> (scores, Δt, finite flags)`` for one chunk of inputs
    whose first input is global input ``start``. ``prepare`` runs here, once per call; ``key``
    None means :func:`default_key`."""
    key = default_key() if key is None else key
    shape = tuple(jnp.shape(jax.tree_util.tree_leaves(x)[0])[1:])
    arrays = {} if method.prepare is None else method.prepare(opts, shape,
                                                               jax.random.fold_in(key, 1))
    program = memoized(compiled_program, method, method.static_options(opts), fn, target, what,
                       per_input, average, precision, check_inputs)

    def run(p, xc, rc, start):
        return program(p, xc, rc, arrays, key, start)
    return run


def explain_gap(summary: dict, **_) -> str:  # pragma: no cover - kernels are never certified
    """The pipeline's hook for a failed certificate (kernel methods compute none)."""
    return ""


def refuse(i: int, *, method, **_) -> None:
    """The pipeline's hook for a NaN/Inf score or ``Δt`` at input ``i``."""
    raise NonFiniteScoresError(
        f"mode {method.name!r} produced NaN or Inf scores (or t(x) − t(r)) for input {i}; "
        "check that fn is finite on the inputs, the references and the points between them "
        "the method evaluates")
