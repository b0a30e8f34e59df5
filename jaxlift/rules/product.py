"""The product rule for two live operands (gating, attention): the Shapley split.

For a bilinear ``y = B(a, b)`` (``mul``, ``dot_general``, ``conv_general_dilated`` with both
operands live): ``Δy = B(Δa, b̄) + B(ā, Δb)`` with ``ā = (a + a0)/2``, ``b̄ = (b + b0)/2`` — exact —
so ``m_a = ∂B/∂a(ā, b̄)ᵀ m_y`` and ``m_b = ∂B/∂b(ā, b̄)ᵀ m_y`` (the VJP at the midpoints; for
``mul``: ``m_a = (b + b0)/2``, ``m_b = (a + a0)/2``).

For ``a / b`` with both live: ``Δ(a/b) = Δa·½(1/b + 1/b0) − ā·Δb/(b·b0)``, also exact.

Any other elementwise ``y = f(a, b)`` of two live operands (``pow``, ``atan2``, ``rem``,
``igamma`` …) takes the same two-player Shapley split, by evaluating ``f`` where one operand
has moved and the other has not: ``C_a = ½[f(a, b0) − f(a0, b0) + f(a, b) − f(a0, b)]`` (and
``C_b`` alike), so ``C_a + C_b = f(a, b) − f(a0, b0)`` exactly; ``m_a = C_a/Δa`` (0 where
``Δa = 0``, where ``C_a = 0`` exactly). For a product it is the rule above.

A product of many live factors (``reduce_prod``: ``jnp.prod``) is split by the two orders in
which its factors can move, averaged: ``m_k = ½[Π_{i<k} a_i · Π_{i>k} a0_i + Π_{i<k} a0_i ·
Π_{i>k} a_i]``. Each order telescopes to ``Π a − Π a0`` exactly; for two factors it is the
midpoint rule above.

**Gating** (``mul`` of a gate ``g = σ(·)`` and a signal ``s``, as in LSTM/GRU cells) has a
second rule, chosen with ``gating="gate_as_weight"`` (a composite entry, matched by
:func:`gated_product`) (Arras et al. 2017; Poerner et al. 2018):
the gate acts as a weight, ``m_s = g`` (its value on the input side), ``m_g = 0``. Since
``Δ(g·s) = g·Δs + s0·Δg`` it is exact only where ``s0·Δg = 0``; elsewhere the contributions miss
``s0·Δg`` of the product's difference, and jaxlift reports that completeness gap rather than
hiding it (``return_delta=True``, :func:`jaxlift.completeness_gap`). A gate is a value computed
by ``logistic`` (``jax.nn.sigmoid``), possibly through affine maps with fixed operands
(``1 − z`` in a GRU). A product of two gates, or of two signals, keeps the Shapley rule.

In RevealCancel modes the output is split by sign (the interpreter's generic split) and the
multipliers collapsed with it: the Shapley split has no natural per-sign form, and the sign
split keeps summation-to-delta.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlift.split_multipliers import SplitMultipliers
from jaxlift.rules import registry
from jaxlift.rules._util import quotient_or_zero, unbroadcast, vjp_live, wide
from jaxlift.rules.registry import Rule


def _bilinear_backward(ctx, m_out) -> list:
    (m,) = m_out
    mids = list(ctx.xs)
    for i in ctx.live_float:
        mids[i] = (wide(ctx.xs[i]) + wide(ctx.rs[i])) / 2
    g = vjp_live(ctx, [m.pos], base=mids)
    return [None if v is None else SplitMultipliers.of(_finite_or_zero(v)) for v in g]



# primitives through which a gate stays a gate: affine maps of it with fixed other operands
_AFFINE = frozenset({"add", "sub", "neg", "mul", "convert_element_type", "copy", "copy_p"})


def _is_gate(program, atom) -> bool:
    """Whether ``atom`` is computed by ``logistic`` from a live value, followed only by affine
    maps with fixed operands (``σ(h)``, ``1 − σ(h)``)."""
    producer = lambda a: program.producer.get(a) if isinstance(a, int) else None  # noqa: E731
    op = producer(atom)
    while op is not None:
        if op.eqn is None:  # a fused nonlinearity: σ, then affine ops on the chain
            names = [o.primitive for o in op.body]
            if "logistic" not in names:
                return False
            tail = names[len(names) - names[::-1].index("logistic"):]
            return all(n in _AFFINE for n in tail)
        if op.primitive not in _AFFINE or sum(op.live) != 1:
            return False
        (atom,) = [a for a, l in zip(op.ins, op.live) if l]
        op = producer(atom)
    return False


def _gate_index(op, program) -> int | None:
    """The operand of a ``mul`` of two live floats that is the gate, when exactly one is."""
    if op.eqn is None or op.primitive != "mul":
        return None
    live = [i for i, (a, l) in enumerate(zip(op.ins, op.live)) if l and program.is_float(a)]
    if len(live) != 2:
        return None
    gates = [i for i in live if _is_gate(program, op.ins[i])]
    return gates[0] if len(gates) == 1 else None


def gated_product(op, program) -> bool:
    """A composite's match: a ``mul`` of a gate and a signal (module doc)."""
    return _gate_index(op, program) is not None


