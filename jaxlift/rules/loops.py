"""The ``scan`` rule: DeepLIFT through loops, compiled as loops (docs/design.md §14).

A ``lax.scan`` (``nn.RNN``, an LSTM/GRU written by hand, layers stacked with ``nn.scan`` or
Equinox's ``scan=True``, ``fori_loop`` with a fixed trip count) is kept as one operation whose
body is a sub-program, and the interpreter recurses into it:

* forward (the rule's ``forward`` hook, run once for both sides): a ``lax.scan`` carries both
  sides' states — the carry on the input and on the reference, and in RevealCancel modes the
  split ``(Δc⁺, Δc⁻)`` of every live carry — runs the interpreter's forward pass on the body
  at every step, and stacks each step's body values (as ``jax.grad`` stacks residuals);
* backward: a ``lax.scan`` over the steps in reverse whose carry is the carry's multipliers
  (a ``SplitMultipliers``; the multipliers of live loop constants add up across steps, as they
  do in a gradient); each step rebuilds the body's forward pass from the stack, without re-running
  it, and runs its backward pass from ``m(carry out) + m(ys)``.

Both stay loops after compilation: compile time does not grow with the number of steps.
Summation-to-delta holds through the loop because it holds for every step's body: the
multipliers of a step's inputs explain exactly the multiplier-weighted differences of its
outputs, and the steps telescope.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlift._ops import scan, varying_like, zeros_of_difference
from jaxlift.jaxpr_walk import scan_layout
from jaxlift.split_multipliers import SplitMultipliers, sign_split
from jaxlift.rules import registry
from jaxlift.rules.registry import Rule


def _layout(ctx):
    p = ctx.params
    return (*scan_layout(p), p["length"], p["reverse"])


def _as_array(value, aval):
    return jnp.broadcast_to(jnp.asarray(value, aval.dtype), aval.shape)


def _zero_split(value):
    z = zeros_of_difference(value)
    return z, z


class _Body:
    """The loop body as the rule runs it: full input lists in, interpreter passes out."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.sub = ctx.op.sub
        self.n_consts, self.n_carry, self.length, self.reverse = _layout(ctx)
        self.rc = ctx.composite.carries_split
        self.live = set(self.sub.live_inputs)  # body input positions (= ids) that are live

    def forward(self, vals_x, vals_r, splits):
        sub = self.sub
        return self.ctx.forward_sub(
            sub, [vals_x[i] for i in sub.fixed_inputs], [vals_x[i] for i in sub.live_inputs],
            [vals_r[i] for i in sub.live_inputs],
            [splits[i] for i in sub.live_inputs] if self.rc else None)

    def rebuild(self, state, vals_x, vals_r, splits):
        """A step's forward pass from its stashed state and the loop's constants and xs
        (positions holding ``None``, the carry, come from the state)."""
        ins_x = {i: v for i, v in enumerate(vals_x) if v is not None}
        ins_r = {i: v for i, v in enumerate(vals_r) if v is not None}
        sp = {i: v for i, v in enumerate(splits) if v is not None and i in self.live} \
            if self.rc else {}
        return self.ctx.sub_forward_from(self.sub, ins_x, ins_r, sp, state)

    def outputs(self, fwd, which: str):
        return self.read_outputs(lambda o: fwd.value(o, which))

    def read_outputs(self, read):
        """The body's outputs, ``read(id)`` for a variable, literals as arrays."""
        return [_as_array(read(o), self.sub.avals[o]) if isinstance(o, int)
                else _as_array(o.val, jax.typeof(o.val)) for o in self.sub.outputs]

    def output_splits(self, fwd, outs_x):
        if not self.rc:
            return [None] * len(outs_x)
        return [fwd.split[o] if isinstance(o, int) and o in fwd.split else _zero_split(v)
                for o, v in zip(self.sub.outputs, outs_x)]


def _outer_split(ctx, i, value):
    if ctx.has_split(i):
        return ctx.split_in(i)
    return _zero_split(value)


