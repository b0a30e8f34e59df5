"""Proving from ``fn``'s jaxpr that it treats the examples of a batch one by one
(docs/design.md §20.7).

jaxlift explains ``fn`` one example at a time, so scores are right only if ``fn`` on a batch
is ``fn`` on each of its examples (no batch statistics, no attention across the batch, no
Python branch on the batch size). The comparison of ``fn`` on a batch of two with ``fn`` on
each example (:func:`jaxlift.targets.batch_comparison`) checks this by running it, a program of
its own compiled on the first call. Here it is proven instead, where the program says so
plainly:

1. ``fn`` is traced once with a symbolic batch size ``b`` (``jax.export.symbolic_shape``): a
   Python branch that needs an order on the batch size (``b > 1``) cannot be decided on a
   symbol and fails the trace, and a use of the size as a number stays visible in the jaxpr.
2. Every value of that jaxpr gets a state: :class:`Rows` ``(axis)`` — it depends on the
   examples, example i's part in index i of ``axis`` and nowhere else — or :class:`Free`
   ``(uniform)`` — it depends on no example; ``uniform`` holds the axes of size ``b`` along
   which it is constant (a broadcast), so that adding it to a ``Rows`` value adds the same
   thing to every example. Each primitive maps the states of its operands to those of its
   results (the table of :func:`_rule`) or gives up.
3. ``fn`` is proven independent when every output is ``Rows(0)`` and its jaxpr for one
   example (what jaxlift explains) is its jaxpr for a batch of 977 with that size written as
   1: a symbol decides ``b == 1`` as false, so a branch on it shows only here.

Giving up proves nothing: the comparison then runs in the program as before. The proof is
conservative by construction — a primitive not in the table, a reduction, contraction, slice,
reshape or scan along the batch axis, a batch-free value that varies along a ``b``-sized axis
meeting the examples, a loop whose trip count depends on them — each gives up.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from jaxlift._ops import example_structs
from jaxlift.jaxpr_walk import call_body, scan_layout, where_of
from jaxlift.program import at_one_trace, signature, structs_of
from jaxlift.rules import registry


@dataclasses.dataclass(frozen=True)
class Rows:
    """A value that depends on the examples, example i's part at index i of ``axis``."""
    axis: int


@dataclasses.dataclass(frozen=True)
class Free:
    """A value that depends on no example; ``uniform``: the ``b``-sized axes along which it is
    constant."""
    uniform: frozenset = frozenset()


class GiveUp(Exception):
    """The jaxpr does not say plainly that the examples stay apart."""


def proven(fn: Callable, params, x) -> bool:
    """:func:`proven_independent` for a batch ``x``, once per (``fn``, structures, shapes and
    dtypes of ``params`` and of one example)."""
    try:
        key = (fn, signature(params), signature(x, drop_leading=True))
        hash(key)
    except TypeError:  # an unhashable fn: not remembered
        return proven_independent(fn, params, example_structs(x, True))
    return _proven_at(*key)


@functools.lru_cache(maxsize=256)
def _proven_at(fn, params_key: tuple, example_key: tuple) -> bool:
    return proven_independent(fn, structs_of(params_key), structs_of(example_key))


def proven_independent(fn: Callable, params, example) -> bool:
    """Whether ``fn(params, x)`` provably treats each example of ``x`` (a batch of examples
    shaped like ``example``, a pytree of ``ShapeDtypeStruct``s) on its own."""
    return why_not_proven(fn, params, example) is None


def why_not_proven(fn: Callable, params, example) -> str | None:
    """Why :func:`proven_independent` gives up on ``fn`` (the primitive or the pattern), or
    ``None`` where it proves it."""
    try:
        (b,) = jax.export.symbolic_shape("b")
        batch = jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct((b,) + tuple(s.shape), s.dtype), example)
        fixed = jax.tree_util.tree_map(
            lambda l: jax.ShapeDtypeStruct(jnp.shape(l), jnp.result_type(l)), params)
        closed = jax.make_jaxpr(fn)(fixed, batch)
    except Exception as exc:  # noqa: BLE001 fn needs a concrete batch size (or fails)
        return f"fn cannot be traced with a symbolic batch size ({type(exc).__name__})"
    n_fixed = len(jax.tree_util.tree_leaves(params))
    states: list[Any] = [Free() for _ in range(n_fixed)]
    states += [Rows(0) for _ in closed.jaxpr.invars[n_fixed:]]
    try:
        outs = _walk(closed.jaxpr, [Free() for _ in closed.consts], states)
    except GiveUp as why:
        return str(why)
    if not all(s == Rows(0) for s in outs):
        return f"an output does not keep the examples on its first axis ({outs})"
    if not _same_program_at_one(fn, fixed, example):
        return ("fn's program for one example differs from its program for a batch (a branch "
                "on the batch size)")
    return None


