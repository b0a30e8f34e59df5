"""The DeepLIFT interpreter: a forward pass on (input, reference), a backward pass of multipliers.

For one pair ``(x, r)`` (no batch axis of its own: :mod:`jaxlift.methods.interpreted`
``vmap``s this over inputs × references) the forward pass evaluates every live operation of a
:class:`~jaxlift.program.Program` twice, once on the input's values ``v`` and once on the
reference's values ``v0``, keeping the two apart: values of the input never depend on the
reference, so under ``vmap`` over N inputs × K references the input pass runs N times and the
reference pass K times, not N·K (docs/design.md §20.1). Fixed operations (parameters only) run once.
In RevealCancel modes it also carries the split ``Δv = Δv⁺ + Δv⁻`` of every live float variable.

Half-precision programs (float16/bfloat16 weights, inputs or casts inside ``fn``) are evaluated
in float32: every operation runs on its operands upcast, with its dtype parameters widened, so
that differences, multipliers and the values they come from keep 24 bits instead of 11 or 8
(docs/design.md §19.1). Scores, ``Δt`` and ``t`` are then those of the float32 evaluation of ``fn``.

The backward pass seeds the target with a multiplier and walks the program in reverse; each rule
maps output multipliers to input multipliers; fan-out adds. Multipliers are
:class:`SplitMultipliers` ``(m⁺, m⁻)`` — the multipliers of ``Δv⁺`` and ``Δv⁻`` — and are the *same array* in Rescale
mode, which the rules use to skip duplicate work. The contribution of an input is
``m⁺·Δx⁺ + m⁻·Δx⁻`` (docs/design.md §6.3).

The interpreter knows no rule by name: it asks the call's
:class:`~jaxlift.rules.composites.Composite` (which rule where, per method), then
:mod:`jaxlift.rules.registry`.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax.numpy as jnp

from jaxlift import rules as _rules  # noqa: F401  (registers every rule family)
from jaxlift._lazy import renamed_attributes
from jaxlift._ops import difference, zeros_of_difference
from jaxlift.errors import UnsupportedPrimitiveError
from jaxlift.jaxpr_walk import bind_eqn
from jaxlift.program import Lit, Op, Program, origin_of, trip_inputs, view_of_input
from jaxlift.rules import registry
from jaxlift.rules.composites import Composite
from jaxlift.split_multipliers import SplitMultipliers, combine_by_sign, sign_split

__all__ = ["Forward", "SplitMultipliers", "RuleContext", "backward", "combine_by_sign",
           "forward", "input_multipliers", "rule_for", "side_state", "side_values", "sign_split",
           "variable_contributions", "variable_multipliers"]

# renamed (issue 27): "pair" elsewhere in jaxlift is an (input, reference) pair
__getattr__ = renamed_attributes(__name__, globals(), {"Pair": "SplitMultipliers"})


@dataclasses.dataclass
class Forward:
    """One pair's forward pass: the values of every live variable on the input (``x``) and on
    the reference (``r``), the fixed values, the RevealCancel splits, and what rules kept for
    the backward pass (``stash``). ``composite`` says which rule explains each operation."""

    program: Program
    composite: Composite
    fixed: dict
    x: dict
    r: dict
    split: dict
    stash: dict = dataclasses.field(default_factory=dict)  # op's first output id -> what a
    # rule with a ``forward`` hook kept for its backward (a loop's per-step values)
    kept: dict = dataclasses.field(default_factory=dict)  # (op's first output id, name) -> a
    # value a rule computed while splitting, read back by its backward (RuleContext.shared)

    def value(self, atom, which: str):
        if isinstance(atom, Lit):
            return atom.val
        if atom in self.fixed:
            return self.fixed[atom]
        return (self.x if which == "x" else self.r)[atom]

    def delta(self, atom):
        """``Δv = v − v0`` in a dtype that holds it (float32 for half precision, numbers for
        booleans and integers: :func:`jaxlift._ops.difference`)."""
        return difference(self.x[atom], self.r[atom])


def _eval_op(op: Op, read) -> list:
    """Evaluate ``op`` reading operands with ``read(atom)``."""
    if op.eqn is not None:
        return bind_eqn(op.eqn, [read(a) for a in op.ins], wide=True)
    (source,) = op.ins
    return [eval_body(op.body, source, read(source), read)]


def body_steps(body: Sequence[Op], source: int, value, read_fixed, until=None):
    """A fused nonlinearity's elementwise ops evaluated on ``value`` of its source, one at a
    time: ``(op, operand values, which operands carry value, result)``; other operands from
    ``read_fixed``. ``until(op, carried)``: stop before the first op it is true of."""
    env = {source: value}
    for op in body:
        carried = tuple(isinstance(a, int) and a in env for a in op.ins)
        if until is not None and until(op, carried):
            return
        vals = [env[a] if c else read_fixed(a) for a, c in zip(op.ins, carried)]
        (out,) = bind_eqn(op.eqn, vals, wide=True)
        env[op.outs[0]] = out
        yield op, vals, carried, out


def eval_body(body: Sequence[Op], source: int, value, read_fixed):
    """Evaluate a fused nonlinearity's elementwise ops on ``value`` of its source."""
    steps = list(body_steps(body, source, value, read_fixed))
    return steps[-1][3] if steps else None


