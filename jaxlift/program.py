"""Trace a function to a flat program of live and fixed operations, ready for DeepLIFT.

``build_program`` traces ``f(fixed_args, live_args)`` with :func:`jax.make_jaxpr`, inlines
nested call-like jaxprs (``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``,
``closed_call``) so that rules apply to their bodies, marks every variable *live* (it depends on
the live arguments) or *fixed*, drops dead code, and fuses chains of elementwise operations fed by
one live tensor into a single *nonlinearity* node (docs/design.md §5.4: ``jax.nn.relu``, ``gelu``,
``jnp.where(x > 0, x, 0)`` … are each one Rescale/RevealCancel nonlinearity, whatever is inside).

The program is a list of :class:`Op` in topological order over integer variable ids. It knows no
DeepLIFT rule; it asks the registry only which primitives are elementwise and which are linear.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from jaxlift.jaxpr_walk import VIEWS, call_body, live_equations, scan_layout, where_of
from jaxlift.markers import marker_of
from jaxlift.rules import registry

@dataclasses.dataclass(frozen=True)
class Lit:
    """A literal operand (a Python or NumPy scalar baked into the jaxpr)."""

    val: Any


@dataclasses.dataclass(eq=False)
class Op:
    """One node of the program.

    ``eqn`` is the jaxpr equation to bind (``None`` for a fused nonlinearity, whose ``body`` holds
    the elementwise ops computing ``outs[0]`` from ``ins[0]``). ``live`` tells which operands are
    live; ``where`` is the user's source line.
    """

    eqn: Any
    ins: tuple
    outs: tuple
    live: tuple
    where: str
    body: tuple = ()
    opaque_elementwise: bool = False
    sub: Any = None  # a loop's body as a Program (``scan``), for rules that recurse into it

    @property
    def primitive(self) -> str:
        """The primitive's name; a fused nonlinearity lists the primitives inside it, e.g.
        ``nonlinearity[gt, select_n, mul]``."""
        if self.eqn is not None:
            return self.eqn.primitive.name
        names = list(dict.fromkeys(op.primitive for op in self.body))
        return f"nonlinearity[{', '.join(names)}]"

    @property
    def is_live(self) -> bool:
        return any(self.live)


@dataclasses.dataclass
class Program:
    avals: dict  # id -> ShapedArray
    fixed_inputs: list  # ids of the fixed (parameter) leaves
    live_inputs: list  # ids of the live (input) leaves
    consts: dict  # id -> constant value
    ops: list  # topological order
    outputs: list  # atoms
    live: set  # live ids
    markers: dict  # layer name -> list of (tree token or None, ids of the site's leaves)
    producer: dict  # id -> Op
    source: Any = None  # the closed jaxpr it was built from (build_program), or None

    def marked_ids(self, name: str) -> tuple:
        """Every id marked ``name``: the leaves of all its sites, in trace order (one cut)."""
        return tuple(i for _, ids in self.markers[name] for i in ids)

    def is_float(self, atom) -> bool:
        return isinstance(atom, int) and jnp.issubdtype(self.avals[atom].dtype, jnp.inexact)

    def is_complex(self, atom) -> bool:
        return isinstance(atom, int) and jnp.issubdtype(self.avals[atom].dtype,
                                                        jnp.complexfloating)

    def carries(self, atom) -> bool:
        """Whether a variable can carry a difference and a multiplier: floats, and booleans and
        integers read as numbers (docs/design.md §5.2: liveness counts every dtype; rules that cannot
        read them refuse). Keys, tokens and other opaque types cannot."""
        if not isinstance(atom, int):
            return False
        dtype = self.avals[atom].dtype
        return (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_))

    def is_live(self, atom) -> bool:
        return isinstance(atom, int) and atom in self.live

    def live_values(self) -> set:
        """Ids of the values each side of the forward pass keeps: the live inputs and the
        results of live operations."""
        return set(self.live_inputs) | {o for op in self.ops if op.is_live for o in op.outs}

    @functools.cached_property
    def consumers(self) -> dict:
        """id -> the live operations that read it, in program order."""
        readers: dict = {}
        for op in self.ops:
            if op.is_live:
                for a in dict.fromkeys(a for a in op.ins if isinstance(a, int)):
                    readers.setdefault(a, []).append(op)
        return readers


class _Builder:
    def __init__(self):
        self.avals: dict = {}
        self.consts: dict = {}
        self.ops: list = []
        self.live: set = set()
        self.markers: dict = {}
        self._next = 0

    def new(self, aval, live: bool = False) -> int:
        i = self._next
        self._next += 1
        self.avals[i] = aval
        if live:
            self.live.add(i)
        return i

    def const(self, value) -> int:
        i = self.new(jax.typeof(value))
        self.consts[i] = value
        return i

    def is_live(self, atom) -> bool:
        return isinstance(atom, int) and atom in self.live

    def shape(self, atom):
        return tuple(atom.val.shape) if isinstance(atom, Lit) and hasattr(atom.val, "shape") else (
            () if isinstance(atom, Lit) else tuple(self.avals[atom].shape))


def _elementwise_body(jaxpr, live_in: Sequence[bool], shape: tuple) -> bool:
    """Whether every live equation of ``jaxpr`` is elementwise at ``shape`` (recursively)."""
    for eqn, lmask in live_equations(jaxpr, live_in):
        body = call_body(eqn)
        if body is not None:
            if not _elementwise_body(body[0], lmask, shape):
                return False
        elif not registry.is_elementwise(eqn.primitive.name):
            return False
        for v, l in zip(eqn.invars, lmask):
            if l and tuple(v.aval.shape) != shape:
                return False
        if any(tuple(v.aval.shape) != shape for v in eqn.outvars):
            return False
    return True


def _inline(b: _Builder, jaxpr, consts, in_atoms, call_site: str = "",
            enclosing: str = "") -> list:
    """Append ``jaxpr``'s equations to ``b``; nested equations report the user's line of the
    outermost call (``call_site``), since a cached inner trace may hold no user frame. A loop's
    body keeps its own lines, and an equation with none (traced inside JAX's own functions:
    ``jnp.searchsorted``'s scan) reports the loop's line (``enclosing``)."""
    env: dict = {}
    for v, c in zip(jaxpr.constvars, consts):
        env[v] = b.const(c)
    for v, a in zip(jaxpr.invars, in_atoms):
        env[v] = a

    def read(v):
        return Lit(v.val) if isinstance(v, jcore.Literal) else env[v]

    for eqn in jaxpr.eqns:
        ins = tuple(read(v) for v in eqn.invars)
        live = tuple(b.is_live(a) for a in ins)
        where = call_site or where_of(eqn) or enclosing
        body = call_body(eqn)
        marker = marker_of(eqn)
        if marker is not None:
            name, token = marker
            b.markers.setdefault(name, []).append((token, ins))
            for v, a in zip(eqn.outvars, ins):
                env[v] = a
            continue
        expand = registry.expansion(eqn.primitive.name) if any(live) else None
        if expand is not None:  # explained as the operations it is written with
            written = jax.make_jaxpr(expand(eqn.params))(
                *(jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in eqn.invars))
            for v, a in zip(eqn.outvars, _inline(b, written.jaxpr, written.consts, ins,
                                                 call_site or where, enclosing)):
                env[v] = a
            continue
        if eqn.primitive.name == "scan" and any(live):
            outs = tuple(b.new(v.aval, live=True) for v in eqn.outvars)
            for v, o in zip(eqn.outvars, outs):
                env[v] = o
            b.ops.append(Op(eqn, ins, outs, live, where, sub=_scan_body(eqn, live, where)))
            continue
        if eqn.primitive.name == "while" and any(live):
            outs = _inline_while(b, eqn, ins, where)
            if outs is not None:
                for v, a in zip(eqn.outvars, outs):
                    env[v] = a
                continue
        if eqn.primitive.name == "cond" and any(live):
            for v, a in zip(eqn.outvars, _inline_cond(b, eqn, ins, where)):
                env[v] = a
            continue
        if body is not None and _transparent(eqn):
            for v, a in zip(eqn.outvars,
                            _inline(b, body[0], body[1], ins, call_site, enclosing)):
                env[v] = a
            continue
        opaque = False
        if body is not None and any(live):
            live_atoms = {a for a, l in zip(ins, live) if l}
            out_shapes = {tuple(v.aval.shape) for v in eqn.outvars}
            shapes = {b.shape(a) for a in live_atoms}
            shape = next(iter(shapes)) if len(shapes) == 1 else None
            # a chain of one live float: one nonlinearity (a boolean or integer operand is
            # inlined, for the rules that read it as a number: a select's predicate)
            opaque = (len(live_atoms) == 1 and len(eqn.outvars) == 1 and out_shapes == {shape}
                      and all(jnp.issubdtype(b.avals[a].dtype, jnp.inexact) for a in live_atoms)
                      and _elementwise_body(body[0], live, shape))
            if not opaque:
                outs = _inline(b, body[0], body[1], ins, where)
                for v, a in zip(eqn.outvars, outs):
                    env[v] = a
                continue
        outs = tuple(b.new(v.aval, live=any(live)) for v in eqn.outvars)
        for v, o in zip(eqn.outvars, outs):
            env[v] = o
        b.ops.append(Op(eqn, ins, outs, live, where, opaque_elementwise=opaque))
    return [read(v) for v in jaxpr.outvars]


def _inputs_of(jaxpr, outputs: Sequence[int]) -> set:
    """Indices of ``jaxpr``'s inputs that the outputs at ``outputs`` depend on."""
    needed = {jaxpr.outvars[i] for i in outputs if not isinstance(jaxpr.outvars[i], jcore.Literal)}
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            needed.update(v for v in eqn.invars if not isinstance(v, jcore.Literal))
    return {i for i, v in enumerate(jaxpr.invars) if v in needed}


def trip_inputs(eqn) -> set:
    """The ``while`` operands its trip count depends on: what the predicate reads, closed
    under the body's updates of those carries."""
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cond, body = p["cond_jaxpr"].jaxpr, p["body_jaxpr"].jaxpr
    read = _inputs_of(cond, [0])
    operands = {i for i in read if i < nc}
    carries = {i - nc for i in read if i >= nc}
    while True:
        deps = _inputs_of(body, sorted(carries))
        grown = carries | {i - nb for i in deps if i >= nb}
        operands |= {nc + i for i in deps if i < nb}
        if grown == carries:
            break
        carries = grown
    return operands | {nc + nb + i for i in carries}


_MAX_TRIPS = 1_000_000


def _trip_count(eqn, ins: tuple, b: "_Builder", needed: set) -> int | None:
    """The number of steps of a ``while`` whose trip count depends only on constants, counted
    by running the loop on them (other operands are zeros: they cannot change the count);
    ``None`` where a needed operand is not a constant (a parameter, the input)."""
    values = []
    for i, (a, v) in enumerate(zip(ins, eqn.invars)):
        if i in needed:
            if isinstance(a, Lit):
                values.append(a.val)
            elif a in b.consts:
                values.append(b.consts[a])
            else:
                return None
        else:
            values.append(np.zeros(v.aval.shape, v.aval.dtype))
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cond = jcore.jaxpr_as_fun(p["cond_jaxpr"])
    body = jcore.jaxpr_as_fun(p["body_jaxpr"])
    cc, bc, carry = values[:nc], values[nc:nc + nb], values[nc + nb:]
    with jax.ensure_compile_time_eval():
        n = 0
        while bool(cond(*cc, *carry)[0]):
            carry = body(*bc, *carry)
            n += 1
            if n > _MAX_TRIPS:
                return None
    return n


def _inline_while(b: "_Builder", eqn, ins: tuple, where: str) -> list | None:
    """A ``while_loop`` (``fori_loop`` with bounds that are not Python ints) whose trip count
    is fixed by constants, as the ``scan`` of that many steps it equals (docs/design.md §5.3, §14). ``None``
    where the count depends on the input or on parameters: the loop stays a ``while`` and is
    refused if a multiplier reaches it."""
    needed = trip_inputs(eqn)
    if any(b.is_live(ins[i]) for i in needed):
        return None
    n = _trip_count(eqn, ins, b, needed)
    if n is None:
        return None
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    body = jcore.jaxpr_as_fun(p["body_jaxpr"])

    def as_scan(*args):
        bc, carry = args[nc:nc + nb], args[nc + nb:]
        step = lambda c, _: (tuple(body(*bc, *c)), None)  # noqa: E731
        return jax.lax.scan(step, tuple(carry), None, length=n)[0]

    closed = jax.make_jaxpr(as_scan)(*[jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype)
                                       for v in eqn.invars])
    return _inline(b, closed.jaxpr, list(closed.consts), list(ins), where)


