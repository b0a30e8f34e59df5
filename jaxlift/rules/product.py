"""The product rule for two live operands (gating, attention): the Shapley split.

For a bilinear ``y = B(a, b)`` (``mul``, ``dot_general``, ``conv_general_dilated`` with both
operands live): ``Δy = B(Δa, b̄) + B(ā, Δb)`` with ``ā = (a + a0)/2``, ``b̄ = (b + b0)/2`` — exact —
so ``m_a = ∂B/∂a(ā, b̄)ᵀ m_y`` and ``m_b = ∂B/∂b(ā, b̄)ᵀ m_y`` (the VJP at the midpoints; for
``mul``: ``m_a = (b + b0)/2``, ``m_b = (a + a0)/2``).

For ``a / b`` with both live: ``Δ(a/b) = Δa·½(1/b + 1/b0) − ā·Δb/(b·b0)``, also exact.

In RevealCancel modes the output is split by sign (the interpreter's generic split) and the
multipliers collapsed with it: the Shapley split has no natural per-sign form, and the sign
split keeps summation-to-delta.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxlift.pairs import Pair
from jaxlift.rules import registry
from jaxlift.rules._util import unbroadcast, vjp_live, wide
from jaxlift.rules.registry import Rule


def _bilinear_backward(ctx, m_out) -> list:
    (m,) = m_out
    mids = list(ctx.xs)
    for i in ctx.live_float:
        mids[i] = (wide(ctx.xs[i]) + wide(ctx.rs[i])) / 2
    g = vjp_live(ctx, [m.pos], base=mids)
    return [None if v is None else Pair.of(_finite_or_zero(v)) for v in g]


def _finite_or_zero(m):
    """Multipliers through operands that are not finite (a branch ``jnp.where`` discards) are
    0; where such an operand matters, the target itself is not finite and jaxlift refuses it."""
    return jnp.where(jnp.isfinite(m), m, 0)


def _quotient_backward(ctx, m_out) -> list:
    (m,) = m_out
    a, b = (wide(v) for v in ctx.xs)
    a0, b0 = (wide(v) for v in ctx.rs)
    ma = m.pos * 0.5 * (1 / b + 1 / b0)
    mb = -m.pos * (a + a0) / (2 * b * b0)
    return [Pair.of(unbroadcast(_finite_or_zero(ma), a.shape)),
            Pair.of(unbroadcast(_finite_or_zero(mb), b.shape))]


BILINEAR = Rule("product", backward=_bilinear_backward)
QUOTIENT = Rule("quotient", backward=_quotient_backward)

for _p in ("mul", "dot_general", "conv_general_dilated"):
    registry.register(_p, BILINEAR, registry.several_live)
registry.register("div", QUOTIENT, lambda live: live == (True, True))