class RuleContext:
    """What a rule sees of one operation: operand values on the input (``xs``) and on the
    reference (``rs``), results ``ys``/``y0s``, which operands are live, the RevealCancel splits,
    and ``apply`` to re-evaluate the operation with new values of its live float operands.

    ``live_float`` lists the live floating-point operands (the ones a derivative exists for);
    ``live_numeric`` every live operand, booleans and integers included (docs/design.md §5.2: liveness
    counts every dtype). Every evaluation runs half precision in float32 (module doc).
    """

    def __init__(self, op: Op, fwd: Forward, splitting: bool = False):
        self.op = op
        self._splitting = splitting
        self._computed: dict = {}
        self._kept = fwd.kept
        self.composite = fwd.composite
        self.program = fwd.program
        self._fwd = fwd
        self.live = op.live
        self.xs = [fwd.value(a, "x") for a in op.ins]
        self.rs = [fwd.value(a, "r") for a in op.ins]
        self.live_float = [i for i, a in enumerate(op.ins)
                           if op.live[i] and fwd.program.is_float(a)]
        self.live_numeric = [i for i, l in enumerate(op.live) if l]

    # results are read when first asked for: a rule's ``forward`` hook runs before they exist
    # (cached, and assignable: :meth:`as_numbers` replaces them on a copy)
    @functools.cached_property
    def ys(self) -> list:
        return [self._fwd.x[o] for o in self.op.outs]

    @functools.cached_property
    def y0s(self) -> list:
        return [self._fwd.r[o] for o in self.op.outs]

    def shared(self, name: str, compute: Callable[[], Any]) -> Any:
        """``compute()``, computed once per pair for this operation: once per context, and what
        the rule's split computed under ``name`` in the forward pass is read back by its
        backward (RevealCancel's parts, Rescale's ratio), so the program holds one copy, not
        two for XLA to merge after tracing and lowering both. Only the split keeps a value
        for the backward pass: one made there may belong to an inner trace (``target="all"``
        maps the backward over targets)."""
        key = (self.op.outs[0], name)
        if key in self._kept:
            return self._kept[key]
        if name not in self._computed:
            self._computed[name] = compute()
            if self._splitting:
                self._kept[key] = self._computed[name]
        return self._computed[name]

    @property
    def stash(self):
        """What this operation's ``Rule.forward`` hook kept for the backward pass."""
        return self._fwd.stash.get(self.op.outs[0])

    @property
    def params(self) -> dict:
        return {} if self.op.eqn is None else self.op.eqn.params

    def delta_in(self, i: int):
        return difference(self.xs[i], self.rs[i])

    def delta_out(self, j: int = 0):
        return difference(self.ys[j], self.y0s[j])

    def split_in(self, i: int):
        return self._fwd.split[self.op.ins[i]]

    def has_split(self, i: int) -> bool:
        """Whether operand ``i`` carries a RevealCancel split (live, and in a split mode)."""
        return self.composite.carries_split and self.live[i] and self.op.ins[i] in self._fwd.split

    def fixed_value(self, atom):
        """The value of a fixed operand (a parameter, a constant, a result of fixed values):
        the same on the input's and the reference's side."""
        return self._fwd.value(atom, "x")

    def split_out(self, j: int = 0):
        return self._fwd.split[self.op.outs[j]]

    def bind(self, operands: Sequence[Any], to=None) -> list:
        """Evaluate the operation on a full list of operand values, with every half-precision
        operand (and dtype parameter) in float32 (see the module doc), or with every narrower
        float in ``to`` (float64 multipliers through a float32 operation)."""
        op = self.op
        if op.eqn is not None:
            return bind_eqn(op.eqn, operands, wide=True, to=to)
        return [eval_body(op.body, op.ins[0], operands[0], lambda a: self._fwd.value(a, "x"))]

    def pre_activation(self, value):
        """A fused nonlinearity's chain on ``value`` of its source up to its first non-linear
        step: the activation's own input (``z + b`` of ``relu(z + b)``, after scalings and
        casts). ``value`` itself for an operation that is not a fused chain."""
        op = self.op
        if op.eqn is not None:
            return value
        steps = list(body_steps(op.body, op.ins[0], value, lambda a: self._fwd.value(a, "x"),
                                until=lambda sub, carried: not registry.is_linear(
                                    sub.primitive, carried)))
        return steps[-1][3] if steps else value

    def chain_steps(self, value) -> list:
        """A fused nonlinearity's elementwise steps evaluated on ``value`` of its source, in
        order: ``(op, operand values, which operands carry value, result)`` each (``[]`` for an
        operation that is not a fused chain)."""
        op = self.op
        if op.eqn is not None:
            return []
        return list(body_steps(op.body, op.ins[0], value, lambda a: self._fwd.value(a, "x")))

    def apply(self, *live_values, base: Sequence[Any] | None = None, to=None) -> tuple:
        """Results with the live float operands replaced by ``live_values`` (in order), other
        operands from ``base`` (default: the input's values; fixed operands are the same in
        both passes); ``to``: see :meth:`bind`."""
        vals = list(self.xs if base is None else base)
        for i, v in zip(self.live_float, live_values):
            vals[i] = v
        return tuple(self.bind(vals, to))

    def producer(self, atom) -> Op | None:
        return self.program.producer.get(atom) if isinstance(atom, int) else None

    def forward_sub(self, program: Program, fixed_leaves, x_leaves, r_leaves,
                    input_splits=None) -> Forward:
        """The interpreter's forward pass on a sub-program (a loop's body), in this mode."""
        return forward(program, self.composite, fixed_leaves, x_leaves, r_leaves,
                       input_splits=input_splits)

    def sub_side(self, program: Program, fixed_leaves, leaves) -> tuple[dict, dict]:
        """One side of a sub-program's forward pass (:func:`side_state`)."""
        return side_state(program, fixed_leaves, leaves)

    def sub_state(self, fwd: Forward, keep_inputs) -> dict:
        """Everything a sub-program's forward pass computed (both sides' values, splits, the
        values of its fixed operations, nested stashes) except its constants and the inputs
        not in ``keep_inputs``: one step of a loop, to stack and hand back to
        :meth:`sub_forward_from`, so that the backward pass does not re-run the forward."""
        prog = fwd.program
        drop = (set(prog.consts) | set(prog.fixed_inputs) | set(prog.live_inputs)) \
            - set(keep_inputs)
        keep = lambda d: {k: v for k, v in d.items() if k not in drop}  # noqa: E731
        return {"fixed": keep(fwd.fixed), "x": keep(fwd.x), "r": keep(fwd.r),
                "split": keep(fwd.split), "stash": dict(fwd.stash)}

    def sub_forward_from(self, program: Program, inputs_x: dict, inputs_r: dict,
                         splits: dict, state: dict) -> Forward:
        """The :class:`Forward` of a sub-program rebuilt from :meth:`sub_state` and the inputs
        that state left out (by id; fixed inputs in ``inputs_x``)."""
        fixed = {**program.consts, **state["fixed"]}
        fixed.update({i: inputs_x[i] for i in program.fixed_inputs if i in inputs_x})
        x = {**state["x"], **{i: inputs_x[i] for i in program.live_inputs if i in inputs_x}}
        r = {**state["r"], **{i: inputs_r[i] for i in program.live_inputs if i in inputs_r}}
        split = {**state["split"], **splits}
        return Forward(program, self.composite, fixed, x, r, split, dict(state["stash"]))

    def backward_sub(self, fwd: Forward, seeds: dict) -> dict:
        """The interpreter's backward pass on a sub-program: seeds and results are
        :class:`SplitMultipliers` multipliers by variable id."""
        return backward(fwd, seeds)

    def as_numbers(self, dtype) -> "RuleContext":
        """This context with boolean and integer values read as floats of ``dtype`` (that of
        the multipliers or splits they meet) and every live operand treated as a float one:
        for index-free linear ops (reshape, broadcast, concatenate, add …) whose numbers are
        what a boolean predicate carries."""
        view = copy.copy(self)
        view._computed, view._kept = {}, {}  # its values are not the original's: share none
        view.xs = [_as_number(v, dtype) for v in self.xs]
        view.rs = [_as_number(v, dtype) for v in self.rs]
        view.ys = [_as_number(v, dtype) for v in self.ys]
        view.y0s = [_as_number(v, dtype) for v in self.y0s]
        view.live_float = list(self.live_numeric)
        return view


