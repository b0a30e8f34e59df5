"""Small helpers shared by the rule families."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from jaxlift._ops import widen

wide = widen  # at least float32: ratios of tiny half-precision differences stay finite


def vjp_live(ctx, cotangents: Sequence[Any], base: Sequence[Any] | None = None) -> list:
    """Transpose of the op w.r.t. its live float operands, at ``base`` (default: the input's
    values). Returns one array (or ``None``) per operand. A half-precision op is transposed in
    float32, so multipliers keep their range and digits."""
    base = ctx.xs if base is None else base
    primals = [wide(base[i]) for i in ctx.live_float]
    outs, pull = jax.vjp(lambda *v: ctx.apply(*v, base=base), *primals)
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
    tangents = [jnp.asarray(t, p.dtype) for t, p in zip(tangents, primals)]
    _, out = jax.jvp(lambda *v: ctx.apply(*v), tuple(primals), tuple(tangents))
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
