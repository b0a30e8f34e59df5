"""The DeepLIFT interpreter: a forward pass on (input, reference), a backward pass of multipliers.

For one pair ``(x, r)`` (no batch axis of its own: :mod:`jaxlift.api` ``vmap``s this over
inputs × references) the forward pass evaluates every live operation of a
:class:`~jaxlift.program.Program` twice, once on the input's values ``v`` and once on the
reference's values ``v0``, keeping the two apart: values of the input never depend on the
reference, so under ``vmap`` over N inputs × K references the input pass runs N times and the
reference pass K times, not N·K (DESIGN §8). Fixed operations (parameters only) run once.
In RevealCancel modes it also carries the split ``Δv = Δv⁺ + Δv⁻`` of every live float variable.

The backward pass seeds the target with a multiplier and walks the program in reverse; each rule
maps output multipliers to input multipliers; fan-out adds. Multipliers are :class:`Pair`
``(m⁺, m⁻)`` — the multipliers of ``Δv⁺`` and ``Δv⁻`` — and are the *same array* in Rescale
mode, which the rules use to skip duplicate work. The contribution of an input is
``m⁺·Δx⁺ + m⁻·Δx⁻`` (DESIGN §2).

The interpreter knows no rule by name: it asks :mod:`jaxlift.rules.registry`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Sequence

import jax.numpy as jnp

from jaxlift import rules as _rules  # noqa: F401  (registers every rule family)
from jaxlift.errors import UnsupportedPrimitiveError
from jaxlift.program import Lit, Op, Program, bind_eqn
from jaxlift.rules import registry

MODES = ("rescale", "reveal_cancel", "genomics_default")
MAX_MODES = ("preserving", "gradient")


class Pair(NamedTuple):
    """Multipliers of the positive and negative parts of a difference, ``(m⁺, m⁻)``."""

    pos: Any
    neg: Any

    @property
    def shared(self) -> bool:
        return self.pos is self.neg

    @staticmethod
    def of(m) -> "Pair":
        return Pair(m, m)

    def map(self, f) -> "Pair":
        """Apply ``f`` to both parts (once when they are the same array)."""
        if self.shared:
            return Pair.of(f(self.pos))
        return Pair(f(self.pos), f(self.neg))

    def __add__(self, other: "Pair") -> "Pair":  # type: ignore[override]
        if self.shared and other.shared:
            return Pair.of(self.pos + other.pos)
        return Pair(self.pos + other.pos, self.neg + other.neg)


@dataclasses.dataclass(frozen=True)
class Config:
    """``mode``: ``rescale`` | ``reveal_cancel`` | ``genomics_default``;
    ``max_mode``: ``preserving`` | ``gradient``."""

    mode: str = "rescale"
    max_mode: str = "preserving"

    @property
    def carries_split(self) -> bool:
        return self.mode in ("reveal_cancel", "genomics_default")


def sign_split(delta):
    """``(max(Δ, 0), min(Δ, 0))``."""
    return jnp.maximum(delta, 0), jnp.minimum(delta, 0)


def combine_by_sign(delta, m: Pair):
    """One multiplier for the whole difference when its split is the sign split:
    ``m⁺`` where ``Δ > 0``, ``m⁻`` where ``Δ < 0``, their mean where ``Δ = 0``."""
    if m.shared:
        return m.pos
    return jnp.where(delta > 0, m.pos, jnp.where(delta < 0, m.neg, (m.pos + m.neg) / 2))


@dataclasses.dataclass
class Forward:
    program: Program
    config: Config
    fixed: dict
    x: dict
    r: dict
    split: dict

    def value(self, atom, which: str):
        if isinstance(atom, Lit):
            return atom.val
        if atom in self.fixed:
            return self.fixed[atom]
        return (self.x if which == "x" else self.r)[atom]

    def delta(self, atom):
        return self.x[atom] - self.r[atom]


def _eval_op(op: Op, read) -> list:
    """Evaluate ``op`` reading operands with ``read(atom)``."""
    if op.eqn is not None:
        return bind_eqn(op.eqn, [read(a) for a in op.ins])
    (source,) = op.ins
    return [eval_body(op.body, source, read(source), read)]


def eval_body(body: Sequence[Op], source: int, value, read_fixed):
    """Evaluate a fused nonlinearity's elementwise ops on ``value`` of its source."""
    env = {source: value}
    out = None
    for op in body:
        vals = [env[a] if (isinstance(a, int) and a in env) else read_fixed(a) for a in op.ins]
        (out,) = bind_eqn(op.eqn, vals)
        env[op.outs[0]] = out
    return out