def _as_number(v, dtype):
    if jnp.issubdtype(jnp.result_type(v), jnp.inexact):
        return v
    return jnp.asarray(v).astype(dtype)


def rule_for(op: Op, composite: Composite, program: Program):
    """The rule that explains ``op`` under ``composite`` (the composite's entry, else the
    registry's), or ``None``."""
    rule = composite.rule_for(op, program)
    if rule is not None or op.eqn is None:
        return rule
    live_mask = tuple(l and program.carries(a) for a, l in zip(op.ins, op.live))
    return registry.lookup(op.primitive, live_mask)


def _fixed_values(program: Program, fixed_leaves) -> dict:
    """The program's constants and parameters, by id."""
    return {**program.consts, **dict(zip(program.fixed_inputs, fixed_leaves))}


def side_values(program: Program, fixed_leaves, leaves) -> dict:
    """The values of every live variable (inputs and op results, by id) when the program runs
    on ``leaves``: one side of :func:`forward`, e.g. a reference's, to compute once and reuse."""
    return side_state(program, fixed_leaves, leaves)[0]


def side_state(program: Program, fixed_leaves, leaves) -> tuple[dict, dict]:
    """One side of :func:`forward`: ``(values, computed)`` — the values of every live variable
    (inputs and op results, by id), and the results of the operations on fixed values only."""
    fixed = _fixed_values(program, fixed_leaves)
    values = dict(zip(program.live_inputs, leaves))
    computed: dict = {}

    def read(atom):
        if isinstance(atom, Lit):
            return atom.val
        return fixed[atom] if atom in fixed else values[atom]

    for op in program.ops:
        for o, v in zip(op.outs, _eval_op(op, read)):
            if op.is_live:
                values[o] = v
            else:
                fixed[o] = computed[o] = v
    return values, computed