PROBE_BATCH = 977  # a batch size no model has a reason to mention


def _same_program_at_one(fn: Callable, fixed, example) -> bool:
    """Whether ``fn``'s jaxpr at one example — the program jaxlift explains — is its jaxpr at
    a batch of :data:`PROBE_BATCH` with that size read as 1 (equation by equation; a broadcast
    of a size-1 axis to the batch, which JAX leaves out at one example, counts as nothing). A
    symbolic size decides ``b == 1`` as false, so a branch on it would pass step 1 with the
    batch's program while jaxlift runs the other; the two concrete traces show it."""
    def trace(n):  # as the interpreter's program calls fn: its trace at one is that one
        batch = jax.tree_util.tree_map(
            lambda s: jax.ShapeDtypeStruct((n,) + tuple(s.shape), s.dtype), example)
        return jax.make_jaxpr(at_one_trace(fn))(fixed, batch)
    try:
        one, probe = trace(1), trace(PROBE_BATCH)
    except Exception:  # noqa: BLE001
        return False
    return _same_jaxpr(one.jaxpr, probe.jaxpr)


_PROBE_NUMBER = re.compile(r"(?<![\w.])%d(?![\w])" % PROBE_BATCH)


def _at_one(shape) -> tuple:
    return tuple(1 if d == PROBE_BATCH else d for d in shape)


def _same_aval(a, b) -> bool:
    return (getattr(a.aval, "dtype", None) == getattr(b.aval, "dtype", None)
            and tuple(_shape(a)) == _at_one(_shape(b)))


def _vanishes_at_one(eqn) -> bool:
    """A broadcast or reshape that is the identity once the batch size is 1."""
    if eqn.primitive.name not in ("broadcast_in_dim", "reshape") or len(eqn.invars) != 1:
        return False
    same_shape = _shape(eqn.invars[0]) == _at_one(_shape(eqn.outvars[0]))
    if eqn.primitive.name == "broadcast_in_dim":
        dims = tuple(eqn.params["broadcast_dimensions"])
        return same_shape and dims == tuple(range(len(dims)))
    return same_shape and eqn.params.get("dimensions") is None


def _same_param(a, b) -> bool:
    if isinstance(a, jcore.ClosedJaxpr) and isinstance(b, jcore.ClosedJaxpr):
        return _same_jaxpr(a.jaxpr, b.jaxpr) and len(a.consts) == len(b.consts)
    if isinstance(a, jcore.Jaxpr) and isinstance(b, jcore.Jaxpr):
        return _same_jaxpr(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same_param(u, v) for u, v in zip(a, b))
    return repr(a) == _PROBE_NUMBER.sub("1", repr(b))


def _same_jaxpr(one, probe) -> bool:
    """``one`` and ``probe`` compute the same thing once the probe's batch size is 1."""
    if (len(one.invars) != len(probe.invars) or len(one.constvars) != len(probe.constvars)
            or len(one.outvars) != len(probe.outvars)):
        return False
    names: dict = {}
    for u, v in zip(one.constvars + one.invars, probe.constvars + probe.invars):
        if not _same_aval(u, v):
            return False
        names[v] = u

    def same_atom(u, v) -> bool:
        if isinstance(v, jcore.Literal) or isinstance(u, jcore.Literal):
            return (isinstance(u, jcore.Literal) and isinstance(v, jcore.Literal)
                    and repr(u.val) == repr(v.val) and _same_aval(u, v))
        return names.get(v) is u

    kept = iter(one.eqns)
    for eqn in probe.eqns:
        if _vanishes_at_one(eqn) and not isinstance(eqn.invars[0], jcore.Literal):
            names[eqn.outvars[0]] = names.get(eqn.invars[0], eqn.invars[0])
            continue
        other = next(kept, None)
        if (other is None or other.primitive != eqn.primitive
                or len(other.invars) != len(eqn.invars) or len(other.outvars) != len(eqn.outvars)
                or not all(same_atom(u, v) for u, v in zip(other.invars, eqn.invars))
                or set(other.params) != set(eqn.params)
                or not all(_same_param(other.params[k], eqn.params[k]) for k in eqn.params)):
            return False
        for u, v in zip(other.outvars, eqn.outvars):
            if not _same_aval(u, v):
                return False
            names[v] = u
    return next(kept, None) is None and all(
        same_atom(u, v) for u, v in zip(one.outvars, probe.outvars))