class RuleContext:
    """What a rule sees of one operation: operand values on the input (``xs``) and on the
    reference (``rs``), results ``ys``/``y0s``, which operands are live, the RevealCancel splits,
    and ``apply`` to re-evaluate the operation with new values of its live float operands."""

    def __init__(self, op: Op, fwd: Forward):
        self.op = op
        self.config = fwd.config
        self.program = fwd.program
        self._fwd = fwd
        self.live = op.live
        self.xs = [fwd.value(a, "x") for a in op.ins]
        self.rs = [fwd.value(a, "r") for a in op.ins]
        self.ys = [fwd.x[o] for o in op.outs]
        self.y0s = [fwd.r[o] for o in op.outs]
        self.live_float = [i for i, a in enumerate(op.ins)
                           if op.live[i] and fwd.program.is_float(a)]

    @property
    def params(self) -> dict:
        return {} if self.op.eqn is None else self.op.eqn.params

    def delta_in(self, i: int):
        return self.xs[i] - self.rs[i]

    def delta_out(self, j: int = 0):
        return self.ys[j] - self.y0s[j]

    def split_in(self, i: int):
        return self._fwd.split[self.op.ins[i]]

    def split_out(self, j: int = 0):
        return self._fwd.split[self.op.outs[j]]

    def bind(self, operands: Sequence[Any]) -> list:
        """Evaluate the operation on a full list of operand values."""
        op = self.op
        if op.eqn is not None:
            return bind_eqn(op.eqn, operands)
        return [eval_body(op.body, op.ins[0], operands[0], lambda a: self._fwd.value(a, "x"))]

    def apply(self, *live_values, base: Sequence[Any] | None = None) -> tuple:
        """Results with the live float operands replaced by ``live_values`` (in order), other
        operands from ``base`` (default: the input's values; fixed operands are the same in
        both passes)."""
        vals = list(self.xs if base is None else base)
        for i, v in zip(self.live_float, live_values):
            vals[i] = v
        return tuple(self.bind(vals))

    def producer(self, atom) -> Op | None:
        return self.program.producer.get(atom) if isinstance(atom, int) else None


def _rule_for(op: Op, config: Config, program: Program):
    if op.eqn is None:
        return registry.nonlinearity_rule(config.mode)
    live_mask = tuple(l and program.is_float(a) for a, l in zip(op.ins, op.live))
    return registry.lookup(op.primitive, live_mask)


def _fixed_values(program: Program, fixed_leaves) -> dict:
    """The program's constants and parameters, by id."""
    return {**program.consts, **dict(zip(program.fixed_inputs, fixed_leaves))}


def side_values(program: Program, fixed_leaves, leaves) -> dict:
    """The values of every live variable (inputs and op results, by id) when the program runs
    on ``leaves``: one side of :func:`forward`, e.g. a reference's, to compute once and reuse."""
    fixed = _fixed_values(program, fixed_leaves)
    values = dict(zip(program.live_inputs, leaves))

    def read(atom):
        if isinstance(atom, Lit):
            return atom.val
        return fixed[atom] if atom in fixed else values[atom]

    for op in program.ops:
        for o, v in zip(op.outs, _eval_op(op, read)):
            (values if op.is_live else fixed)[o] = v
    return values


def forward(program: Program, config: Config, fixed_leaves, x_leaves, r_leaves,
            r_values: dict | None = None) -> Forward:
    """Evaluate the program on one input and one reference (see module doc); with
    ``r_values`` (:func:`side_values` of the reference) the reference side is not re-run."""
    fixed = _fixed_values(program, fixed_leaves)
    r_side = dict(r_values) if r_values is not None else dict(zip(program.live_inputs, r_leaves))
    fwd = Forward(program, config, fixed, dict(zip(program.live_inputs, x_leaves)), r_side, {})
    if config.carries_split:
        for i in program.live_inputs:
            if program.is_float(i):
                fwd.split[i] = sign_split(fwd.delta(i))
    for op in program.ops:
        if not op.is_live:
            for o, v in zip(op.outs, _eval_op(op, lambda a: fwd.value(a, "x"))):
                fixed[o] = v
            continue
        for o, v in zip(op.outs, _eval_op(op, lambda a: fwd.value(a, "x"))):
            fwd.x[o] = v
        if r_values is None:
            for o, v in zip(op.outs, _eval_op(op, lambda a: fwd.value(a, "r"))):
                fwd.r[o] = v
        if config.carries_split and any(program.is_float(o) for o in op.outs):
            _forward_split(op, fwd)
    return fwd