def forward(program: Program, composite: Composite, fixed_leaves, x_leaves, r_leaves,
            r_values: dict | None = None, input_splits: Sequence[Any] | None = None) -> Forward:
    """Evaluate the program on one input and one reference (see module doc); with
    ``r_values`` (:func:`side_values` of the reference) the reference side is not re-run.
    ``input_splits``: the RevealCancel splits ``(Δ⁺, Δ⁻)`` of the live inputs (a loop body's
    carry arrives split by the steps before), else their sign split."""
    fixed = _fixed_values(program, fixed_leaves)
    r_side = dict(r_values) if r_values is not None else dict(zip(program.live_inputs, r_leaves))
    fwd = Forward(program, composite, fixed, dict(zip(program.live_inputs, x_leaves)), r_side, {})
    if composite.carries_split:
        given = input_splits if input_splits is not None else [None] * len(program.live_inputs)
        for i, split in zip(program.live_inputs, given):
            if program.carries(i):
                fwd.split[i] = split if split is not None else sign_split(fwd.delta(i))
    for op in program.ops:
        if not op.is_live:
            for o, v in zip(op.outs, _eval_op(op, lambda a: fwd.value(a, "x"))):
                fixed[o] = v
            continue
        rule = rule_for(op, composite, program)
        if rule is not None and rule.forward is not None and _usable(rule, op, program):
            outs_x, outs_r, fwd.stash[op.outs[0]] = rule.forward(RuleContext(op, fwd))
            fwd.x.update(zip(op.outs, outs_x))
            if r_values is None:
                fwd.r.update(zip(op.outs, outs_r))
        else:
            for o, v in zip(op.outs, _eval_op(op, lambda a: fwd.value(a, "x"))):
                fwd.x[o] = v
            if r_values is None:
                for o, v in zip(op.outs, _eval_op(op, lambda a: fwd.value(a, "r"))):
                    fwd.r[o] = v
        if composite.carries_split and any(program.carries(o) for o in op.outs):
            _forward_split(op, fwd)
    return fwd


