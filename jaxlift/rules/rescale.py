"""The Rescale rule for a nonlinearity of one live input (docs/design.md §9.1, §17).

A *nonlinearity* is any chain of elementwise operations fed by one live tensor ``x`` (relu,
sigmoid, tanh, softplus, gelu, ``jnp.where(x > 0, x, a*x)`` …), fused by the program builder.
Its multiplier is the difference quotient ``m = Δy/Δx``, which gives ``m·Δx = Δy`` to one
rounding whatever ``Δx`` is.

Where ``Δx`` is so small that the quotient is mostly rounding noise, its limit, the slope
``s = ½[f'(x) + f'(x0)]`` (second-order accurate like the midpoint derivative of docs/design.md §9.1, and
evaluated on the N inputs and K references rather than on all N·K pairs), is the better
multiplier — but only where it loses nothing: it is used where ``|s·Δx − Δy|`` is within the
rounding of ``Δy`` itself (``4·eps·(|y| + |y0|)``, eps of the op's dtype) and where ``Δx = 0``.
Anywhere else — a kink inside a small interval (``relu(x − 10⁴)`` with ``x − r = 3``), a
steep step — the quotient is kept, so the guard never drops part of ``Δy`` (docs/design.md §9.1).
Ratios are taken in at least float32 and never divide by zero. Where the op's values are not
finite (a branch that ``jnp.where`` discards), the multiplier is 0.

In RevealCancel modes the split follows the input's: ``Δy± = m·Δx±``, ``m_x± = m·m_y±``.
"""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp

from jaxlift.errors import UnsupportedPrimitiveError
from jaxlift.jaxpr_walk import nested_jaxprs
from jaxlift.rules._util import wide
from jaxlift.rules.registry import Rule

ROUNDING_ULPS = 4


def value_and_derivative(ctx, v):
    """``(f(v), f'(v))`` of the elementwise nonlinearity, shaped like ``v``: its Jacobian is
    diagonal, so ``f'`` is the JVP of a tangent of ones (forward mode: a third of the tracing
    of a VJP, which linearizes, partially evaluates and transposes). A ``custom_vjp`` function
    has no JVP: where the chain holds one, the VJP of a cotangent of ones (the same diagonal).
    (JAX stages the JVP of some ``custom_vjp`` functions — a gradient-clipping identity whose
    residuals are ``None`` — and fails only when the program is lowered, so the chain is
    looked at rather than tried.)"""
    f = lambda u: ctx.apply(u)[0]  # noqa: E731
    try:
        if not _holds_custom_vjp(ctx.op):
            try:
                return jax.jvp(f, (v,), (jnp.ones_like(v),))
            except TypeError:  # "can't apply forward-mode autodiff (jvp) to a custom_vjp"
                pass
        y, pull = jax.vjp(f, v)
        (d,) = pull(jnp.ones_like(y))
        return y, d
    except NotImplementedError as exc:  # a primitive JAX cannot differentiate (nextafter)
        if isinstance(exc, UnsupportedPrimitiveError):
            raise
        named = re.search(r"rule for '([^']+)'", str(exc))
        where = ctx.op.where
        raise UnsupportedPrimitiveError(
            named.group(1) if named else ctx.op.primitive,
            where.described() if hasattr(where, "described") else str(where),
            f"inside the nonlinearity {ctx.op.primitive}, whose slope (Rescale's limit as "
            f"Δx → 0) needs a derivative, and JAX has none for it ({exc})") from None


def _holds_custom_vjp(op) -> bool:
    """Whether a fused nonlinearity calls a ``custom_vjp`` function (in its chain, or inside a
    call, loop or branch of it)."""
    def visit(eqns) -> bool:
        for eqn in eqns:
            if eqn.primitive.name.startswith("custom_vjp"):
                return True
            if any(visit(jaxpr.eqns) for jaxpr, _ in nested_jaxprs(eqn.params)):
                return True
        return False
    return visit([o.eqn for o in op.body if o.eqn is not None])


