"""The linear family (docs/design.md §8).

Rescale mode: a linear op's multipliers are its transpose applied to the output multipliers
(``m_x = Lᵀ m_y``, computed as the op's VJP, which does not depend on the point).

RevealCancel modes carry ``Δv = Δv⁺ + Δv⁻``:

* structural ops and sums with unit coefficients (reshape, transpose, slice, pad, concatenate,
  stack/unstack, tile, gather and scatter with fixed indices, reduce_sum, average pooling,
  add …) apply themselves to ``Δ⁺`` and
  ``Δ⁻`` separately and transpose each multiplier: ``Δy± = L(Δx±)``, ``m_x± = Lᵀ m_y±``;
* elementwise scaling by a fixed coefficient ``w`` (``mul``/``div`` by a fixed operand, ``neg``,
  the subtrahend of ``sub``) keeps the incoming split and swaps it where ``w < 0``:
  ``Δy⁺ = w⁺Δx⁺ + w⁻Δx⁻``, ``Δy⁻ = w⁺Δx⁻ + w⁻Δx⁺``, ``m_x⁺ = w⁺m⁺ + w⁻m⁻``,
  ``m_x⁻ = w⁺m⁻ + w⁻m⁺`` (an inference BatchNorm is exactly this);
* weighted sums (``dot_general``, ``conv_general_dilated`` with one live operand) use the paper's
  linear rule, the sign of each term ``w_iΔx_i`` taken with the *total* ``Δx_i``:
  ``Δy⁺ = L⁺(Δx⁺) + L⁻(Δx⁻)`` with ``L±`` the op with the weights' positive/negative parts and
  ``Δx± = max/min(Δx, 0)``; ``m_x = L⁺ᵀm⁺ + L⁻ᵀm⁻`` where ``Δx > 0``,
  ``L⁻ᵀm⁺ + L⁺ᵀm⁻`` where ``Δx < 0`` and ``Lᵀ(m⁺ + m⁻)/2`` where ``Δx = 0``.

Every form satisfies ``Σ m⁺Δx⁺ + m⁻Δx⁻ = Σ m_y⁺Δy⁺ + m_y⁻Δy⁻`` exactly. Fourier transforms
(complex) and linear solves ``A⁻¹b`` with ``A`` fixed (signs mixed, ``A⁻¹`` not formed) take
the generic sign split of their outputs and transpose the multiplier.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlift.errors import UnsupportedPrimitiveError
from jaxlift.split_multipliers import SplitMultipliers
from jaxlift.rules import registry
from jaxlift.rules._conv import strided_input_transpose
from jaxlift.rules._util import jvp_live, unbroadcast, vjp_live, wide
from jaxlift.rules.registry import Rule, always


# Strided convolutions are transposed by phases (jaxlift.rules._conv: one dense convolution
# instead of one over the cotangent dilated by the strides, ~1 − 1/s^N of whose multiply-adds
# hit inserted zeros) on these platforms, where the input has at least this many channels.
# Measured on XLA:CPU (benchmarks/bench_conv_transpose.py): 2× on the MNIST CNN's second
# convolution (32 channels), 1.0–1.3× quiet and 0.8× under load on its first (1 channel). On a
# GPU, XLA hands the dilated form to cuDNN's own data-gradient kernel: not measured, not used.
PHASED_TRANSPOSE_PLATFORMS = ("cpu",)
PHASED_TRANSPOSE_MIN_CHANNELS = 8


def _phased_conv_transpose(ctx, cotangent, base):
    """``Lᵀ·cotangent`` of a strided ``conv_general_dilated`` w.r.t. its live input, by phases,
    or ``None`` where that does not apply or does not pay (see above)."""
    params = ctx.params
    if (ctx.live_float != [0] or params.get("preferred_element_type") is not None
            or jax.default_backend() not in PHASED_TRANSPOSE_PLATFORMS):
        return None
    lhs, w = wide(base[0]), wide(base[1])
    if lhs.shape[params["dimension_numbers"].lhs_spec[1]] < PHASED_TRANSPOSE_MIN_CHANNELS:
        return None
    ct = jnp.asarray(cotangent, jnp.result_type(lhs, w))
    g = strided_input_transpose(ct, w, lhs_shape=lhs.shape, **params)
    return None if g is None else g.astype(lhs.dtype)


def _transpose(ctx, cotangents, base=None) -> list:
    """:func:`vjp_live` (``Lᵀ`` w.r.t. the live operands at ``base``), strided convolutions by
    phases where that pays."""
    base = ctx.xs if base is None else base
    if ctx.op.eqn is not None and ctx.op.primitive == "conv_general_dilated" \
            and cotangents[0] is not None:
        g = _phased_conv_transpose(ctx, cotangents[0], base)
        if g is not None:
            return [g, None]
    return vjp_live(ctx, cotangents, base)


def _transpose_pairs(ctx, m_out, base=None) -> list:
    if all(m is None or m.shared for m in m_out):
        g = _transpose(ctx, [None if m is None else m.pos for m in m_out], base)
        return [None if x is None else SplitMultipliers.of(x) for x in g]
    gp = _transpose(ctx, [None if m is None else m.pos for m in m_out], base)
    gn = _transpose(ctx, [None if m is None else m.neg for m in m_out], base)
    return [None if p is None else SplitMultipliers(p, n) for p, n in zip(gp, gn)]


def _structural_split(ctx) -> list:
    pos = jvp_live(ctx, [ctx.split_in(i)[0] for i in ctx.live_float])
    neg = jvp_live(ctx, [ctx.split_in(i)[1] for i in ctx.live_float])
    return list(zip(pos, neg))


LINEAR = Rule("linear", backward=_transpose_pairs, split=_structural_split)


def _coefficients(ctx) -> list:
    """Per live operand, its elementwise coefficient ``w_i`` at the output's shape."""
    ws = []
    zeros = [jnp.zeros_like(wide(ctx.xs[i])) for i in ctx.live_float]
    for k in range(len(ctx.live_float)):
        t = list(zeros)
        t[k] = jnp.ones_like(t[k])
        (w,) = jvp_live(ctx, t)
        ws.append(w)
    return ws