def _own_split(rule, op: Op, program: Program) -> bool:
    """Whether ``rule`` splits ``op``'s outputs itself (else the generic sign split is used and
    the output multipliers are collapsed with it before the rule's backward). A complex value
    has no sign: an operation with a complex operand or result takes the generic split, ``(Δ, 0)``
    for complex values, and its rule sees one multiplier per output, as in Rescale — exact,
    whatever the rule (RevealCancel on a complex recurrence, a complex linear map)."""
    if rule is None or rule.split is None:
        return False
    return not any(program.is_complex(a) for a in (*op.ins, *op.outs))


def _forward_split(op: Op, fwd: Forward) -> None:
    rule = rule_for(op, fwd.composite, fwd.program)
    if _own_split(rule, op, fwd.program) and _usable(rule, op, fwd.program):
        splits = rule.split(RuleContext(op, fwd, splitting=True))
    else:
        splits = [sign_split(fwd.delta(o)) if fwd.program.carries(o) else None
                  for o in op.outs]
    for o, s in zip(op.outs, splits):
        if fwd.program.carries(o):
            fwd.split[o] = s


def _usable(rule, op: Op, program: Program) -> bool:
    """Whether ``rule`` can explain ``op``: it has a live float operand, or it handles live
    boolean/integer operands (``Rule.numeric_operands``)."""
    live = [a for a, l in zip(op.ins, op.live) if l and program.carries(a)]
    if rule.numeric_operands:
        return bool(live)
    return bool(live) and all(program.is_float(a) for a in live)


def backward(fwd: Forward, seeds: dict, stop: frozenset = frozenset(),
             inspect: Any = None) -> dict:
    """Propagate multipliers from ``seeds`` (id -> array shaped like that variable) to every
    live variable that carries a difference (floats, and booleans/integers where a rule reads
    them as numbers). Returns the dict of :class:`SplitMultipliers` multipliers by id.

    ``stop``: variables whose multipliers are collected but not propagated further (the sites
    of a marked layer: a cut). Operations that feed only them receive no multiplier and are
    not asked for a rule (an embedding lookup on token ids, say); a path from the target that
    goes *around* them (a residual, a mask computed from the same inputs) is followed down to
    the inputs, so its share of ``Δt`` stays visible at them.

    An operation that receives a multiplier but has no exact rule raises
    :class:`UnsupportedPrimitiveError` naming the primitive and the user's line.
    ``inspect(op, m_out, m_in)``, if given, sees every rule's multipliers (diagnostics)."""
    program, composite = fwd.program, fwd.composite
    mult: dict = {}
    for k, v in seeds.items():
        if isinstance(k, int) and program.carries(k):
            v = v if isinstance(v, SplitMultipliers) else SplitMultipliers.of(v)
            mult[k] = v if k not in mult else mult[k] + v
    for op in reversed(program.ops):
        if not op.is_live:
            continue
        m_out = [None if o in stop else mult.get(o) for o in op.outs]
        if all(m is None for m in m_out):
            continue
        rule = rule_for(op, composite, program)
        if rule is None and not _reads_integers(op, program):
            raise UnsupportedPrimitiveError(op.primitive, _described(op.where),
                                            _hint(op, program))
        if rule is None or not _usable(rule, op, program):
            raise UnsupportedPrimitiveError(
                op.primitive, _described(op.where),
                "its result depends on the input through integer or boolean values that this "
                "rule cannot read as numbers (summation-to-delta would silently fail)"
                + _integer_hint(op, program, around_cut=bool(stop)))
        ctx = RuleContext(op, fwd)
        if composite.carries_split and not _own_split(rule, op, program):
            m_out = [None if m is None
                     else SplitMultipliers.of(combine_by_sign(ctx.delta_out(j), m))
                     for j, m in enumerate(m_out)]
        m_in = rule.backward(ctx, m_out)
        if inspect is not None:
            inspect(op, m_out, m_in)
        for a, m, l in zip(op.ins, m_in, op.live):
            if m is None or not l or not program.carries(a):
                continue
            if not program.is_complex(a) and jnp.iscomplexobj(m.pos):
                m = m.map(jnp.real)  # d Re(g(v))/dv = Re(g'(v)) for a real v
            mult[a] = m if a not in mult else mult[a] + m
    return mult