def _is_batch_dim(d) -> bool:
    return not isinstance(d, int)  # a symbolic dimension: b, 16·b, …


def _shape(atom) -> tuple:
    return tuple(atom.aval.shape) if hasattr(atom.aval, "shape") else ()


def _walk(jaxpr, const_states: Sequence, in_states: Sequence) -> list:
    env: dict = {}
    for v, s in zip(jaxpr.constvars, const_states):
        env[v] = s
    for v, s in zip(jaxpr.invars, in_states):
        env[v] = s

    def read(a):
        if isinstance(a, jcore.Literal):
            return Free(frozenset(range(len(_shape(a)))))
        return env[a]

    for eqn in jaxpr.eqns:
        ins = [read(a) for a in eqn.invars]
        try:
            outs = _rule(eqn, ins)
        except GiveUp as why:
            if "(at " in str(why):
                raise
            raise GiveUp(f"{why} (at {eqn.primitive.name}, {where_of(eqn)}; operands "
                         f"{ins})") from None
        for v, s in zip(eqn.outvars, outs):
            env[v] = s
    return [read(a) for a in jaxpr.outvars]


def _rule(eqn, ins: list) -> list:
    """The states of ``eqn``'s results from its operands'; :class:`GiveUp` where not plain."""
    name = eqn.primitive.name
    n_out = len(eqn.outvars)
    out_shapes = [_shape(v) for v in eqn.outvars]
    if name in _NESTED:
        return _NESTED[name](eqn, ins)
    _refuse_size_uses(eqn, ins)
    if all(isinstance(s, Free) for s in ins):
        return [_free_result(eqn, ins, shape) for shape in out_shapes]
    handler = _ROWS_RULES.get(name)
    if handler is None and registry.is_elementwise(name):
        handler = _elementwise
    if handler is None:
        raise GiveUp(name)
    out = handler(eqn, ins)
    return out if isinstance(out, list) else [out] * n_out


# --- the batch size itself --------------------------------------------------------------------

def _refuse_size_uses(eqn, ins: list) -> None:
    """Give up where a value could come to depend on the batch size itself — ``b`` as a
    number, a sum over ``b`` copies, the last of ``b`` positions — which changes ``fn`` on a
    batch without mixing two examples' data (and which the row states do not follow): a
    reduction or contraction over an axis of the batch's size, a slice or gather that cuts one
    (unless the value is batch-free and constant along it), an operation the table does not
    know on a value with such an axis."""
    name = eqn.primitive.name
    if name == "dim_as_value":
        raise GiveUp("the batch size used as a number")
    shapes = [_shape(a) for a in eqn.invars]
    sized = [any(_is_batch_dim(d) for d in sh) for sh in shapes]
    if not any(sized):
        return
    if name in _REDUCTIONS:
        if any(_is_batch_dim(shapes[0][ax]) for ax in eqn.params["axes"]):
            raise GiveUp("a reduction over an axis of the batch's size")
    elif name == "dot_general":
        (lc, rc), _ = eqn.params["dimension_numbers"]
        if (any(_is_batch_dim(shapes[0][d]) for d in lc)
                or any(_is_batch_dim(shapes[1][d]) for d in rc)):
            raise GiveUp("a contraction over an axis of the batch's size")
    elif name in ("slice", "dynamic_slice", "gather"):
        state = ins[0]
        for ax, d in enumerate(shapes[0]):
            if _is_batch_dim(d) and not (isinstance(state, Free) and ax in state.uniform) \
                    and not _keeps_axis(eqn, ax, d):
                raise GiveUp("a cut of an axis of the batch's size")
    elif not (registry.is_elementwise(name) or name in _SIZE_SAFE or name in _ROWS_RULES):
        raise GiveUp(f"{name} on a value with an axis of the batch's size")