@functools.lru_cache(maxsize=256)
def _select_eqn(index_aval, case_aval, n: int):
    """A ``select_n`` equation choosing among ``n`` values of ``case_aval`` by ``index_aval``."""
    closed = jax.make_jaxpr(lambda i, *cs: jax.lax.select_n(i, *cs))(
        index_aval, *([case_aval] * n))
    (eqn,) = closed.jaxpr.eqns
    return eqn


def _inline_cond(b: _Builder, eqn, ins: tuple, where: str) -> list:
    """``lax.cond``/``lax.switch`` on live values, as docs/design.md §12.2 reads it: every branch is
    evaluated (inlined) and each result is ``select_n(index, branch results…)``. With a fixed
    index the select is linear in the branch results; with a live boolean predicate it has an
    exact rule of its own (``jaxlift.rules.logic``)."""
    index, operands = ins[0], ins[1:]
    if isinstance(index, Lit):
        index = b.const(np.asarray(index.val, np.int32))
    per_branch = [_inline(b, br.jaxpr, list(br.consts), operands, where)
                  for br in eqn.params["branches"]]
    results = []
    for j, v in enumerate(eqn.outvars):
        cases = [outs[j] for outs in per_branch]
        if all(isinstance(c, int) and c == cases[0] for c in cases):
            results.append(cases[0])
            continue
        cases = [b.const(np.asarray(c.val, v.aval.dtype)) if isinstance(c, Lit) else c
                 for c in cases]
        index_aval = jax.ShapeDtypeStruct(b.shape(index), b.avals[index].dtype)
        sel = _select_eqn(index_aval, jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype),
                          len(cases))
        op_ins = (index, *cases)
        live = tuple(b.is_live(a) for a in op_ins)
        out = b.new(v.aval, live=any(live))
        b.ops.append(Op(sel, op_ins, (out,), live, where))
        results.append(out)
    return results