def _gate_as_weight_backward(ctx, m_out) -> list:
    """``m_s = g`` (the gate's input-side value), ``m_g = 0`` (module doc)."""
    (m,) = m_out
    gate = _gate_index(ctx.op, ctx.program)
    (signal,) = [i for i in ctx.live_float if i != gate]
    g = wide(ctx.xs[gate])
    result: list = [None] * len(ctx.xs)
    result[signal] = SplitMultipliers.of(unbroadcast(_finite_or_zero(m.pos * g),
                                                     ctx.xs[signal].shape))
    return result


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
    return [SplitMultipliers.of(unbroadcast(_finite_or_zero(ma), a.shape)),
            SplitMultipliers.of(unbroadcast(_finite_or_zero(mb), b.shape))]


def _two_player_backward(ctx, m_out) -> list:
    (m,) = m_out
    i, j = ctx.live_float
    a, a0, b, b0 = (wide(v) for v in (ctx.xs[i], ctx.rs[i], ctx.xs[j], ctx.rs[j]))
    y, y0 = wide(ctx.ys[0]), wide(ctx.y0s[0])
    y_a = wide(ctx.apply(a, b0)[0])  # only a moved
    y_b = wide(ctx.apply(a0, b)[0])  # only b moved
    shares = ((i, a - a0, ((y_a - y0) + (y - y_b)) / 2),
              (j, b - b0, ((y_b - y0) + (y - y_a)) / 2))
    result: list = [None] * len(ctx.xs)
    for k, d, c in shares:
        result[k] = SplitMultipliers.of(unbroadcast(m.pos * quotient_or_zero(c, d),
                                                    jnp.shape(ctx.xs[k])))
    return result


def _exclusive_products(v, reverse: bool = False):
    """``Π_{i<k} v_i`` along the last axis (``Π_{i>k}`` with ``reverse``), without dividing."""
    v = jnp.flip(v, -1) if reverse else v
    ones = jnp.ones(v.shape[:-1] + (1,), v.dtype)
    out = jnp.cumprod(jnp.concatenate([ones, v[..., :-1]], -1), -1)
    return jnp.flip(out, -1) if reverse else out


def _many_factors_backward(ctx, m_out) -> list:
    (m,) = m_out
    axes = tuple(sorted(ctx.params["axes"]))
    a, a0 = wide(ctx.xs[0]), wide(ctx.rs[0])
    kept = [d for d in range(a.ndim) if d not in axes]
    order = kept + list(axes)  # the factors last, flattened into one axis

    def factors(v):
        return jnp.transpose(v, order).reshape(tuple(a.shape[d] for d in kept) + (-1,))

    f, f0 = factors(a), factors(a0)
    w = (_exclusive_products(f) * _exclusive_products(f0, reverse=True)
         + _exclusive_products(f0) * _exclusive_products(f, reverse=True)) / 2
    g = (m.pos[..., None] * w).reshape(tuple(a.shape[d] for d in order))
    return [SplitMultipliers.of(jnp.transpose(g, tuple(order.index(d) for d in range(a.ndim))))]


BILINEAR = Rule("product", backward=_bilinear_backward)
MANY_FACTORS = Rule("product_of_many", backward=_many_factors_backward)
TWO_PLAYER = Rule("two_player_shapley", backward=_two_player_backward)
GATE_AS_WEIGHT = Rule("gate_as_weight", backward=_gate_as_weight_backward,  # by a composite
                      exact=False)
QUOTIENT = Rule("quotient", backward=_quotient_backward)

# linear.py owns these primitives (one live operand, or a live numerator: a linear map); this
# family takes the masks where two operands are live
for _p in ("mul", "dot_general", "conv_general_dilated"):
    registry.register(_p, BILINEAR, registry.several_live, shared=True)
registry.register("div", QUOTIENT, lambda live: live == (True, True), shared=True)
registry.register("reduce_prod", MANY_FACTORS, registry.one_live)
for _p in ("pow", "atan2", "rem", "igamma", "igammac", "polygamma", "zeta", "logaddexp"):
    registry.register(_p, TWO_PLAYER, lambda live: live == (True, True))


def _running(combine):
    """A running reduction (``cumprod``, ``cumlogsumexp``) written as
    ``lax.associative_scan(combine)`` along its axis: pairwise ``combine`` of two live operands
    (the product rule, the two-player rule) and slices, each exact, so the whole is."""
    def expand(params):
        return lambda x: jax.lax.associative_scan(combine, x, reverse=params["reverse"],
                                                  axis=params["axis"])
    return expand


registry.register_expansion("cumprod", _running(jnp.multiply))
registry.register_expansion("cumlogsumexp", _running(jnp.logaddexp))