def _keeps_axis(eqn, ax: int, size) -> bool:
    """Whether a slice, dynamic slice or gather takes axis ``ax`` (of ``size``) whole."""
    p, name = eqn.params, eqn.primitive.name
    if name == "slice":
        strides = p.get("strides")
        return (p["start_indices"][ax] == 0 and p["limit_indices"][ax] == size
                and not (strides and strides[ax] != 1))
    if name == "dynamic_slice":
        return p["slice_sizes"][ax] == size
    dn = p["dimension_numbers"]
    return (ax not in dn.collapsed_slice_dims and ax not in dn.start_index_map
            and p["slice_sizes"][ax] == size)


_SIZE_SAFE = frozenset(("broadcast_in_dim", "transpose", "reshape", "squeeze", "concatenate",
                        "pad", "iota", "select_n", "sort", "cumsum", "cumprod", "cummax",
                        "cummin", "cumlogsumexp", "split", "conv_general_dilated",
                        "reduce_window", "reduce_window_sum", "reduce_window_max",
                        "reduce_window_min", "sharding_constraint", "optimization_barrier"))


# --- values that depend on no example -------------------------------------------------------

def _free_result(eqn, ins: list, shape: tuple) -> Free:
    """A result computed from batch-free operands only: batch-free, constant along the
    ``b``-sized axes the operation provably keeps constant."""
    batch_axes = {i for i, d in enumerate(shape) if _is_batch_dim(d)}
    if not batch_axes:
        return Free()
    name = eqn.primitive.name
    if registry.is_elementwise(name):
        return Free(frozenset.intersection(
            frozenset(batch_axes), *(_constant_axes(st, a) for st, a in zip(ins, eqn.invars))))
    if name == "broadcast_in_dim":
        (s, *_), dims = ins, eqn.params["broadcast_dimensions"]
        in_shape = _shape(eqn.invars[0])
        kept = {dims[i] for i in range(len(dims))
                if not (i in s.uniform or in_shape[i] == 1)}
        return Free(frozenset(batch_axes - kept))
    if name == "iota":  # counts along its own dimension only
        return Free(frozenset(batch_axes - {eqn.params["dimension"]}))
    if name == "transpose":
        perm = eqn.params["permutation"]
        return Free(frozenset(j for j, i in enumerate(perm) if i in ins[0].uniform))
    if name == "reshape":
        mapped = {_reshaped_axis(_shape(eqn.invars[0]), shape, i) for i in ins[0].uniform}
        return Free(frozenset(mapped - {None}))
    if name in ("slice", "dynamic_slice"):  # constant along an axis, so is any part of it
        return Free(frozenset(ins[0].uniform) & batch_axes)
    if name in _REDUCTIONS:
        axes = tuple(eqn.params["axes"])
        return Free(frozenset(u - sum(a < u for a in axes) for u in ins[0].uniform
                              if u not in axes) & batch_axes)
    if name == "squeeze":
        dims = eqn.params["dimensions"]
        return Free(frozenset(u - sum(d < u for d in dims) for u in ins[0].uniform
                              if u not in dims) & batch_axes)
    if name == "dot_general":
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        (ls, rs), (la, ra) = ins, eqn.invars
        lu, ru = _constant_axes(ls, la), _constant_axes(rs, ra)
        l_free = [d for d in range(len(_shape(la))) if d not in lc and d not in lb]
        r_free = [d for d in range(len(_shape(ra))) if d not in rc and d not in rb]
        out = [l in lu and r in ru for l, r in zip(lb, rb)]
        out += [d in lu for d in l_free] + [d in ru for d in r_free]
        return Free(frozenset(i for i, u in enumerate(out) if u) & batch_axes)
    if name == "gather":  # rows of a table picked by indices constant along an axis
        offset = eqn.params["dimension_numbers"].offset_dims
        positions = [d for d in range(len(shape)) if d not in offset]
        index_rank = len(_shape(eqn.invars[1]))
        return Free(frozenset(positions[i] for i in ins[1].uniform if i < index_rank - 1)
                    & batch_axes)
    return Free()  # iota, slices, gathers …: may vary along a b-sized axis


# --- values that depend on the examples ------------------------------------------------------

def _rows_axis(ins: list) -> int:
    """The one axis every ``Rows`` operand has its examples on (else give up)."""
    axes = {s.axis for s in ins if isinstance(s, Rows)}
    if len(axes) != 1:
        raise GiveUp("operands with their examples on different axes")
    return axes.pop()