def _scan_body(eqn, live: Sequence[bool], where: str = "") -> Program:
    """The body of a ``scan`` as a :class:`Program`: its consts and xs live where the scan's
    operands are, its carry live where the initial carry is or where the body makes it so
    (a fixed point over the steps)."""
    closed = eqn.params["jaxpr"]
    n_consts, n_carry = scan_layout(eqn.params)
    live_in = list(live)
    while True:
        live_vars = {v for v, l in zip(closed.jaxpr.invars, live_in) if l}
        for e, _ in live_equations(closed.jaxpr, live_in):
            live_vars.update(e.outvars)
        carry_out = closed.jaxpr.outvars[:n_carry]
        grown = [live_in[n_consts + i] or (not isinstance(v, jcore.Literal) and v in live_vars)
                 for i, v in enumerate(carry_out)]
        if grown == live_in[n_consts:n_consts + n_carry]:
            break
        live_in[n_consts:n_consts + n_carry] = grown
    return program_from_jaxpr(closed.jaxpr, closed.consts, live_in, enclosing=where)



def origin_of(program: "Program", atom, site: str = "") -> Op | None:
    """The operation that computes ``atom``: walking back through reshapes, broadcasts and
    casts, and through operations at ``site`` (a call's own bookkeeping, e.g. ``jnp.take``
    wrapping negative indices), to the first that does arithmetic (``cumsum``, a comparison,
    a dense layer …); ``None`` when ``atom`` is (a view of) an input or a constant."""
    for _ in range(64):
        op = program.producer.get(atom) if isinstance(atom, int) else None
        if op is None:
            return None
        live = [a for a, l in zip(op.ins, op.live) if l]
        if not live or op.primitive not in VIEWS and str(op.where) != site:
            return op
        atom = live[-1] if op.primitive == "select_n" else live[0]
    return None