def _outer_splits(ctx, body: "_Body", first: int, values) -> list:
    """The splits of the scan's operands ``first, first + 1, …`` (consts, carry or xs) where
    the body reads them live in RevealCancel modes, else ``None``."""
    return [_outer_split(ctx, first + i, v) if body.rc and first + i in body.live else None
            for i, v in enumerate(values)]


def _forward(ctx):
    """Rescale: each side through the loop on its own (:func:`_forward_sides`); RevealCancel
    modes: both together, carrying the splits (:func:`_forward_together`)."""
    body = _Body(ctx)
    if body.rc or any(op.sub is not None for op in body.sub.ops):
        return _forward_together(ctx, body)
    return _forward_sides(ctx, body)


def _forward_sides(ctx, body: _Body):
    """Each side through the loop in a ``lax.scan`` of its own, stacking every step's values.
    A side depends only on its own input, so under ``vmap`` over inputs × references the
    input's loop runs once per input and the reference's once per reference (docs/design.md §20.1), not
    once per pair; only the backward pass runs per pair."""
    sub = body.sub
    nc, nk = body.n_consts, body.n_carry
    carry_ids = set(range(nc, nc + nk))
    n_inputs = len(ctx.xs)  # a body's inputs are variables 0 … n_inputs − 1

    def keep(values: dict) -> dict:  # the step's own values: not the constants nor the xs
        return {i: v for i, v in values.items() if i >= n_inputs or i in carry_ids}

    def side(values):
        consts, carry, xs = values[:nc], values[nc:nc + nk], values[nc + nk:]

        def step(k, x_t):
            vals = list(consts) + list(k) + list(x_t)
            live, computed = ctx.sub_side(sub, [vals[i] for i in sub.fixed_inputs],
                                          [vals[i] for i in sub.live_inputs])
            computed.update({i: vals[i] for i in sub.fixed_inputs if i in carry_ids})
            env = {**sub.consts, **dict(enumerate(vals)), **computed, **live}
            outs = body.read_outputs(env.__getitem__)
            new_k = [o.astype(v.dtype) for o, v in zip(outs[:nk], k)]
            return new_k, (outs[nk:], keep(live), computed)

        k, (ys, live, computed) = scan(step, varying_like(list(carry), xs), list(xs),
                                       length=body.length, reverse=body.reverse)
        return list(k) + list(ys), live, computed

    outs_x, live_x, computed = side(ctx.xs)
    outs_r, live_r, _ = side(ctx.rs)
    states = {"fixed": computed, "x": live_x, "r": live_r, "split": {}, "stash": {}}
    return outs_x, outs_r, {"splits": None, "states": states}


def _forward_together(ctx, body: _Body):
    """Both sides through the loop in one ``lax.scan``: the results on the input and on the
    reference, and a stash for the backward pass — every step's body state
    (:meth:`RuleContext.sub_state`: values, splits, fixed values; the loop's constants and xs
    are left out, the step's input carry kept) and, in RevealCancel modes, the splits of the
    final carry and of the stacked ys."""
    nc, nk = body.n_consts, body.n_carry
    cx, kx, xsx = ctx.xs[:nc], ctx.xs[nc:nc + nk], ctx.xs[nc + nk:]
    cr, kr, xsr = ctx.rs[:nc], ctx.rs[nc:nc + nk], ctx.rs[nc + nk:]
    csplit = _outer_splits(ctx, body, 0, cx)
    ksplit = _outer_splits(ctx, body, nc, kx)
    xssplit = _outer_splits(ctx, body, nc + nk, xsx)
    carry_ids = range(nc, nc + nk)

    def step(carry, t_in):
        k_x, k_r, k_split = carry
        x_t, r_t, s_t = t_in
        fwd = body.forward(list(cx) + list(k_x) + list(x_t), list(cr) + list(k_r) + list(r_t),
                           csplit + list(k_split) + list(s_t))
        outs_x, outs_r = body.outputs(fwd, "x"), body.outputs(fwd, "r")
        splits = body.output_splits(fwd, outs_x)
        new_k_x = [o.astype(k.dtype) for o, k in zip(outs_x[:nk], k_x)]
        new_k_r = [o.astype(k.dtype) for o, k in zip(outs_r[:nk], k_r)]
        new_split = [None if s is None else tuple(a.astype(b.dtype) for a, b in zip(n, s))
                     for n, s in zip(splits[:nk], k_split)]
        state = ctx.sub_state(fwd, keep_inputs=carry_ids)
        return (new_k_x, new_k_r, new_split), (outs_x[nk:], outs_r[nk:], splits[nk:], state)

    init = (varying_like(list(kx), xsx), varying_like(list(kr), xsr),
            varying_like(ksplit, xsx, xsr))
    (k_x, k_r, k_split), (ys_x, ys_r, ys_split, states) = scan(
        step, init, (list(xsx), list(xsr), xssplit),
        length=body.length, reverse=body.reverse)
    stash = {"splits": list(k_split) + list(ys_split), "states": states}
    return list(k_x) + list(ys_x), list(k_r) + list(ys_r), stash