def _scaled_split(ctx) -> list:
    pos, neg = 0, 0
    for i, w in zip(ctx.live_float, _coefficients(ctx)):
        p, n = ctx.split_in(i)
        wp, wn = jnp.maximum(w, 0), jnp.minimum(w, 0)
        pos = pos + wp * p + wn * n
        neg = neg + wp * n + wn * p
    return [(pos, neg)]


def _scaled_backward(ctx, m_out) -> list:
    (m,) = m_out
    if m.shared:
        return _transpose_pairs(ctx, m_out)
    result: list = [None] * len(ctx.xs)
    for i, w in zip(ctx.live_float, _coefficients(ctx)):
        wp, wn = jnp.maximum(w, 0), jnp.minimum(w, 0)
        shape = jnp.shape(ctx.xs[i])
        result[i] = SplitMultipliers(unbroadcast(wp * m.pos + wn * m.neg, shape),
                                     unbroadcast(wp * m.neg + wn * m.pos, shape))
    return result


SCALED = Rule("scaled", backward=_scaled_backward, split=_scaled_split)


def _weighted_operands(ctx):
    (i,) = ctx.live_float
    return i, 1 - i


def _abs_weight_operands(ctx, j) -> list:
    """The operands of ``|L|``: the input's, with the fixed operand ``j`` (the weights) replaced
    by its absolute value (``base=`` of ``ctx.apply`` and of the transposes)."""
    operands = list(ctx.xs)
    operands[j] = jnp.abs(ctx.xs[j])
    return operands