def view_of_input(program: "Program", atom):
    """The live input that ``atom`` is a reshaped, broadcast, sliced or cast view of, else
    ``None``."""
    for _ in range(64):
        if atom in program.live_inputs:
            return atom
        op = program.producer.get(atom) if isinstance(atom, int) else None
        if op is None or op.primitive not in VIEWS or sum(op.live) != 1:
            return None
        atom = next(a for a, l in zip(op.ins, op.live) if l)
    return None


def _dce(ops: list, needed: set) -> list:
    kept = []
    for op in reversed(ops):
        if any(o in needed for o in op.outs):
            kept.append(op)
            needed.update(a for a in op.ins if isinstance(a, int))
    return kept[::-1]


def _is_elementwise_op(op: Op) -> bool:
    return op.opaque_elementwise or registry.is_elementwise(op.primitive)


def _fuse(ops: list, prog_outputs: Sequence, avals: dict, live_inputs, markers=()) -> list:
    """Replace elementwise chains fed by one live tensor by nonlinearity nodes (see module doc).

    A chain starts at a live input, at a marked layer (``jaxlift.layer``: scores are asked for
    there, so no fused node may reach past it) or at the result of any other operation. Only
    floating-point values leave a fused node: where a chain's boolean or integer result is used
    outside it (``h > 0`` selecting between values of another tensor, ``h.astype(int)``), the
    comparison or conversion stays an operation of its own with an exact rule, and the float
    values it reads become the chain's exits."""
    shape = lambda a: () if isinstance(a, Lit) else tuple(avals[a].shape)  # noqa: E731
    is_float = lambda a: jnp.issubdtype(avals[a].dtype, jnp.inexact)  # noqa: E731
    markers = set(markers)
    src: dict = {i: i for i in live_inputs}
    feed = lambda a: a if a in markers else src.get(a, a)  # noqa: E731  (source seen by users)
    for op in ops:
        if not op.is_live:
            continue
        live_ins = [a for a, l in zip(op.ins, op.live) if l]
        sources = {feed(a) for a in live_ins}
        out_shapes = {shape(o) for o in op.outs}
        if (_is_elementwise_op(op) and len(sources) == 1 and len(op.outs) == 1
                and out_shapes == {shape(next(iter(sources)))}
                and all(shape(a) == shape(op.outs[0]) for a in live_ins)):
            src[op.outs[0]] = next(iter(sources))
        else:
            for o in op.outs:
                src[o] = o
    producer = {o: op for op in ops for o in op.outs}
    region_of = {}  # op -> source id
    for op in ops:
        if op.is_live and len(op.outs) == 1 and src.get(op.outs[0]) != op.outs[0]:
            region_of[op] = src[op.outs[0]]
    if not region_of:
        return ops
    used_outside: set = set(a for a in prog_outputs if isinstance(a, int))
    for op in ops:
        for a in op.ins:
            if isinstance(a, int) and a in producer and producer[a] in region_of:
                if region_of.get(op) != region_of[producer[a]]:
                    used_outside.add(a)

    def ancestors(exit_id: int, source: int) -> list:
        seen, stack = set(), [producer[exit_id]]
        while stack:
            op = stack.pop()
            if op in seen:
                continue
            seen.add(op)
            for a in op.ins:
                if isinstance(a, int) and a != source and a in producer and region_of.get(producer[a]) == source:
                    stack.append(producer[a])
        return [op for op in ops if op in seen]

    keep_individual: set = set()
    for op, s in region_of.items():  # non-float exits: their float inputs become exits
        e = op.outs[0]
        if e in used_outside and not is_float(e):
            for a in ancestors(e, s):
                if not is_float(a.outs[0]):
                    keep_individual.add(a)
                    used_outside.update(v for v in a.ins if isinstance(v, int) and v != s
                                        and is_float(v) and region_of.get(producer.get(v)) == s)
    fused_at: dict = {}  # exit op -> fused node
    for op, s in region_of.items():
        e = op.outs[0]
        if e not in used_outside or not is_float(e):
            continue
        anc = ancestors(e, s)
        nonlinear = any(not registry.is_linear(a.primitive, a.live) or a.opaque_elementwise for a in anc)
        if nonlinear and is_float(s):
            fused_at[op] = Op(None, (s,), (e,), (True,), op.where, body=tuple(anc))
        else:
            keep_individual.update(anc)
    out = []
    for op in ops:
        if op in fused_at:
            out.append(fused_at[op])
        elif op not in region_of or op in keep_individual:
            out.append(op)
    return out