def _forward_split(op: Op, fwd: Forward) -> None:
    rule = _rule_for(op, fwd.config, fwd.program)
    if rule is not None and rule.split is not None and _has_float_live_input(op, fwd.program):
        splits = rule.split(RuleContext(op, fwd))
    else:
        splits = [sign_split(fwd.delta(o)) for o in op.outs]
    for o, s in zip(op.outs, splits):
        if fwd.program.is_float(o):
            fwd.split[o] = s


def _has_float_live_input(op: Op, program: Program) -> bool:
    return any(l and program.is_float(a) for a, l in zip(op.ins, op.live))


def backward(fwd: Forward, seeds: dict) -> dict:
    """Propagate multipliers from ``seeds`` (id -> array shaped like that variable) to every
    live float variable. Returns the dict of :class:`Pair` multipliers by id."""
    program, config = fwd.program, fwd.config
    mult: dict = {k: Pair.of(v) for k, v in seeds.items()}
    for op in reversed(program.ops):
        if not op.is_live:
            continue
        m_out = [mult.get(o) for o in op.outs]
        if all(m is None for m in m_out):
            continue
        if not _has_float_live_input(op, program):
            raise UnsupportedPrimitiveError(
                op.primitive, op.where,
                "its result depends on the input only through integer or boolean values, "
                "which carry no multipliers (summation-to-delta would silently fail)")
        rule = _rule_for(op, config, program)
        if rule is None:
            raise UnsupportedPrimitiveError(op.primitive, op.where, _hint(op, program))
        ctx = RuleContext(op, fwd)
        if config.carries_split and rule.split is None:
            m_out = [None if m is None else Pair.of(combine_by_sign(ctx.delta_out(j), m))
                     for j, m in enumerate(m_out)]
        m_in = rule.backward(ctx, m_out)
        for a, m, l in zip(op.ins, m_in, op.live):
            if m is None or not l or not program.is_float(a):
                continue
            mult[a] = m if a not in mult else mult[a] + m
    return mult


def _hint(op: Op, program: Program) -> str:
    n_live = sum(1 for a, l in zip(op.ins, op.live) if l and program.is_float(a))
    if op.primitive in ("cond", "while", "scan"):
        return (f"control flow with a live {'predicate' if op.primitive == 'cond' else 'carry'} "
                "is not supported yet; use jnp.where or unroll the loop")
    if op.primitive == "select_n":
        return ("jnp.where / lax.select with a predicate that depends on the input, choosing "
                "between values that come from different tensors; wrap the elementwise function "
                "in jax.jit so jaxlift treats it as one nonlinearity")
    return f"{n_live} live operand(s); add a rule with jaxlift.rules.registry.register"


def input_multipliers(fwd: Forward, mult: dict) -> list:
    """One multiplier array per live input leaf (zeros where no multiplier arrived):
    ``m⁺`` where ``Δx > 0``, ``m⁻`` where ``Δx < 0`` — so the contribution is ``m·Δx``."""
    out = []
    for i in fwd.program.live_inputs:
        if not fwd.program.is_float(i):
            out.append(jnp.zeros_like(fwd.x[i], dtype=jnp.float32))
            continue
        m = mult.get(i)
        out.append(jnp.zeros_like(fwd.x[i]) if m is None else combine_by_sign(fwd.delta(i), m))
    return out


def variable_contributions(fwd: Forward, mult: dict, atom: int):
    """Contributions of an intermediate variable: ``m⁺·Δv⁺ + m⁻·Δv⁻`` (``m·Δv`` in Rescale)."""
    m = mult.get(atom)
    if m is None:
        return jnp.zeros_like(fwd.x[atom])
    if fwd.config.carries_split:
        pos, neg = fwd.split[atom]
        return m.pos * pos + m.neg * neg
    return m.pos * fwd.delta(atom)


def variable_multipliers(fwd: Forward, mult: dict, atom: int):
    """Multipliers of an intermediate variable, combined so that ``C = m·Δv``."""
    m = mult.get(atom)
    if m is None:
        return jnp.zeros_like(fwd.x[atom])
    if m.shared:
        return m.pos
    delta = fwd.delta(atom)
    contrib = variable_contributions(fwd, mult, atom)
    safe = jnp.where(delta == 0, 1, delta)
    return jnp.where(delta == 0, (m.pos + m.neg) / 2, contrib / safe)