def _constant_axes(state: Free, atom) -> frozenset:
    """Axes along which a batch-free operand of an elementwise operation is constant: its
    uniform ones and those of size 1 (broadcast by the operation; a scalar: all)."""
    shape = _shape(atom)
    if not shape:
        return frozenset(range(64))
    return state.uniform | {d for d, n in enumerate(shape) if isinstance(n, int) and n == 1}


def _elementwise(eqn, ins):
    axis = _rows_axis(ins)
    for s, a in zip(ins, eqn.invars):
        if isinstance(s, Free) and axis not in _constant_axes(s, a):
            raise GiveUp("a value that varies along the batch axis meets the examples")
    return Rows(axis)


def _broadcast_in_dim(eqn, ins):
    (s, *rest) = ins
    if not isinstance(s, Rows) or any(isinstance(r, Rows) for r in rest):
        raise GiveUp("broadcast_in_dim with a batched shape operand")
    dims = eqn.params["broadcast_dimensions"]
    if _shape(eqn.invars[0])[s.axis] != _shape(eqn.outvars[0])[dims[s.axis]]:
        raise GiveUp("the batch axis broadcast")
    return Rows(dims[s.axis])


def _reshaped_axis(in_shape: tuple, out_shape: tuple, axis: int) -> int | None:
    """The axis of ``out_shape`` that holds exactly ``in_shape[axis]`` in a row-major reshape
    (the same number of elements before and after it), or ``None`` (merged or split)."""
    before, after = math.prod(in_shape[:axis]), math.prod(in_shape[axis + 1:])
    for j, d in enumerate(out_shape):
        if (d == in_shape[axis] and math.prod(out_shape[:j]) == before
                and math.prod(out_shape[j + 1:]) == after):
            return j
    return None


def _reshape(eqn, ins):
    (s, *rest) = ins
    if not isinstance(s, Rows) or rest or eqn.params.get("dimensions") is not None:
        raise GiveUp("reshape")
    j = _reshaped_axis(_shape(eqn.invars[0]), _shape(eqn.outvars[0]), s.axis)
    if j is None:
        raise GiveUp("a reshape that merges or splits the batch axis")
    return Rows(j)


def _transpose(eqn, ins):
    return Rows(tuple(eqn.params["permutation"]).index(ins[0].axis))


def _squeeze(eqn, ins):
    axis, dims = ins[0].axis, eqn.params["dimensions"]
    if axis in dims:
        raise GiveUp("squeeze of the batch axis")
    return Rows(axis - sum(d < axis for d in dims))


def _reduce(eqn, ins):
    axis = _rows_axis(ins)
    axes = tuple(eqn.params["axes"])
    if axis in axes:
        raise GiveUp("a reduction over the batch axis")
    return Rows(axis - sum(a < axis for a in axes))


def _along_axis(param: str):
    """An operation along one axis (cumulative sums, sorts, splits): fine elsewhere."""
    def rule(eqn, ins):
        axis = _rows_axis(ins)
        if eqn.params[param] % max(1, len(_shape(eqn.invars[0]))) == axis:
            raise GiveUp(f"{eqn.primitive.name} along the batch axis")
        for s, a in zip(ins, eqn.invars):
            if isinstance(s, Free) and axis not in _constant_axes(s, a):
                raise GiveUp("a value that varies along the batch axis meets the examples")
        return Rows(axis)
    return rule


def _dot_general(eqn, ins):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    ls, rs = ins
    l_rank, r_rank = len(_shape(eqn.invars[0])), len(_shape(eqn.invars[1]))
    l_free = [d for d in range(l_rank) if d not in lc and d not in lb]
    r_free = [d for d in range(r_rank) if d not in rc and d not in rb]
    if isinstance(ls, Rows) and isinstance(rs, Rows):
        if ls.axis in lb and rs.axis == rb[list(lb).index(ls.axis)]:
            return Rows(list(lb).index(ls.axis))
        raise GiveUp("a product of two batched operands across the batch")
    if isinstance(ls, Rows):
        if ls.axis not in l_free:
            raise GiveUp("a contraction over the batch axis")
        return Rows(len(lb) + l_free.index(ls.axis))
    if rs.axis not in r_free:
        raise GiveUp("a contraction over the batch axis")
    return Rows(len(lb) + len(l_free) + r_free.index(rs.axis))


