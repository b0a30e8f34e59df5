"""The Rescale rule for a nonlinearity of one live input (DESIGN §3).

A *nonlinearity* is any chain of elementwise operations fed by one live tensor ``x`` (relu,
sigmoid, tanh, softplus, gelu, ``jnp.where(x > 0, x, a*x)`` …), fused by the program builder.
Its multiplier is the difference quotient ``m = Δy/Δx``. Where ``|Δx| ≤ sqrt(eps)·(1 + |x| +
|x0|)`` the quotient is replaced by its limit, the slope ``½[f'(x) + f'(x0)]`` — second-order
accurate like the midpoint derivative ``f'((x + x0)/2)`` of DESIGN §3, but evaluated on the N
inputs and K references rather than on all N·K pairs — so it is never NaN. Ratios are taken in
at least float32. In RevealCancel modes the split follows the input's: ``Δy± = m·Δx±``,
``m_x± = m·m_y±``. Summation-to-delta is exact: ``m·Δx = Δy`` wherever ``Δx`` is not tiny, and
off by ``O(|Δx|³·f''')`` where it is.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlift.rules import registry
from jaxlift.rules._util import safe_ratio, wide
from jaxlift.rules.registry import Rule


def value_and_derivative(ctx, v):
    """``(f(v), f'(v))`` of the elementwise nonlinearity (a VJP, so ``custom_vjp`` works)."""
    y, pull = jax.vjp(lambda u: ctx.apply(u)[0], v)
    (d,) = pull(jnp.ones_like(y))
    return y, d


def is_tiny(delta, scale):
    """``|Δ| ≤ sqrt(eps)·(1 + scale)``, in ``delta``'s own precision."""
    eps = jnp.finfo(delta.dtype).eps
    return jnp.abs(delta) <= jnp.sqrt(eps) * (1 + scale)


def guarded_quotient(num, den, slope, scale):
    """``num/den``, or ``slope`` where ``|den|`` is tiny; computed in at least float32."""
    tiny = is_tiny(den, scale) | is_tiny(wide(den), wide(scale))
    return safe_ratio(wide(num), wide(den), wide(slope), tiny).astype(den.dtype)


def endpoint_slope(ctx):
    """``½[f'(x) + f'(x0)]``: the limit of ``Δy/Δx`` as ``Δx → 0`` (to second order)."""
    x, x0 = ctx.xs[0], ctx.rs[0]
    return (value_and_derivative(ctx, x)[1] + value_and_derivative(ctx, x0)[1]) / 2


def rescale_multiplier(ctx):
    """``m = Δy/Δx`` of the op's single live input, shaped like that input."""
    x, x0 = ctx.xs[0], ctx.rs[0]
    scale = (jnp.abs(x) + jnp.abs(x0)) / 2
    return guarded_quotient(ctx.delta_out(0), x - x0, endpoint_slope(ctx), scale)


def _backward(ctx, m_out) -> list:
    (m,) = m_out
    ratio = rescale_multiplier(ctx)
    return [m.map(lambda v: v * ratio)]


def _split(ctx) -> list:
    ratio = rescale_multiplier(ctx)
    p, n = ctx.split_in(0)
    return [(ratio * p, ratio * n)]


RESCALE = Rule("rescale", backward=_backward, split=_split)
registry.register_nonlinearity("rescale", RESCALE)