def program_from_jaxpr(jaxpr, consts: Sequence[Any], live_in: Sequence[bool],
                      enclosing: str = "") -> Program:
    """The :class:`Program` of an open ``jaxpr`` (with its ``consts``) whose inputs flagged in
    ``live_in`` are live: the whole traced function, or a loop's body (docs/design.md §14;
    ``enclosing``: the loop's source line, for equations that have none of their own)."""
    b = _Builder()
    in_atoms = [b.new(v.aval, live=bool(l)) for v, l in zip(jaxpr.invars, live_in)]
    outs = _inline(b, jaxpr, list(consts), in_atoms, enclosing=enclosing)
    marked = {a for sites in b.markers.values() for _, ids in sites for a in ids
              if isinstance(a, int)}
    needed = {a for a in outs if isinstance(a, int)} | marked
    ops = _dce(b.ops, needed)
    live_inputs = [a for a, l in zip(in_atoms, live_in) if l]
    ops = _fuse(ops, list(outs) + sorted(marked), b.avals, live_inputs, markers=marked)
    producer = {o: op for op in ops for o in op.outs}
    return Program(b.avals, [a for a, l in zip(in_atoms, live_in) if not l], live_inputs,
                   b.consts, ops, outs, b.live, b.markers, producer)


def build_program(f: Callable, fixed_args, live_args) -> tuple[Program, Any]:
    """Trace ``f(fixed_args, live_args)`` and build its :class:`Program`.

    ``fixed_args`` and ``live_args`` are pytrees of arrays or ``jax.ShapeDtypeStruct``. Returns the
    program and the output pytree structure.
    """
    closed, out_shape = jax.make_jaxpr(f, return_shape=True)(fixed_args, live_args)
    n_fixed = len(jax.tree_util.tree_leaves(fixed_args))
    live_in = [i >= n_fixed for i in range(len(closed.jaxpr.invars))]
    prog = dataclasses.replace(program_from_jaxpr(closed.jaxpr, closed.consts, live_in),
                               source=closed)
    return prog, jax.tree_util.tree_structure(out_shape)