def _conv(eqn, ins):
    ls, rs = ins[:2]
    dn = eqn.params["dimension_numbers"]
    if (not isinstance(ls, Rows) or isinstance(rs, Rows) or eqn.params["batch_group_count"] != 1
            or ls.axis != dn.lhs_spec[0]):
        raise GiveUp("a convolution across the batch")
    return Rows(dn.out_spec[0])


def _slice(eqn, ins):
    (s,) = ins
    shape = _shape(eqn.invars[0])
    start, limit = eqn.params["start_indices"][s.axis], eqn.params["limit_indices"][s.axis]
    strides = eqn.params.get("strides")
    if start != 0 or limit != shape[s.axis] or (strides and strides[s.axis] != 1):
        raise GiveUp("a slice of the batch axis")
    return Rows(s.axis)


def _dynamic_slice(eqn, ins):
    s, *index = ins
    if not isinstance(s, Rows) or any(isinstance(i, Rows) for i in index):
        raise GiveUp("dynamic_slice with batched indices")
    if eqn.params["slice_sizes"][s.axis] != _shape(eqn.invars[0])[s.axis]:
        raise GiveUp("a dynamic slice of the batch axis")
    return Rows(s.axis)


def _concatenate(eqn, ins):
    axis = _rows_axis(ins)
    if eqn.params["dimension"] == axis:
        raise GiveUp("a concatenation along the batch axis")
    for s, a in zip(ins, eqn.invars):
        if isinstance(s, Free) and axis not in _constant_axes(s, a):
            raise GiveUp("a value that varies along the batch axis meets the examples")
    return Rows(axis)


def _pad(eqn, ins):
    s, fill = ins
    if not isinstance(s, Rows) or isinstance(fill, Rows):
        raise GiveUp("pad with a batched padding value")
    if tuple(eqn.params["padding_config"][s.axis]) != (0, 0, 0):
        raise GiveUp("padding along the batch axis")
    return Rows(s.axis)


def _reduce_window(eqn, ins):
    n = len(ins) // 2  # operands, then init values
    if any(isinstance(s, Rows) for s in ins[n:]):
        raise GiveUp("a batched init value")
    axis = _rows_axis(ins[:n])
    p = eqn.params
    if (p["window_dimensions"][axis] != 1 or p["window_strides"][axis] != 1
            or tuple(p["padding"][axis]) != (0, 0)
            or (p.get("base_dilation") or (1,) * 99)[axis] != 1
            or (p.get("window_dilation") or (1,) * 99)[axis] != 1):
        raise GiveUp("a window across the batch axis")
    return Rows(axis)


def _reduce_window_one(eqn, ins):
    (s,) = ins
    return _reduce_window(eqn, [s, Free()])


def _gather(eqn, ins):
    operand, indices = ins
    dn = eqn.params["dimension_numbers"]
    if getattr(dn, "operand_batching_dims", ()):
        raise GiveUp("a batched gather")
    if isinstance(operand, Rows):
        # x[:, -1]: batch-free indices, the batch axis taken whole into the result
        a = operand.axis
        if (isinstance(indices, Rows) or a in dn.collapsed_slice_dims or a in dn.start_index_map
                or eqn.params["slice_sizes"][a] != _shape(eqn.invars[0])[a]):
            raise GiveUp("a gather along the batch axis")
        kept = [d for d in range(len(_shape(eqn.invars[0]))) if d not in dn.collapsed_slice_dims]
        return Rows(dn.offset_dims[kept.index(a)])
    index_rank = len(_shape(eqn.invars[1]))
    if indices.axis == index_rank - 1:
        raise GiveUp("the batch axis as the index vector")
    out_rank = len(_shape(eqn.outvars[0]))
    batch_positions = [d for d in range(out_rank) if d not in dn.offset_dims]
    return Rows(batch_positions[indices.axis])


_REDUCTIONS = ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
               "reduce_or", "reduce_xor", "argmax", "argmin")