def _split(ctx) -> list:
    return [s if s is not None else sign_split(ctx.delta_out(j))
            for j, s in enumerate(ctx.stash["splits"])]


def _zeros_like_multiplier(value, like):
    z = zeros_of_difference(value)
    return z.astype(jnp.result_type(z.dtype, like))


def _backward(ctx, m_out) -> list:
    body = _Body(ctx)
    nc, nk = body.n_consts, body.n_carry
    cx, cr = ctx.xs[:nc], ctx.rs[:nc]
    xsx, xsr = ctx.xs[nc + nk:], ctx.rs[nc + nk:]
    csplit = _outer_splits(ctx, body, 0, cx)
    xssplit = _outer_splits(ctx, body, nc + nk, xsx)
    rc = body.rc
    seed_dtype = next(m.pos.dtype for m in m_out if m is not None)

    def pack(m, value):
        """A multiplier as the loop carries it: ``(m⁺, m⁻)`` in RevealCancel modes, else m."""
        if m is None:
            z = _zeros_like_multiplier(value, seed_dtype)
            return (z, z) if rc else z
        return (m.pos, m.neg) if rc else m.pos

    def unpack(m):
        return SplitMultipliers(*m) if rc else SplitMultipliers.of(m)

    outs = list(ctx.ys)
    m_carry = [pack(m, v) for m, v in zip(m_out[:nk], outs[:nk])]
    m_ys = [pack(m, v) for m, v in zip(m_out[nk:], outs[nk:])]
    m_consts = [pack(None, v) for v in cx]

    def step(carry, t_in):
        m_k, m_c = carry
        state, x_t, r_t, s_t, m_y = t_in
        fwd = body.rebuild(state, list(cx) + [None] * nk + list(x_t),
                           list(cr) + [None] * nk + list(r_t), csplit + [None] * nk + list(s_t))
        seeds: dict = {}
        for o, m in zip(body.sub.outputs, list(m_k) + list(m_y)):
            if isinstance(o, int):
                seeds[o] = unpack(m) if o not in seeds else seeds[o] + unpack(m)
        mult = ctx.backward_sub(fwd, seeds)

        def got(i, like):
            m = mult.get(i)
            if m is None:
                return jax.tree_util.tree_map(jnp.zeros_like, like)
            packed = (m.pos, m.neg) if rc else m.pos
            return jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype), packed, like)

        new_m_k = [got(nc + i, m) for i, m in enumerate(m_k)]
        new_m_c = [jax.tree_util.tree_map(jnp.add, acc, got(i, acc))
                   for i, acc in enumerate(m_c)]
        m_x = [got(nc + nk + i, pack(None, v)) for i, v in enumerate(x_t)]
        return (new_m_k, new_m_c), m_x

    (m_init, m_consts), m_xs = scan(
        step, varying_like((m_carry, m_consts), xsx, xsr),
        (ctx.stash["states"], list(xsx), list(xsr), xssplit, m_ys),
        length=body.length, reverse=not body.reverse)
    result: list = []
    for i, m in enumerate(list(m_consts) + list(m_init) + list(m_xs)):
        result.append(unpack(m) if ctx.live[i] else None)
    return result


SCAN = Rule("scan", backward=_backward, split=_split, numeric_operands=True, forward=_forward)
registry.register("scan", SCAN, any)
