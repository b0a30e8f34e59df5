"""The RevealCancel rule for a nonlinearity of one live input, and the match of the
``genomics_default`` mix (:mod:`jaxlift.rules.composites`).

With ``Δx = Δx⁺ + Δx⁻`` the split arriving from below (docs/design.md §9.2, paper eq. for RevealCancel):

* ``Δy⁺ = ½[f(x0+Δx⁺) − f(x0)] + ½[f(x0+Δx⁻+Δx⁺) − f(x0+Δx⁻)]``
* ``Δy⁻ = ½[f(x0+Δx⁻) − f(x0)] + ½[f(x0+Δx⁺+Δx⁻) − f(x0+Δx⁺)]``
* ``m(x⁺→y⁺) = Δy⁺/Δx⁺``, ``m(x⁻→y⁻) = Δy⁻/Δx⁻`` (their limits where a part is tiny).

``f(x0 + Δx⁺ + Δx⁻)`` is taken as ``f(x)`` itself, so ``Δy⁺ + Δy⁻ = Δy`` holds to rounding.

RevealCancel evaluates ``f`` at ``x0 + Δx⁺`` and ``x0 + Δx⁻``, points the network never visited;
where ``f`` is undefined there (``log``/``sqrt`` of a negative number, e.g. a ``log_softmax``
whose summed exponentials split into parts larger than the reference sum), or so large there
beside the values visited that ``Δy⁺`` and ``Δy⁻`` would cancel only to their own rounding
(``exp`` in an attention softmax, far above the largest logit: :func:`far_from_visited`), the
element falls back to Rescale (``Δy± = (Δy/Δx)·Δx±``), which still sums to ``Δy``.

``genomics_default`` (the original deeplift's default): RevealCancel on a nonlinearity whose
input comes from a dense layer (``dot_general``, looking through bias adds, reshapes and dtype
casts), Rescale everywhere else (convolutions, pooling, inputs).
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxlift._ops import computed_together
from jaxlift.jaxpr_walk import VIEWS, call_body
from jaxlift.split_multipliers import SplitMultipliers
from jaxlift.rules._util import wide
from jaxlift.rules import registry
from jaxlift.rules.registry import Rule
from jaxlift.rules.rescale import (derivative_at, exact_multiplier, finite_values,
                                   rounding_of, shared_multiplier, value_and_derivative)


# ``ρ``: how much of the values the network visited the rounding of RevealCancel's parts may
# be, by dtype: a quarter of the completeness certificate's rtol in float32 (jaxlift.certificate),
# and a fortieth of the README's float64 bound (1e-10) in float64
VISITED_RANGE_RTOL = {jnp.dtype(jnp.float64): 2.5e-12, jnp.dtype(jnp.float32): 2.5e-5}


def far_from_visited(dtype, fp, fn, scale):
    """Where ``f`` at the hypothetical points is so large beside the values the network
    visited that the parts ``Δy±`` (of size ``|f(x0 + Δx±)|``) would cancel only to their own
    rounding: ``eps·(|f(x0+Δx⁺)| + |f(x0+Δx⁻)|) > ρ·scale``, with ``scale`` the values
    visited and the distances moved (``|y| + |y0| + |x| + |x0| + |Δx⁺| + |Δx⁻|``): never for a
    function that grows at most linearly (relu, tanh, sigmoid …), but for ``exp`` of a softmax
    at points far above the largest logit. There the element falls back to Rescale."""
    wide_dtype = jnp.promote_types(dtype, jnp.float32)
    eps = jnp.finfo(wide_dtype).eps
    rho = VISITED_RANGE_RTOL.get(jnp.dtype(wide_dtype), 2.5e-5)
    return eps * (jnp.abs(fp) + jnp.abs(fn)) > rho * scale


def reveal_cancel_parts(ctx):
    """``(Δy⁺, Δy⁻, m⁺, m⁻)`` of the nonlinearity, in at least float32.

    ``m± = Δy±/Δx±``, or its limit (``½[f'(x0) + f'(x0 + Δx∓)]``) where that loses nothing
    (:func:`~jaxlift.rules.rescale.exact_multiplier`). Where a part cannot carry its share —
    ``Δx± = 0`` while ``Δy±`` is more than rounding, or ``f`` is not finite at ``x0 + Δx±`` —
    the element falls back to Rescale (``Δy± = (Δy/Δx)·Δx±``), which still sums to ``Δy``.
    """
    p, n = ctx.split_in(0)
    x0 = ctx.rs[0]
    y, y0 = wide(ctx.ys[0]), wide(ctx.y0s[0])
    point = lambda part: (wide(x0) + part).astype(x0.dtype)  # noqa: E731
    fp, dfp = (wide(v) for v in value_and_derivative(ctx, point(p)))
    fn, dfn = (wide(v) for v in value_and_derivative(ctx, point(n)))
    d0 = derivative_at(ctx, "r")
    dyp = 0.5 * (fp - y0) + 0.5 * (y - fn)
    dyn = 0.5 * (fn - y0) + 0.5 * (y - fp)
    rounding = rounding_of(ctx.ys[0].dtype, y, y0, fp, fn)
    mp = exact_multiplier(dyp, p, (d0 + dfn) / 2, rounding)
    mn = exact_multiplier(dyn, n, (d0 + dfp) / 2, rounding)
    visited = (jnp.abs(y) + jnp.abs(y0) + jnp.abs(wide(ctx.xs[0])) + jnp.abs(wide(x0))
               + jnp.abs(p) + jnp.abs(n))
    far = far_from_visited(ctx.ys[0].dtype, fp, fn, visited)
    # f(x0 + Δx±) or m± not finite: one test, on their sum (not finite iff one of them is not)
    lost = (((p == 0) & (jnp.abs(dyp) > rounding)) | ((n == 0) & (jnp.abs(dyn) > rounding))
            | ~jnp.isfinite(fp + fn + mp + mn) | far)
    guards = domain_guards(ctx.op)
    if guards:  # a point only a clamp keeps in f's domain is an undefined point too
        clamped = lambda v: clamped_by(ctx, v, guards)  # noqa: E731
        lost = lost | ((clamped(point(p)) | clamped(point(n)))
                       & ~(clamped(ctx.xs[0]) | clamped(x0)))
    ratio = shared_multiplier(ctx)
    dyp = jnp.where(lost, ratio * p, dyp)
    dyn = jnp.where(lost, ratio * n, dyn)
    # where x, x0, y or y0 is not finite the multipliers are 0: Rescale's ratio is 0 there
    use_ratio = lost | ~finite_values(ctx)
    mp = jnp.where(use_ratio, ratio, mp)
    mn = jnp.where(use_ratio, ratio, mn)
    if feeds_fused_work(ctx.op, ctx.program):  # the four share every guard above
        return computed_together(dyp, dyn, mp, mn)
    return dyp, dyn, mp, mn


_CLAMPS = frozenset(("max", "min", "clamp"))
# functions singular at a point that a clamp may guard (a variance ≥ 0 under rsqrt, a log's
# floor): infinite there, or their slope is
_SINGULAR = frozenset(("rsqrt", "log", "log1p", "sqrt", "div", "pow", "atanh", "acosh",
                       "lgamma", "digamma"))


def _singular(op) -> bool:
    if op.primitive == "integer_pow":
        return op.eqn.params.get("y", 1) < 0
    return op.primitive in _SINGULAR


def _is_clamp(op) -> bool:
    """``max``/``min``/``clamp``, or a call that computes one (``jnp.clip``'s ``jit``; its bound
    cast to the value's type inside)."""
    if op.primitive in _CLAMPS:
        return True
    body = None if op.eqn is None else call_body(op.eqn)
    if body is None:
        return False
    names = [e.primitive.name for e in body[0].eqns]
    return any(n in _CLAMPS for n in names) and all(
        n in _CLAMPS or n == "convert_element_type" for n in names)


def domain_guards(op) -> tuple:
    """Indexes, in a fused nonlinearity's chain, of the clamps (``max``/``min`` with a bound,
    ``clamp``) that a function singular at a point (``rsqrt``, ``log``, a reciprocal …) follows:
    a fast variance ``rsqrt(max(E[x²] − E[x]², 0) + ε)``, a floored ``log(max(v, 1e-12))``. The
    clamp keeps rounding out of the singular function's undefined side; a point where it acts
    but at neither visited point is outside ``f``'s domain in all but name (docs/design.md
    §9.3). A chain of clamps alone (relu, relu6) has none."""
    body = op.body
    return tuple(i for i, sub in enumerate(body)
                 if _is_clamp(sub) and any(_singular(s) for s in body[i + 1:]))


def clamped_by(ctx, value, guards: tuple):
    """Where one of the chain's ``guards`` (:func:`domain_guards`) changes its operand when
    the chain runs on ``value`` of its source (``False`` where none carries the value)."""
    steps = ctx.chain_steps(value)
    acted = jnp.zeros(jnp.shape(value), bool)
    for i in guards:
        sub, vals, carried, out = steps[i]
        one = (carried == (False, True, False)) if sub.primitive == "clamp" else sum(carried) == 1
        if one:  # the bound is not the chain's value: the operation clamps it
            acted = acted | (vals[carried.index(True)] != out)
    return acted


_READ_FROM_MEMORY = frozenset(("dot_general", "conv_general_dilated"))


def feeds_fused_work(op, program) -> bool:
    """Whether the nonlinearity's result reaches (through reshapes, slices, transposes and casts) an
    operation that XLA fuses its producers into — anything but a contraction or a pooling
    window, which read their operands from memory. There its RevealCancel parts are computed
    together (:func:`jaxlift._ops.computed_together`), once, instead of once per part inside
    every reader (a transformer's layer norms and softmaxes chain such operations; docs/design.md
    §20.10); before a contraction or a pool they stay four fused expressions, which costs less
    (the MNIST and cats-vs-dogs CNNs: 15–20 % slower stacked)."""
    frontier, readers = set(op.outs), program.consumers
    pending = [r for o in op.outs for r in readers.get(o, ())]
    while pending:
        reader = pending.pop()
        if reader.primitive in VIEWS:
            pending += [r for o in reader.outs if o not in frontier for r in readers.get(o, ())]
            frontier.update(reader.outs)
        elif (reader.primitive not in _READ_FROM_MEMORY
              and not reader.primitive.startswith("reduce_window")):
            return True
    return False


def _parts(ctx):
    return ctx.shared("reveal_cancel_parts", lambda: reveal_cancel_parts(ctx))


def _backward(ctx, m_out) -> list:
    (m,) = m_out
    _, _, mp, mn = _parts(ctx)
    return [SplitMultipliers(m.pos * mp, m.neg * mn)]


def _split(ctx) -> list:
    dyp, dyn, _, _ = _parts(ctx)
    return [(dyp, dyn)]


REVEAL_CANCEL = Rule("reveal_cancel", backward=_backward, split=_split)


def shifted_by_a_stopped_value(op, program) -> bool:
    """An ``add`` or ``sub`` of live float values, one of them (through views) the result of
    ``stop_gradient``: a numerical shift, as ``jax.nn.softmax``, ``log_softmax`` and
    ``logsumexp`` subtract ``stop_gradient(max z)`` from ``z`` before ``exp``. The function does
    not depend on the shift, but the RevealCancel split does: the linear rule gives ``Δs⁺ =
    Δz⁺ − Δm⁻`` and ``Δs⁻ = Δz⁻ − Δm⁺``, which at the largest element (``s = 0`` on both sides,
    ``Δs = 0``) are ``±Δz`` — and ``exp`` there turns them into opposing parts of ``e^{|Δz|}``
    (Σ|C| 15–500× Rescale's on softmaxes and peaked attention, exact all the same). Such an
    operation takes :data:`NET_SPLIT`."""
    if op.eqn is None or op.primitive not in ("add", "sub"):
        return False
    live = [a for a, l in zip(op.ins, op.live) if l and program.carries(a)]
    return (len(live) > 1 and all(program.is_float(a) for a in live)
            and any(_stopped(a, program) for a in live))


def _stopped(atom, program) -> bool:
    source = _source_through(atom, program, VIEWS)
    return source is not None and source.primitive == "stop_gradient"


def _source_through(atom, program, through, steps: int = 16):
    """The operation that produces ``atom``, looking back through operations in ``through``
    with one live operand (up to ``steps`` of them); ``None`` where there is none (an input, a
    constant, more steps)."""
    for _ in range(steps):
        op = program.producer.get(atom) if isinstance(atom, int) else None
        if op is None or op.primitive not in through or sum(op.live) != 1:
            return op
        atom = next(a for a, l in zip(op.ins, op.live) if l)
    return None


def _registry_backward(ctx, m_out) -> list:
    live = tuple(l and ctx.program.carries(a) for a, l in zip(ctx.op.ins, ctx.op.live))
    return registry.lookup(ctx.op.primitive, live).backward(ctx, m_out)


# the operation's own linear rule, under the generic split of its result (the sign of its net
# difference): the shift's parts and the value's no longer grow apart; exact as any linear rule
NET_SPLIT = Rule("linear, net split", backward=_registry_backward)

_PASS_THROUGH = {"reshape", "broadcast_in_dim", "convert_element_type", "squeeze",
                 "expand_dims", "copy", "copy_p", "add", "sub"}
_DENSE = {"dot_general"}


def fed_by_dense(op, program) -> bool:
    """Whether the nonlinearity's input comes from a dense layer (``dot_general`` with one live
    operand), looking back through bias adds, reshapes and casts."""
    source = _source_through(op.ins[0], program, _PASS_THROUGH)
    return source is not None and source.primitive in _DENSE and sum(source.live) == 1