def with_held(program: Program, held: Sequence[bool]) -> Program:
    """``program`` rebuilt from its trace with the live inputs flagged in ``held`` read as
    fixed inputs (after the parameters, in their order): values equal on both sides of every
    pair carry nothing, and whatever is computed from them alone — indices, masks, positions —
    is fixed for the pair, as a parameter is."""
    closed = program.source
    live_in = [False] * len(program.fixed_inputs) + [not h for h in held]
    return dataclasses.replace(program_from_jaxpr(closed.jaxpr, closed.consts, live_in),
                               source=closed)


def signature(tree, drop_leading: bool = False) -> tuple:
    """A cheap hashable key of ``tree``'s structure and leaves' shapes and dtypes (without their
    leading batch axis for ``drop_leading``): ``(treedef, ((shape, dtype), ...))``, the layout
    :func:`structs_of` rebuilds and the key of :func:`traced_program`. Reads
    ``.shape``/``.dtype`` directly (arrays, tracers, ``ShapeDtypeStruct``s); NumPy dtypes are
    canonicalized as JAX converts them (extended dtypes such as PRNG keys kept as they are);
    other leaves (Python numbers) go through ``jnp.result_type``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    sig = []
    for l in leaves:
        if isinstance(l, (jax.Array, jax.core.Tracer)):  # shape a tuple, dtype canonical
            shape, dtype = l.shape, l.dtype
        elif isinstance(l, (np.ndarray, jax.ShapeDtypeStruct)):
            shape, dtype = tuple(l.shape), jax.dtypes.canonicalize_dtype(l.dtype, allow_extended_dtype=True)
        else:
            shape, dtype = np.shape(l), jnp.result_type(l)
        sig.append((shape[1:] if drop_leading else shape, dtype))
    return treedef, tuple(sig)


def structs_of(key):
    """The ``ShapeDtypeStruct`` pytree a :func:`signature` describes."""
    treedef, leaves = key
    return jax.tree_util.tree_unflatten(treedef, [jax.ShapeDtypeStruct(s, d) for s, d in leaves])


_TRACED: dict = {}  # (f, structures) -> (Program, out treedef): traces of a function, by shape
_TRACED_LIMIT = 256


AT_ONE_TRACE = "jaxlift_traced_once"  # the name of at_one_trace's call in a jaxpr


def at_one_trace(fn: Callable) -> Callable:
    """``fn`` under ``jax.jit``, one object per ``fn`` (``fn`` itself where it is not hashable):
    JAX keeps its traces by function object and argument shapes, so each shape is traced once
    — the interpreter's program (:func:`jaxlift.targets.per_example`) and the
    batch-independence proof (:mod:`jaxlift.independence`) read one trace of ``fn`` at a batch
    of one. The call is named :data:`AT_ONE_TRACE`; :func:`build_program` inlines it as if
    ``fn`` had been called directly (its equations keep their own source lines)."""
    try:
        return _jitted(fn)
    except TypeError:
        return fn


@functools.lru_cache(maxsize=512)
def _jitted(fn: Callable) -> Callable:
    def call(params, xb):
        return fn(params, xb)
    call.__name__ = call.__qualname__ = AT_ONE_TRACE
    return jax.jit(call)


def _transparent(eqn) -> bool:
    """A call of :func:`at_one_trace`'s: ``fn`` itself."""
    return eqn.primitive.name in ("pjit", "jit") and eqn.params.get("name") == AT_ONE_TRACE


