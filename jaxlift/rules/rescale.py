"""The Rescale rule for a nonlinearity of one live input (DESIGN §3).

A *nonlinearity* is any chain of elementwise operations fed by one live tensor ``x`` (relu,
sigmoid, tanh, softplus, gelu, ``jnp.where(x > 0, x, a*x)`` …), fused by the program builder.
Its multiplier is the difference quotient ``m = Δy/Δx``; where ``|Δx|`` is below
``sqrt(eps)·(1 + |x̄|)`` (``x̄ = (x + x0)/2``) the derivative at the midpoint ``f'(x̄)`` is used
instead — second-order accurate, and never NaN. Ratios are taken in at least float32.
In RevealCancel modes the split follows the input's: ``Δy± = m·Δx±``, ``m_x± = m·m_y±``.
Summation-to-delta holds exactly: ``m·Δx = Δy`` wherever ``Δx`` is not tiny.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlift.rules import registry
from jaxlift.rules._util import safe_ratio, wide
from jaxlift.rules.registry import Rule


def midpoint_derivative(ctx, mid):
    """``f'(mid)`` of the elementwise nonlinearity (via a VJP, so ``custom_vjp`` works too)."""
    y, pull = jax.vjp(lambda v: ctx.apply(v)[0], mid)
    (d,) = pull(jnp.ones_like(y))
    return d


def is_tiny(delta, mid):
    eps = jnp.finfo(delta.dtype).eps
    return jnp.abs(delta) <= jnp.sqrt(eps) * (1 + jnp.abs(mid))


def difference_quotient(ctx, dy, dx, mid):
    """``Δy/Δx`` guarded by the midpoint derivative where ``|Δx|`` is tiny."""
    dxw, dyw, midw = wide(dx), wide(dy), wide(mid)
    deriv = wide(midpoint_derivative(ctx, mid))
    return safe_ratio(dyw, dxw, deriv, is_tiny(dxw, midw) | is_tiny(dx, mid)).astype(dx.dtype)


def rescale_multiplier(ctx):
    """``m = Δy/Δx`` of the op's single live input, shaped like that input."""
    x, x0 = ctx.xs[0], ctx.rs[0]
    return difference_quotient(ctx, ctx.delta_out(0), x - x0, (x + x0) / 2)


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
