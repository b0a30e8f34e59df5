"""Guided backpropagation (Springenberg et al., 2015) as a nonlinearity rule.

Used by the method ``"guided_backprop"`` (:mod:`jaxlift.methods.guided_backprop`), which runs the interpreter
with the reference *equal to the input* and ``max_mode="gradient"``, so every point-dependent rule
takes its derivative at ``x``: max-pooling routes to the argmax of ``x``, the product rule's
midpoints are ``x`` itself, linear ops transpose. The backward pass is then exactly the gradient
of the target, except through fused elementwise nonlinearities, where this rule applies:

* the nonlinearity's chain ``y = f(v)`` is differentiated at ``x`` (a VJP), with every relu-like
  step ``u ↦ max(u, c)`` (``c`` fixed) replaced by one whose backward passes only positive
  multipliers, and only where its forward input is above ``c``:
  ``m_u = 1{u > c} · max(m_out, 0)``. A relu-like step is a ``max`` with one fixed operand
  written directly in the chain (``jnp.maximum(u, 0)``), or a call (``jit``/``custom_jvp``)
  whose body is only that (``jax.nn.relu``); calls that merely contain a ``max`` among other
  work (``softplus = logaddexp(u, 0)``, ``relu6``) are differentiated normally;
* other steps (bias adds, sigmoid, tanh, scaling …) use their ordinary derivative, as Captum's
  ``GuidedBackprop`` does for non-ReLU modules.

A chain ``relu(z + b)`` therefore clamps exactly like a ReLU module after a dense layer.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.extend import core as jcore

from jaxlift.jaxpr_walk import bind_eqn, call_body, live_equations
from jaxlift.split_multipliers import SplitMultipliers
from jaxlift.rules.registry import Rule


@jax.custom_vjp
def guided_max(u, c):
    """``max(u, c)`` whose VJP is ``1{u > c}·max(g, 0)`` for ``u`` (and 0 for ``c``)."""
    return jnp.maximum(u, c)


def _guided_max_fwd(u, c):
    return jnp.maximum(u, c), (u, c)


def _guided_max_bwd(res, g):
    u, c = res
    gu = jnp.where(u > c, jnp.maximum(g, 0), jnp.zeros_like(g))
    return gu, jnp.zeros_like(c)


guided_max.defvjp(_guided_max_fwd, _guided_max_bwd)


def _guided_eqn(eqn, vals: Sequence[Any], lives: Sequence[bool]) -> list:
    """Evaluate one equation, replacing relu-like ``max`` steps and recursing into calls."""
    if not any(lives):
        return bind_eqn(eqn, vals)
    body = call_body(eqn)
    if body is not None:
        if relu_like(body[0], lives):
            return eval_jaxpr_guided(body[0], body[1], vals, lives)
        return bind_eqn(eqn, vals)  # e.g. softplus = logaddexp(x, 0): a smooth function
    if eqn.primitive.name == "max" and sum(lives) == 1:
        u, c = (vals[0], vals[1]) if lives[0] else (vals[1], vals[0])
        u = jnp.asarray(u)
        c = jnp.broadcast_to(jnp.asarray(c, dtype=u.dtype), u.shape)
        return [guided_max(u, c)]
    return bind_eqn(eqn, vals)


_PASSIVE = ("convert_element_type", "copy", "copy_p")


def relu_like(jaxpr, lives: Sequence[bool]) -> bool:
    """Whether a call body computes ``max(u, c)`` of its live input and nothing else (looking
    through nested calls and dtype casts): ``jax.nn.relu`` is, ``softplus`` is not."""
    found = False
    for eqn, ls in live_equations(jaxpr, lives):
        body = call_body(eqn)
        if body is not None:
            if not relu_like(body[0], ls):
                return False
            found = True
        elif eqn.primitive.name == "max" and sum(ls) == 1:
            found = True
        elif eqn.primitive.name not in _PASSIVE:
            return False
    return found


def eval_jaxpr_guided(jaxpr, consts, args: Sequence[Any], lives: Sequence[bool]) -> list:
    """Evaluate ``jaxpr`` on ``args`` with the relu-like steps fed by live args made guided."""
    env: dict = {}
    for v, c in zip(jaxpr.constvars, consts):
        env[v] = (c, False)
    for v, a, l in zip(jaxpr.invars, args, lives):
        env[v] = (a, l)

    def read(v):
        return (v.val, False) if isinstance(v, jcore.Literal) else env[v]

    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        vals, ls = [a for a, _ in ins], [l for _, l in ins]
        outs = _guided_eqn(eqn, vals, ls)
        for v, o in zip(eqn.outvars, outs):
            env[v] = (o, any(ls))
    return [read(v)[0] for v in jaxpr.outvars]


def _eval_chain(ctx, value):
    """The fused nonlinearity's chain on ``value`` of its source, guided."""
    op = ctx.op
    (source,) = op.ins
    env = {source: value}
    out = None
    for sub in op.body:
        vals, ls = [], []
        for a in sub.ins:
            if isinstance(a, int) and a in env:
                vals.append(env[a])
                ls.append(True)
            else:
                vals.append(ctx.fixed_value(a))
                ls.append(False)
        (out,) = _guided_eqn(sub.eqn, vals, ls)
        env[sub.outs[0]] = out
    return out


def _backward(ctx, m_out) -> list:
    (m,) = m_out
    x = ctx.xs[0]
    y, pull = jax.vjp(lambda v: _eval_chain(ctx, v), x)
    (g,) = pull(jnp.asarray(m.pos, y.dtype))
    return [SplitMultipliers.of(g)]


GUIDED = Rule("guided_backprop", backward=_backward, exact=False)