def trace_settings() -> tuple:
    """The global settings a trace can read (as ``jax.jit`` keys its own cache on them): the
    matmul precision ``precision=`` sets, x64, rank promotion."""
    config = jax.config
    return (config.jax_default_matmul_precision, config.jax_enable_x64,
            config.jax_numpy_rank_promotion, config.jax_numpy_dtype_promotion)


def traced_program(f: Callable, fixed_args, live_args, held: tuple = ()) -> tuple[Program, Any]:
    """:func:`build_program`, traced once per (``f``, structures, shapes and dtypes of the
    arguments): the chunk plan, the compiled program, the references' side and the diagnoses
    of one call — and later calls with the same shapes — share one trace of the user's ``fn``
    (``f`` is one object per (fn, target): :func:`jaxlift.targets.per_example`). A program that
    closed over a tracer (``fn`` built inside a caller's ``jit``) is not kept.

    ``held``: a flag per leaf of ``live_args`` — the leaves equal on both sides of every pair
    (integer inputs held by :func:`jaxlift.references.hold`), which the program reads as fixed
    per example, not as live: :func:`with_held`, on the same trace."""
    # held leaves: the same trace (its program kept under the key without them), read anew
    base = traced_program(f, fixed_args, live_args) if any(held) else None

    def build():
        if base is None:
            return build_program(f, fixed_args, live_args)
        return with_held(base[0], held), base[1]

    try:
        key = (f, signature(fixed_args), signature(live_args), trace_settings(), tuple(held))
        hash(key)
    except TypeError:
        return build()
    hit = _TRACED.get(key)
    if hit is not None:
        return hit
    built = build()
    if not any(isinstance(c, jax.core.Tracer) for c in built[0].consts.values()):
        if len(_TRACED) >= _TRACED_LIMIT:
            _TRACED.pop(next(iter(_TRACED)))
        _TRACED[key] = built
    return built
