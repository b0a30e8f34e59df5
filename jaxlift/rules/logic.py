"""Exact rules where the input reaches the target through booleans and integers (docs/design.md §12).

A boolean is read as the number 0/1 and its difference ``Δp = p − p0`` is −1, 0 or 1; an integer
made from the input (a cast, a count) is read as its number. Every rule below is exact:
``Σ_i m_i·Δin_i = Δout`` for each element.

* **Steps** — a comparison ``p = (a ≷ c)`` of one live operand, or a float→integer/boolean
  conversion ``p = cast(a)`` (rounding): ``m_a = Δp/Δa`` (0 where ``Δa = 0``, which is exact:
  then ``Δp = 0``). Two live operands ``a ≷ b`` are a step of ``d = a − b``:
  ``m_a = Δp/(Δa − Δb) = −m_b``. Steps use this difference quotient in every mode: a step has
  no slope to take a limit of, and in RevealCancel modes its output is split by sign.
* **Select with a live predicate** — ``y = select_n(p, c0, c1) = c0 + p·(c1 − c0)`` (``jnp.where``,
  ``lax.cond`` with two branches): where the predicate agrees on input and reference the taken
  case passes its multiplier through (``m_c = 1`` for it, 0 for the other, ``m_p = 0``); where it
  flips, the Shapley split of the product: ``m_c0 = m_c1 = ½`` and
  ``m_p = ½[(c1 − c0) + (c1⁰ − c0⁰)]``, so ``Δy = ½Δc0 + ½Δc1 + m_p·Δp`` exactly. If a case is
  not finite on one side (``jnp.where(x > 0, log(x), 0)`` evaluates ``log`` of a negative number
  there) the flip itself explains all: ``m_p = Δy/Δp``, ``m_c = 0``. An integer index with more
  than two cases (``lax.switch``) has no such reading and is refused.
* **Boolean logic** — ``not p = 1 − p`` (``m = −1``); ``p and q = p·q`` and
  ``p or q = p + q − p·q`` with the Shapley split of the product (``m_p = q̄`` and
  ``m_p = 1 − q̄``, ``q̄ = (q + q0)/2``).
* **all / any** — ``reduce_and`` and ``reduce_or`` of booleans are the min and max of 0/1 values,
  explained as the max rule explains them (:mod:`jaxlift.rules.maxrule`): ``Δy = 1`` is credited
  to the elements that turned it (for ``any``, the input's true elements; for ``all``, the
  reference's false ones), ``Δy = −1`` blamed on the other side's, split equally among them; an
  element credited changed by ``±1``, so ``m = (m_y·Δy/count)/Δp`` and ``Σ m·Δp = m_y·Δy``.
  Bitwise reductions of integers are refused.
* **Conversions** that keep the number (bool→int→float, int→int, a float to its own type): the
  identity. A cast between two float types rounds ``Δx`` (``Δy ≠ Δx`` by an ulp of the narrower
  type, which the multipliers after it can amplify past the certificate's bound: a float64 input
  cast to float32 ahead of a normalization at a constant reference): ``m = Δy/Δx`` (1 where
  ``Δx = 0``), exact by construction; in RevealCancel modes the split is scaled by the same.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxlift._ops import widen
from jaxlift.errors import UnsupportedPrimitiveError
from jaxlift.split_multipliers import SplitMultipliers, combine_by_sign
from jaxlift.rules import registry
from jaxlift.rules._util import quotient_or_zero, unbroadcast
from jaxlift.rules.registry import Rule

# the *_to comparisons order floats totally (-0 < +0, NaN last): JAX's sort and searchsorted
_COMPARISONS = ("gt", "ge", "lt", "le", "eq", "ne", "lt_to", "le_to", "eq_to")
_LOGIC = ("not", "and", "or")


def _is_float(v) -> bool:
    return jnp.issubdtype(jnp.result_type(v), jnp.inexact)


def _is_bool(v) -> bool:
    return jnp.result_type(v) == jnp.bool_


def _step_backward(ctx, m_out) -> list:
    (m,) = m_out
    m = m.pos
    dy = ctx.delta_out(0)
    live = ctx.live_numeric
    result: list = [None] * len(ctx.xs)
    if len(live) == 1:
        (i,) = live
        slope = quotient_or_zero(dy, ctx.delta_in(i))
        result[i] = SplitMultipliers.of(unbroadcast(m * slope, jnp.shape(ctx.xs[i])))
        return result
    a, b = live
    slope = quotient_or_zero(dy, ctx.delta_in(a) - ctx.delta_in(b))
    result[a] = SplitMultipliers.of(unbroadcast(m * slope, jnp.shape(ctx.xs[a])))
    result[b] = SplitMultipliers.of(unbroadcast(-m * slope, jnp.shape(ctx.xs[b])))
    return result


STEP = Rule("step", backward=_step_backward, numeric_operands=True)


def _select_backward(ctx, m_out) -> list:
    (m,) = m_out
    m = m.pos
    p, p0 = widen(ctx.xs[0]), widen(ctx.rs[0])
    c0, c1 = widen(ctx.xs[1]), widen(ctx.xs[2])
    c00, c10 = widen(ctx.rs[1]), widen(ctx.rs[2])
    dp = p - p0
    flips = dp != 0
    finite = jnp.isfinite(c0) & jnp.isfinite(c1) & jnp.isfinite(c00) & jnp.isfinite(c10)
    shapley = flips & finite
    half = jnp.asarray(0.5, m.dtype)
    m_c0 = jnp.where(shapley, half, jnp.where(flips, 0, 1 - p))
    m_c1 = jnp.where(shapley, half, jnp.where(flips, 0, p))
    d_mid = ((c1 - c0) + (c10 - c00)) / 2
    dy = ctx.delta_out(0)
    m_p = jnp.where(shapley, jnp.where(finite, d_mid, 0),
                    jnp.where(flips, quotient_or_zero(dy, dp), 0))
    result: list = [None] * len(ctx.xs)
    for i, w in ((0, m_p), (1, m_c0), (2, m_c1)):
        if ctx.live[i]:
            result[i] = SplitMultipliers.of(unbroadcast(m * w, jnp.shape(ctx.xs[i])))
    return result


SELECT = Rule("select", backward=_select_backward, numeric_operands=True)


def _logic_backward(ctx, m_out) -> list:
    (m,) = m_out
    m = m.pos
    name = ctx.op.primitive
    if not all(_is_bool(v) for v in ctx.xs):
        raise UnsupportedPrimitiveError(
            name, ctx.op.where, "bitwise logic on integers that depend on the input has no "
            "multipliers; only boolean and/or/not are read as numbers")
    result: list = [None] * len(ctx.xs)
    if name == "not":
        result[0] = SplitMultipliers.of(-m)
        return result
    mids = [(widen(x) + widen(r)) / 2 for x, r in zip(ctx.xs, ctx.rs)]
    for i in ctx.live_numeric:
        other = mids[1 - i]
        w = other if name == "and" else 1 - other
        result[i] = SplitMultipliers.of(unbroadcast(m * w, jnp.shape(ctx.xs[i])))
    return result


LOGIC = Rule("boolean_logic", backward=_logic_backward, numeric_operands=True)


def _reduce_logic_backward(ctx, m_out) -> list:
    (m,) = m_out
    m = m.pos
    name = ctx.op.primitive
    if not _is_bool(ctx.xs[0]):
        raise UnsupportedPrimitiveError(
            name, ctx.op.where, "a bitwise reduction of integers that depend on the input has "
            "no multipliers; only all/any of booleans are read as numbers")
    axes = tuple(ctx.params["axes"])
    p, p0 = ctx.xs[0], ctx.rs[0]
    dy = ctx.delta_out(0)
    # the elements that turned y up (Δy = 1) and down (Δy = −1): any() rises with an input's
    # true element, falls with a reference's; all() rises with a reference's false one
    up, down = (p, p0) if name == "reduce_or" else (~p0, ~p)
    result: list = [None] * len(ctx.xs)

    def share(hit, part):
        count = jnp.maximum(jnp.sum(hit, axes, dtype=m.dtype), 1)
        return jnp.where(hit, jnp.expand_dims(m * part / count, axes), 0)

    routed = share(up, jnp.maximum(dy, 0)) + share(down, jnp.minimum(dy, 0))
    result[0] = SplitMultipliers.of(quotient_or_zero(routed, ctx.delta_in(0)))
    return result


REDUCE_LOGIC = Rule("boolean_reduction", backward=_reduce_logic_backward, numeric_operands=True)


def _keeps_number(ctx) -> bool:
    return not (_is_float(ctx.xs[0]) and not _is_float(ctx.ys[0]))


def _rounds(ctx) -> bool:
    """A cast between two real float types: ``Δy`` is ``Δx`` rounded (to fewer digits, or
    ``Δx`` was itself rounded in the narrower type). Casts to or from complex keep the identity
    (a ratio there would make real multipliers complex)."""
    x, y = jnp.result_type(ctx.xs[0]), jnp.result_type(ctx.ys[0])
    return jnp.issubdtype(x, jnp.floating) and jnp.issubdtype(y, jnp.floating) and x != y


def _rounding_ratio(ctx):
    """``Δy/Δx`` of a float-to-float cast, 1 where ``Δx = 0`` (then ``Δy = 0`` too), in the
    wider of the two difference types: the multiplier that carries ``Δy`` exactly where the
    identity would lose the cast's rounding of ``Δx`` (amplified by the multipliers after it: a
    float64 input cast to float32 before a normalization at a constant reference)."""
    dy, dx = ctx.delta_out(0), ctx.delta_in(0)
    dtype = jnp.promote_types(dy.dtype, dx.dtype)
    dy, dx = dy.astype(dtype), dx.astype(dtype)
    return jnp.where(dx == 0, jnp.ones((), dtype), dy / jnp.where(dx == 0, 1, dx))


def _convert_backward(ctx, m_out) -> list:
    if not _keeps_number(ctx):  # float → integer/boolean: a rounding step
        (m,) = m_out
        return _step_backward(ctx, [SplitMultipliers.of(combine_by_sign(ctx.delta_out(0), m))])
    if _rounds(ctx):
        ratio = _rounding_ratio(ctx)
        return [m.map(lambda v: v * ratio) for m in m_out]
    return list(m_out)


def _convert_split(ctx) -> list:
    if not _keeps_number(ctx):
        dy = ctx.delta_out(0)
        return [(jnp.maximum(dy, 0), jnp.minimum(dy, 0))]
    if _rounds(ctx):
        ratio = _rounding_ratio(ctx)
        pos, neg = ctx.split_in(0)
        return [(ratio * pos, ratio * neg)]
    return [ctx.split_in(0)]


CONVERT = Rule("convert", backward=_convert_backward, split=_convert_split,
               numeric_operands=True)


for _p in _COMPARISONS:
    registry.register(_p, STEP, lambda live: 1 <= sum(live) <= 2)
# linear.py owns select_n (a fixed predicate picks among live cases: linear); this family takes
# a live predicate choosing between two cases
registry.register("select_n", SELECT, lambda live: live[0] and len(live) == 3, shared=True)
for _p in _LOGIC:
    registry.register(_p, LOGIC, any)
registry.register("convert_element_type", CONVERT, registry.one_live)
for _p in ("reduce_and", "reduce_or"):
    registry.register(_p, REDUCE_LOGIC, registry.one_live)