def rounding_of(dtype, *values):
    """How much of a difference of ``values`` (computed in ``dtype``) rounding can account for:
    ``4·eps·Σ|v|`` with eps of ``dtype``, in at least float32."""
    eps = jnp.finfo(dtype).eps
    return ROUNDING_ULPS * eps * sum(jnp.abs(wide(v)) for v in values)


def exact_multiplier(dy, dx, slope, rounding):
    """``slope`` where ``|slope·Δx − Δy| ≤ rounding`` (choosing it loses nothing; this
    includes ``Δx = 0`` with ``Δy`` within rounding), else ``Δy/Δx`` (0 where ``Δx = 0``: a
    division by ∞, so no NaN reaches a gradient taken through the scores). Every comparison
    with a NaN is false, so a slope or a ``Δx`` that is not finite never chooses the slope;
    the result is not finite only where ``Δy`` or the slope is not, or ``Δy/Δx`` overflows:
    the callers decide what such an element becomes. ``dy``, ``dx``, ``slope`` and
    ``rounding`` are in the same (wide) dtype. Eight operations per pair (a first call
    compiles each of them inside every kernel that reads the multiplier: docs/design.md
    §20.12)."""
    quotient = dy / jnp.where(dx == 0, jnp.inf, dx)
    return jnp.where(jnp.abs(slope * dx - dy) <= rounding, slope, quotient)


def endpoint_slope(ctx):
    """``½[f'(x) + f'(x0)]``: the limit of ``Δy/Δx`` as ``Δx → 0`` (to second order)."""
    return (derivative_at(ctx, "x") + derivative_at(ctx, "r")) / 2


def derivative_at(ctx, side: str):
    """``f'`` at the input's (``"x"``) or the reference's (``"r"``) operand, widened; once per
    context (``RuleContext.shared``)."""
    point = ctx.xs[0] if side == "x" else ctx.rs[0]
    return ctx.shared("derivative_" + side, lambda: wide(value_and_derivative(ctx, point)[1]))


def guard_operands(ctx):
    """``(Δy, Δx, rounding)`` of the op in at least float32: plain differences ``y − y0`` and
    ``x − x0`` (equal infinities give a NaN, which the guard reads as not finite) and
    ``4·eps·(|y| + |y0|)``. Once per op and pair (``RuleContext.shared``)."""
    def compute():
        y, y0 = wide(ctx.ys[0]), wide(ctx.y0s[0])
        return y - y0, wide(ctx.xs[0]) - wide(ctx.rs[0]), rounding_of(ctx.ys[0].dtype, y, y0)
    return ctx.shared("guard_operands", compute)


def finite_values(ctx):
    """Where the op's input and output are finite on both sides, tested on what the guard
    computes anyway (:func:`guard_operands`): the rounding (not finite iff ``y`` or ``y0`` is
    not) and ``x − x0`` (not finite iff ``x`` or ``x0`` is not). Values beyond half the float
    range count as not finite there."""
    _, dx, rounding = guard_operands(ctx)
    return jnp.isfinite(rounding) & jnp.isfinite(dx)


def rescale_multiplier(ctx):
    """``m = Δy/Δx`` of the op's single live input (guarded as the module says), shaped like
    that input, in at least float32; 0 where :func:`finite_values` is false. A quotient that
    overflows stays infinite, so the scores are refused naming the op
    (:class:`~jaxlift.errors.NonFiniteScoresError`)."""
    dy, dx, rounding = guard_operands(ctx)
    m = exact_multiplier(dy, dx, endpoint_slope(ctx), rounding)
    return jnp.where(finite_values(ctx), m, 0)


def shared_multiplier(ctx):
    """:func:`rescale_multiplier`, computed once per pair for the operation
    (``RuleContext.shared``)."""
    return ctx.shared("rescale_multiplier", lambda: rescale_multiplier(ctx))


def _backward(ctx, m_out) -> list:
    (m,) = m_out
    ratio = shared_multiplier(ctx)
    return [m.map(lambda v: v * ratio)]


def _split(ctx) -> list:
    ratio = shared_multiplier(ctx)
    p, n = ctx.split_in(0)
    return [(ratio * p, ratio * n)]


RESCALE = Rule("rescale", backward=_backward, split=_split)