def _reads_integers(op: Op, program: Program) -> bool:
    return any(l and not program.is_float(a) for a, l in zip(op.ins, op.live))


def _described(where) -> str:
    """A source line with the user's own line after it when it is inside a library."""
    return where.described() if hasattr(where, "described") else str(where)


_INDEXING = ("gather", "dynamic_slice", "dynamic_update_slice", "scatter-add", "scatter_add",
             "scatter")
def _integer_hint(op: Op, program: Program, around_cut: bool = False) -> str:
    live_ints = [a for a, l in zip(op.ins, op.live) if l and not program.is_float(a)]
    inputs = [a for a in (view_of_input(program, a) for a in live_ints) if a is not None]
    # the operations computing those integers from the input (a comparison, a cumsum …)
    origins = [o for o in (origin_of(program, a, str(op.where)) for a in live_ints)
               if o is not None]
    if op.primitive in _INDEXING and around_cut:
        if origins and origins[0].primitive in ("argmax", "argmin"):
            return (f"; it reaches the target around the marked layer, and its indices are "
                    f"picked from the input by '{origins[0].primitive}' at "
                    f"{_described(origins[0].where)}: a pooling at the end-of-sequence token, "
                    "say (CLIP's text pooler takes the argmax of the ids). Pass the position as "
                    "an integer input of its own, held fixed per example "
                    "(jaxlift.references.hold), and pick with it (jnp.take_along_axis); or "
                    "explain an output before the pooling")
        if origins:
            return (f"; it reaches the target around the marked layer, and its indices are "
                    f"computed from the input ('{origins[0].primitive}' at "
                    f"{_described(origins[0].where)}): position ids computed from the token "
                    "ids, say (Hugging Face's RoBERTa does this when position_ids is not "
                    "given). Pass such indices yourself (position_ids=…) as an integer input "
                    "held fixed per example (jaxlift.references.hold), or hold the integer mask "
                    "they are computed from; or mark a value every path from the input passes "
                    "through")
        return ("; it reaches the target around the marked layer, and its indices are an "
                "integer input of fn: position ids passed in, held fixed per example "
                "(jaxlift.references.hold) and so read as fixed; or a second lookup of the "
                "token ids that is not marked: mark its output with the same layer name "
                "(several sites of one name form one cut)")
    if around_cut:
        what = (f"computed from the input ('{origins[0].primitive}' at "
                f"{_described(origins[0].where)})" if origins else "of an input itself")
        return (f"; it reaches the target around the marked layer through integer or boolean "
                f"values {what}, as a mask computed from the token ids is (an end-of-sequence "
                "mask, ids != pad), and no rule reads those as numbers here. Pass such a mask "
                "as an input of its own, held fixed per example (jaxlift.references.hold): a "
                "held integer or boolean input is read as fixed wherever fn uses it (a held "
                "float one too, where no multiplier of it is asked for). Or mark a value every "
                "path from the input passes through")
    if inputs:
        dtype = program.avals[inputs[0]].dtype
        return (f"; the input itself is {dtype}: cast x and refs to a float dtype "
                "(x.astype(jnp.float32)), or, for token ids, explain the embedding output "
                "(jaxlift.layer(h, 'emb') and layer='emb')")
    if op.primitive in _INDEXING:
        origin = (f" (here: '{origins[0].primitive}' at {_described(origins[0].where)})"
                  if origins else "")
        return (f"; indices computed from the input{origin} — take_along_axis(h, argmax(g)), "
                "an embedding lookup of token ids … — have no multipliers. For token models, "
                "explain the embedding output: mark it with jaxlift.layer(h, 'emb') and pass "
                "layer='emb'. " + _BUCKETS)
    if op.primitive == "select_n":
        return ("; an integer index computed from the input picks among the cases (lax.switch, "
                "jnp.select, jnp.digitize): no exact rule reads it, while a boolean predicate "
                "(jnp.where) has one. " + _BUCKETS)
    return ""