def _weighted_split(ctx) -> list:
    """With ``L± = (L ± |L|)/2`` and ``Δx± = (Δx ± |Δx|)/2``:
    ``Δy⁺ = L⁺(Δx⁺) + L⁻(Δx⁻) = ½(L(Δx) + |L|(|Δx|))`` — two ops instead of four.

    ``L(Δx)`` is applied to the difference rather than read off the values (``y − y0``): the
    two differ by the rounding of ``y`` (``eps·|y|``), and the multipliers of
    :func:`_weighted_backward` explain ``L(Δx)`` exactly; RevealCancel's multiplier of a small
    part would otherwise amplify that rounding (1e-4 of Σ|C| in float32 at large offsets)."""
    i, j = _weighted_operands(ctx)
    delta = ctx.delta_in(i)
    (l_abs,) = ctx.apply(jnp.abs(delta), base=_abs_weight_operands(ctx, j))
    (l_dx,) = ctx.apply(delta)
    pos = (l_dx + l_abs) / 2
    return [(pos, (l_dx - l_abs) / 2)]


def _weighted_backward(ctx, m_out) -> list:
    """``m_x = ½Lᵀ(m⁺ + m⁻) + ½·sign(Δx)·|L|ᵀ(m⁺ − m⁻)`` — equal to ``L⁺ᵀm⁺ + L⁻ᵀm⁻`` where
    ``Δx > 0``, ``L⁻ᵀm⁺ + L⁺ᵀm⁻`` where ``Δx < 0`` and ``Lᵀ(m⁺ + m⁻)/2`` where ``Δx = 0``."""
    (m,) = m_out
    if m.shared:
        return _transpose_pairs(ctx, m_out)
    i, j = _weighted_operands(ctx)
    (total,) = [g for g in _transpose(ctx, [m.pos + m.neg]) if g is not None]
    (diff,) = [g for g in _transpose(ctx, [m.pos - m.neg], _abs_weight_operands(ctx, j))
               if g is not None]
    mx = (total + jnp.sign(ctx.delta_in(i)) * diff) / 2
    result: list = [None] * len(ctx.xs)
    result[i] = SplitMultipliers.of(mx)
    return result


WEIGHTED = Rule("weighted_sum", backward=_weighted_backward, split=_weighted_split)


def _identity_backward(ctx, m_out) -> list:
    return list(m_out) + [None] * (len(ctx.xs) - len(m_out))


def _identity_split(ctx) -> list:
    return [ctx.split_in(i) for i in range(len(ctx.op.outs))]


IDENTITY = Rule("identity", backward=_identity_backward, split=_identity_split)


def _only(*positions):
    """Live only at ``positions`` (index operands must be fixed)."""
    def pred(live):
        return any(live) and all(p in positions or not l for p, l in enumerate(live))
    return pred


def _first_fixed(live):
    return any(live) and not live[0]


def _reading_numbers(rule: Rule) -> Rule:
    """``rule`` for an index-free linear op, also where a live operand is a boolean or an
    integer: it reads them as numbers (a predicate broadcast, reshaped or concatenated before
    ``jnp.where`` uses it; a count added up)."""
    def numbers(ctx, like):
        if len(ctx.live_float) == len(ctx.live_numeric):
            return ctx
        dtypes = [jnp.result_type(v) for v in jax.tree_util.tree_leaves(like)]
        return ctx.as_numbers(jnp.result_type(jnp.float32, *dtypes))

    return Rule(rule.name,
                backward=lambda ctx, m_out: rule.backward(numbers(ctx, m_out), m_out),
                split=lambda ctx: rule.split(numbers(ctx, [ctx.split_in(i)
                                                           for i in ctx.live_numeric])),
                numeric_operands=True)


for _p in ("reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims", "slice",
           "rev", "copy", "copy_p", "reduce_sum", "cumsum", "add", "add_any", "concatenate",
           "pad", "split", "stack", "unstack", "tile"):
    registry.register(_p, _reading_numbers(LINEAR))
for _p in ("reduce_window_sum", "real", "imag", "reduce_and_sum", "complex", "conj"):
    registry.register(_p, LINEAR)