_ROWS_RULES: dict[str, Callable] = {
    "broadcast_in_dim": _broadcast_in_dim,
    "reshape": _reshape,
    "transpose": _transpose,
    "squeeze": _squeeze,
    **{p: _reduce for p in _REDUCTIONS},
    **{p: _along_axis("axis") for p in ("cumsum", "cumprod", "cummax", "cummin",
                                        "cumlogsumexp", "split")},
    "sort": _along_axis("dimension"),
    "dot_general": _dot_general,
    "conv_general_dilated": _conv,
    "slice": _slice,
    "dynamic_slice": _dynamic_slice,
    "concatenate": _concatenate,
    "pad": _pad,
    "reduce_window": _reduce_window,
    **{p: _reduce_window_one for p in ("reduce_window_sum", "reduce_window_max",
                                       "reduce_window_min")},
    "gather": _gather,
    **{p: (lambda eqn, ins: list(ins)) for p in ("sharding_constraint", "optimization_barrier")},
}


# --- calls, loops and branches ---------------------------------------------------------------

def _call(eqn, ins):
    body = call_body(eqn)
    if body is None:
        raise GiveUp(eqn.primitive.name)
    jaxpr, consts = body
    return _walk(jaxpr, [Free() for _ in consts], ins)


def _fixed_point(step: Callable[[list], list], carries: list) -> list:
    """Carry states that a loop body maps to themselves, starting from the initial ones (a
    carry that becomes batched stays so); gives up if they do not settle."""
    for _ in range(len(carries) + 2):
        new = step(carries)
        merged = [_join(a, b) for a, b in zip(carries, new)]
        if merged == carries:
            return carries
        carries = merged
    raise GiveUp("loop carries that do not settle")


def _join(a, b):
    if a == b:
        return a
    if isinstance(a, Free) and isinstance(b, Free):
        return Free(a.uniform & b.uniform)
    if isinstance(a, Rows) and isinstance(b, Rows):
        raise GiveUp("a carry whose batch axis moves")
    rows = a if isinstance(a, Rows) else b
    free = b if isinstance(a, Rows) else a
    # a batch-free initial value joined with a batched one: fine where it is constant along it
    if rows.axis not in free.uniform:
        raise GiveUp("a carry that varies along the batch axis")
    return rows


def _scan(eqn, ins):
    n_consts, n_carry = scan_layout(eqn.params)
    if _is_batch_dim(eqn.params["length"]):
        raise GiveUp("a scan of the batch's length")
    body = eqn.params["jaxpr"]
    consts, carries, xs = ins[:n_consts], ins[n_consts:n_consts + n_carry], ins[n_consts + n_carry:]
    x_states = []
    for s in xs:
        if isinstance(s, Rows):
            if s.axis == 0:
                raise GiveUp("a scan over the batch axis")
            x_states.append(Rows(s.axis - 1))
        else:
            x_states.append(Free(frozenset(a - 1 for a in s.uniform if a > 0)))

    def step(c):
        return _walk(body.jaxpr, [Free() for _ in body.consts], consts + c + x_states)[:n_carry]
    carries = _fixed_point(step, list(carries))
    outs = _walk(body.jaxpr, [Free() for _ in body.consts], consts + carries + x_states)
    ys = [Rows(s.axis + 1) if isinstance(s, Rows) else Free(frozenset(a + 1 for a in s.uniform))
          for s in outs[n_carry:]]
    return carries + ys


def _while(eqn, ins):
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cond_consts, body_consts, carries = ins[:nc], ins[nc:nc + nb], ins[nc + nb:]
    cond, body = p["cond_jaxpr"], p["body_jaxpr"]

    def step(c):
        return _walk(body.jaxpr, [Free() for _ in body.consts], body_consts + c)
    carries = _fixed_point(step, list(carries))
    (pred,) = _walk(cond.jaxpr, [Free() for _ in cond.consts], cond_consts + carries)
    if isinstance(pred, Rows):
        raise GiveUp("a loop whose trip count depends on the examples")
    return carries


def _cond(eqn, ins):
    index, *args = ins
    if isinstance(index, Rows):
        raise GiveUp("a branch chosen by the examples")
    results = [_walk(br.jaxpr, [Free() for _ in br.consts], args)
               for br in eqn.params["branches"]]
    return [functools.reduce(_join, states) for states in zip(*results)]


_NESTED: dict[str, Callable] = {
    **{p: _call for p in ("jit", "pjit", "closed_call", "core_call", "custom_jvp_call",
                          "custom_vjp_call", "remat", "remat2", "checkpoint")},
    "scan": _scan,
    "while": _while,
    "cond": _cond,
}
