"""Small helpers shared by the rule families."""
from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxlift._ops import widen

wide = widen  # at least float32: ratios of tiny half-precision differences stay finite


def _wider_float(values: Sequence[Any], than: Sequence[Any]):
    """The float type of ``values`` (multipliers, tangents) where it has more bits than every
    operand of ``than`` (the op's live operands, widened), all real floats; else ``None``."""
    given = [jnp.result_type(v) for v in values if v is not None]
    given = [d for d in given if jnp.issubdtype(d, jnp.floating)]
    if not given:
        return None
    to = functools.reduce(jnp.promote_types, given)
    ops = [jnp.result_type(v) for v in than]
    if not all(jnp.issubdtype(d, jnp.floating) for d in ops):  # complex or integer operands
        return None
    bits = max((jnp.finfo(d).bits for d in ops), default=0)
    return to if jnp.finfo(to).bits > bits else None


def vjp_live(ctx, cotangents: Sequence[Any], base: Sequence[Any] | None = None) -> list:
    """Transpose of the op w.r.t. its live float operands, at ``base`` (default: the input's
    values). Returns one array (or ``None``) per operand. A half-precision op is transposed in
    float32, so multipliers keep their range and digits; an op narrower than its multipliers
    (a float32 op in a program whose target is float64) in the multipliers' type, so they are
    not rounded to the op's digits."""
    base = ctx.xs if base is None else base
    primals = [wide(base[i]) for i in ctx.live_float]
    to = _wider_float(cotangents, primals)
    if to is not None:
        primals = [p.astype(to) for p in primals]
    outs, pull = jax.vjp(lambda *v: ctx.apply(*v, base=base, to=to), *primals)
    cts = tuple(jnp.zeros_like(o) if c is None else jnp.asarray(c, o.dtype)
                for o, c in zip(outs, cotangents))
    grads = pull(cts)
    result: list = [None] * len(ctx.xs)
    for i, g in zip(ctx.live_float, grads):
        result[i] = g
    return result


def jvp_live(ctx, tangents: Sequence[Any]) -> tuple:
    """The op's linear map applied to ``tangents`` of its live float operands (in order); in
    float32 for a half-precision op."""
    primals = [wide(ctx.xs[i]) for i in ctx.live_float]
    to = _wider_float(tangents, primals)
    if to is not None:
        primals = [p.astype(to) for p in primals]
    tangents = [jnp.asarray(t, p.dtype) for t, p in zip(tangents, primals)]
    _, out = jax.jvp(lambda *v: ctx.apply(*v, to=to), tuple(primals), tuple(tangents))
    return out


def unbroadcast(g, shape: tuple):
    """Sum ``g`` down to ``shape`` (the transpose of implicit size-1 / rank broadcasting)."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(lead))) if lead > 0 else g
    axes = tuple(i for i, (a, b) in enumerate(zip(g.shape, shape)) if b == 1 and a != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def quotient_or_zero(num, den):
    """``num/den``, 0 where ``den = 0`` (a difference quotient whose ``Δ`` is 0 there, so its
    contribution ``0·m`` is exact whatever ``m``)."""
    zero = den == 0
    return jnp.where(zero, 0, num / jnp.where(zero, 1, den))