_BUCKETS = ("A search of the input in a table (jnp.searchsorted, jnp.digitize, jnp.interp) is a "
            "step function of it: count the comparisons instead, jnp.sum(x[..., None] > edges, "
            "-1), which is exact")


def _hint(op: Op, program: Program) -> str:
    n_live = sum(1 for a, l in zip(op.ins, op.live) if l and program.carries(a))
    if op.primitive == "while":
        if any(op.live[i] for i in trip_inputs(op.eqn)):
            return ("its trip count depends on the input: no multiplier can say how much a "
                    "change in the number of steps moved the result")
        return ("its trip count depends on parameters or other traced values, so the number "
                "of steps is unknown when jaxlift traces it; give the bounds as Python ints "
                "(fori_loop(0, 10, …)) or constants, and it runs as a scan")
    if op.primitive == "select_n":
        return ("lax.switch / jnp.select / select_n with an index that depends on the input and "
                "more than two cases has no exact rule; a boolean predicate (jnp.where, "
                "lax.cond with two branches) has one")
    if op.primitive in ("argmax", "argmin", "sort", "argsort", "top_k"):
        return ("its result is an index or an ordering of the input; no multiplier can say how "
                "much each input moved it")
    return f"{n_live} live operand(s); add a rule with jaxlift.rules.registry.register"


def input_multipliers(fwd: Forward, mult: dict) -> list:
    """One multiplier array per live input leaf (zeros where no multiplier arrived):
    ``m⁺`` where ``Δx > 0``, ``m⁻`` where ``Δx < 0`` — so the contribution is ``m·Δx``.
    Multipliers are in the dtype of differences (float32 for half-precision inputs)."""
    out = []
    for i in fwd.program.live_inputs:
        m = mult.get(i)
        out.append(zeros_of_difference(fwd.x[i]) if m is None
                   else combine_by_sign(fwd.delta(i), m))
    return out


def variable_contributions(fwd: Forward, mult: dict, atom: int):
    """Contributions of an intermediate variable: ``m⁺·Δv⁺ + m⁻·Δv⁻`` (``m·Δv`` in Rescale)."""
    m = mult.get(atom)
    if m is None:
        return zeros_of_difference(fwd.x[atom])
    if fwd.composite.carries_split:
        pos, neg = fwd.split[atom]
        return m.pos * pos + m.neg * neg
    return m.pos * fwd.delta(atom)


def variable_multipliers(fwd: Forward, mult: dict, atom: int):
    """Multipliers of an intermediate variable, combined so that ``C = m·Δv``."""
    m = mult.get(atom)
    if m is None:
        return zeros_of_difference(fwd.x[atom])
    if m.shared:
        return m.pos
    delta = fwd.delta(atom)
    contrib = variable_contributions(fwd, mult, atom)
    safe = jnp.where(delta == 0, 1, delta)
    return jnp.where(delta == 0, (m.pos + m.neg) / 2, contrib / safe)