registry.register("dynamic_slice", LINEAR, _only(0))
registry.register("gather", LINEAR, _only(0))
registry.register("dynamic_update_slice", LINEAR, _only(0, 1))
registry.register("scatter-add", LINEAR, _only(0, 2))
registry.register("scatter_add", LINEAR, _only(0, 2))
# x.at[i].set(v) with fixed indices, and dynamic_update_slice under vmap: each output element is
# an element of the operand or of the updates (a selection, linear in the two together)
registry.register("scatter", LINEAR, _only(0, 2))
registry.register("select_n", LINEAR, _first_fixed)  # logic.py: a live predicate (shared)
# Fourier transforms (fft, ifft, rfft, irfft and their n-dimensional forms: one primitive; a
# complex operand or result, so the generic split in RevealCancel modes)
registry.register("fft", LINEAR)


def _solve_backward(ctx, m_out) -> list:
    if ctx.op.primitive == "custom_linear_solve" and \
            any(ctx.live[:sum(ctx.params["const_lengths"])]):
        raise UnsupportedPrimitiveError(
            ctx.op.primitive, ctx.op.where, "the matrix of this linear solve depends on the "
            "input: the solution is not linear in it and has no exact rule (a fixed matrix, "
            "with the right-hand side computed from the input, has one)")
    return _transpose_pairs(ctx, m_out)


# x = A⁻¹b with A fixed: linear in b (jax.scipy.linalg.solve_triangular; jnp.linalg.solve's
# custom_linear_solve, whose matrix its matvec and solve jaxprs read as leading constant
# operands). A⁻¹ mixes signs and is not at hand entry by entry: the generic split (no split=)
SOLVE = Rule("linear_solve", backward=_solve_backward)
registry.register("triangular_solve", SOLVE, _only(1))
registry.register("custom_linear_solve", SOLVE)

registry.register("sub", _reading_numbers(SCALED))
registry.register("neg", _reading_numbers(SCALED))
# mul, div, dot_general, conv_general_dilated: here with one live operand (a live numerator);
# product.py takes two live operands (shared)
registry.register("mul", SCALED, registry.one_live)
registry.register("div", SCALED, lambda live: live == (True, False))

registry.register("dot_general", WEIGHTED, registry.one_live)
registry.register("conv_general_dilated", WEIGHTED, registry.one_live)

# the value unchanged: placement and layout hints (jax.lax.with_sharding_constraint,
# Flax's nn.with_logical_constraint, jax.device_put inside a traced function)
for _p in ("stop_gradient", "optimization_barrier", "reduce_precision", "sharding_constraint",
           "device_put", "layout_constraint"):
    registry.register(_p, IDENTITY)

# Elementwise primitives whose chains are fused into one nonlinearity, and which of them are linear.
registry.mark_elementwise(
    "add", "add_any", "sub", "mul", "div", "neg", "max", "min", "pow", "integer_pow", "exp",
    "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos", "tan", "asin", "acos",
    "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "erf", "erfc", "erf_inv", "sqrt", "rsqrt",
    "cbrt", "abs", "sign", "floor", "ceil", "round", "select_n", "clamp", "convert_element_type",
    "ge", "gt", "le", "lt", "eq", "ne", "lt_to", "le_to", "eq_to", "and", "or", "not", "xor",
    "is_finite", "square", "nextafter", "rem", "atan2", "copy", "copy_p", "stop_gradient",
    "lgamma", "digamma", "reduce_precision", "logaddexp", "sharding_constraint", "device_put",
    "bessel_i0e", "bessel_i1e", "igamma", "igammac", "polygamma", "zeta")
for _p in ("add", "add_any", "sub", "neg", "convert_element_type", "copy", "copy_p",
           "stop_gradient", "reduce_precision", "sharding_constraint", "device_put"):
    registry.mark_linear(_p, always)
registry.mark_linear("mul", registry.one_live)
registry.mark_linear("div", lambda live: live == (True, False))
registry.mark_linear("select_n", _first_fixed)
