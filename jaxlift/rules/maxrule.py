"""Max rules: max-pooling (``reduce_window_max``), ``reduce_max``/``reduce_min``, running
maxima ``cummax``/``cummin`` and ``max``/``min`` of two live operands (docs/design.md §10).

Two rules (``max_mode=``; the second is chosen by a composite, :mod:`jaxlift.rules.composites`):

* ``preserving`` (default): for ``y = max(...)``, the positive part of ``Δy`` is credited to the
  argmax of the input and the negative part blamed on the argmax of the reference: route
  ``max(Δy, 0)`` through the op's gradient at ``x`` and ``min(Δy, 0)`` through its gradient at
  ``r``, sum, and divide by ``Δx`` (exactly 0 where ``Δx = 0``: nothing is routed there).
  For ``min`` the two points swap. Ties split equally. Sums to ``Δy`` exactly and every
  multiplier lies in ``[0, 1]``.
* ``gradient``: the original deeplift's max-pool behaviour: multipliers go to the argmax of the
  input (``m = 1`` there, the gradient). It breaks summation-to-delta whenever the reference's
  argmax differs from the input's (e.g. non-uniform references): ``Σ C = Σ_j (x_{argmax_x j} −
  x0_{argmax_x j}) ≠ Δy_j`` in general.

In RevealCancel modes the output is split by sign (the interpreter's generic split), which is
exactly the up/down routing above.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlift.split_multipliers import SplitMultipliers
from jaxlift.rules import registry
from jaxlift.rules._util import vjp_live
from jaxlift.rules.registry import Rule

_MIN_LIKE = {"min", "reduce_min", "reduce_window_min", "cummin"}


_WINDOWED = {"reduce_window_max": -jnp.inf, "reduce_window_min": jnp.inf}  # their padding


def _window_max_transpose(x, y, g, params, fill=-jnp.inf):
    """Cotangent on ``x`` of max-pooling ``y = reduce_window_max(x)`` (min-pooling with
    ``fill = +inf``) given cotangent ``g`` on ``y``, with ties split equally — for
    non-overlapping windows (strides = window, no dilation). Returns ``None`` when the windows
    overlap."""
    wd, st = params["window_dimensions"], params["window_strides"]
    if (tuple(wd) != tuple(st) or any(d != 1 for d in params["base_dilation"])
            or any(d != 1 for d in params["window_dilation"])):
        return None
    pads = params["padding"]
    xp = jnp.pad(x, pads, constant_values=fill) if any(p != (0, 0) for p in pads) else x
    used = tuple(o * w for o, w in zip(y.shape, wd))
    xs = xp[tuple(slice(0, u) for u in used)]
    inter = tuple(s for o, w in zip(y.shape, wd) for s in (o, w))
    win_axes = tuple(range(1, 2 * len(wd), 2))
    xr = xs.reshape(inter)
    yr = jnp.expand_dims(y, win_axes)
    mask = (xr == yr).astype(g.dtype)
    count = mask.sum(axis=win_axes, keepdims=True)
    gr = mask * (jnp.expand_dims(g, win_axes) / jnp.maximum(count, 1))
    gx = gr.reshape(used)
    gx = jnp.pad(gx, [(0, s - u) for s, u in zip(xp.shape, used)])
    return gx[tuple(slice(lo, lo + n) for (lo, _), n in zip(pads, x.shape))]


def _window_patches_transpose(x, y, g, params, fill):
    """The same for any windows without base dilation (overlapping, strided, dilated): with
    ``P(x)[o, j]`` the ``o``-th element of window ``j`` (``P`` linear), the cotangent is
    ``Pᵀ(mask·g/count)``, ``mask[o, j] = [P(x)[o, j] = y_j]`` and ``count`` its sum over ``o``.
    Returns ``None`` for base dilation."""
    if any(d != 1 for d in params["base_dilation"]):
        return None
    wd, st = params["window_dimensions"], params["window_strides"]
    dil, pads = params["window_dilation"], params["padding"]
    offsets = [()]
    for w in wd:
        offsets = [o + (k,) for o in offsets for k in range(w)]

    def patches(v, value):
        vp = jnp.pad(v, pads, constant_values=value)
        return jnp.stack([vp[tuple(slice(k * d, k * d + (n - 1) * s + 1, s)
                                   for k, d, n, s in zip(o, dil, y.shape, st))]
                          for o in offsets])

    mask = (patches(x, fill) == y).astype(g.dtype)
    count = mask.sum(axis=0)
    _, transpose = jax.vjp(lambda v: patches(v, 0), jnp.zeros(x.shape, g.dtype))
    (gx,) = transpose(mask * (g / jnp.maximum(count, 1)))
    return gx


def _route(ctx, cotangent, base, base_out) -> list:
    """The op's gradient at ``base`` applied to ``cotangent``, ties split equally (for
    max/min-pooling too, whose JAX gradient gives a tie to one element)."""
    if ctx.op.primitive in _WINDOWED:
        (i,) = ctx.live_float
        fill = _WINDOWED[ctx.op.primitive]
        g = _window_max_transpose(base[i], base_out, cotangent, ctx.params, fill)
        if g is None:
            g = _window_patches_transpose(base[i], base_out, cotangent, ctx.params, fill)
        if g is not None:
            out: list = [None] * len(base)
            out[i] = g
            return out
    return vjp_live(ctx, [cotangent], base=base)


def _gradient_backward(ctx, m_out) -> list:
    """``max_mode="gradient"``: multipliers to the input's argmax (the gradient)."""
    (m,) = m_out
    g = _route(ctx, m.pos, ctx.xs, ctx.ys[0])
    return [None if v is None else SplitMultipliers.of(v) for v in g]


def _backward(ctx, m_out) -> list:
    (m,) = m_out
    m = m.pos
    dy = ctx.delta_out(0)
    up, down = jnp.maximum(dy, 0), jnp.minimum(dy, 0)
    at_up, at_down = (ctx.xs, ctx.ys[0]), (ctx.rs, ctx.y0s[0])
    if ctx.op.primitive in _MIN_LIKE:
        at_up, at_down = at_down, at_up
    g_up = _route(ctx, m * up, *at_up)
    g_down = _route(ctx, m * down, *at_down)
    result: list = [None] * len(ctx.xs)
    for i in ctx.live_float:
        d = ctx.delta_in(i)
        routed = g_up[i] + g_down[i]
        d_b = jnp.broadcast_to(d, routed.shape)
        safe = jnp.where(d_b == 0, jnp.ones_like(d_b), d_b)
        result[i] = SplitMultipliers.of(jnp.where(d_b == 0, jnp.zeros_like(routed), routed / safe))
    return result


MAX_RULE = Rule("max", backward=_backward)
MAX_GRADIENT = Rule("max_gradient", backward=_gradient_backward,  # chosen by a composite
                    exact=False)

MAX_PRIMITIVES = ("max", "min", "reduce_max", "reduce_min", "reduce_window_max",
                  "reduce_window_min", "cummax", "cummin")
for _p in MAX_PRIMITIVES:
    registry.register(_p, MAX_RULE)
