"""Targets: what scalar of a model's output to explain (DeepLIFT paper §3.6, docs/design.md §4.2).

Use with ``jaxlift.attribute(fn, params, x, refs, target=...)``:

* :func:`class_difference` ``(a, b)`` — ``o[a] − o[b]``: why class ``a`` rather than ``b``
  (the paper's MNIST benchmark explains ``S_c − S_t`` this way). Contributions to a difference
  are the differences of contributions (every mode here is linear in the target's seed).
* :func:`softmax_normalized` ``(i)`` — ``o[i] − mean_j o[j]``, the paper's "adjustment for
  softmax layers": subtracting the mean logit removes what pushes all classes alike, to which
  a softmax is blind.

and to score the logits under a final sigmoid/softmax without rewriting the model:

* :func:`pre_activation` ``(fn)`` — a function like ``fn`` that returns the *input* of ``fn``'s
  final sigmoid or softmax. It traces ``fn`` and recognises, at the very end of the program
  (looking inside ``jit``/``custom_jvp``/``custom_vjp``/``remat`` wrappers):

  - ``logistic`` (``jax.nn.sigmoid``, ``flax.linen.sigmoid``): the logits are its operand;
  - the softmax pattern ``exp(s) / broadcast(reduce_sum(exp(s)))`` (``jax.nn.softmax`` or a
    hand-written one): the logits are ``z`` when ``s = z − stop_gradient(max z)`` (the
    numerically stable form), else ``s`` itself;
  - the log-softmax pattern ``s − log(broadcast(reduce_sum(exp(s))))`` (``jax.nn.log_softmax``,
    ``flax.linen.log_softmax`` or a hand-written one), with the same logits.

  Anything else (``1/(1 + exp(−z))`` written by hand, ``z − logsumexp(z)``, a reshape after the
  softmax …) raises a ``ValueError`` naming the primitive that produces the output.

The target objects are small frozen dataclasses: equal arguments give equal (hashable) targets,
so a second ``attribute`` call reuses the compiled computation.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jcore
import numpy as np

from jaxlift.jaxpr_walk import bind_eqn, call_body, where_of


@dataclasses.dataclass(frozen=True)
class ClassDifference:
    """Target ``o[..., a] − o[..., b]`` of an example's output ``o`` (shape ``(C,)``)."""

    a: int
    b: int

    def __call__(self, out) -> jax.Array:
        out = jnp.asarray(out)
        n = out.shape[-1] if out.ndim else 0
        for name, i in (("a", self.a), ("b", self.b)):
            if not -n <= i < n:
                raise ValueError(f"class_difference: class {name}={i} is out of range for an "
                                 f"output with {n} entries per example (shape {out.shape})")
        return out[..., self.a] - out[..., self.b]


@dataclasses.dataclass(frozen=True)
class SoftmaxNormalized:
    """Target ``o[..., i] − mean_j o[..., j]`` (the paper's softmax normalisation)."""

    i: int

    def __call__(self, out) -> jax.Array:
        out = jnp.asarray(out)
        n = out.shape[-1] if out.ndim else 0
        if not -n <= self.i < n:
            raise ValueError(f"softmax_normalized: class {self.i} is out of range for an output "
                             f"with {n} entries per example (shape {out.shape})")
        return out[..., self.i] - out.mean(axis=-1)


def _class_index(name: str, v) -> int:
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise TypeError(f"{name} must be an int class index, got {v!r}")
    return int(v)


def class_difference(a: int, b: int) -> ClassDifference:
    """Target ``score[a] − score[b]`` (explain why class ``a`` rather than ``b``)."""
    return ClassDifference(_class_index("a", a), _class_index("b", b))


def softmax_normalized(i: int) -> SoftmaxNormalized:
    """Target ``logit[i] − mean_j logit[j]`` (DeepLIFT §3.6, "adjustments for softmax layers");
    use it on logits, e.g. with :func:`pre_activation`."""
    return SoftmaxNormalized(_class_index("i", i))


# ---------------------------------------------------------------------------------------------
# Cutting fn at the input of its final nonlinearity

_SHAPE_ONLY = ("broadcast_in_dim", "reshape", "expand_dims", "squeeze", "convert_element_type",
               "stop_gradient", "copy", "copy_p")


def _producers(jaxpr) -> dict:
    return {v: (i, e) for i, e in enumerate(jaxpr.eqns) for v in e.outvars}


def _through(prods, v, names):
    """Follow ``v`` back through single-operand equations named in ``names``."""
    while isinstance(v, jcore.Var) and v in prods and prods[v][1].primitive.name in names:
        e = prods[v][1]
        live = [a for a in e.invars if isinstance(a, jcore.Var)]
        if len(live) != 1:
            break
        v = live[0]
    return v


def _softmax_logits(prods, eqn):
    """The logits variable of a softmax ending in ``eqn`` (a ``div``), or ``None``."""
    if eqn.primitive.name != "div" or len(eqn.invars) != 2:
        return None
    num, den = eqn.invars
    if not isinstance(num, jcore.Var) or num not in prods or prods[num][1].primitive.name != "exp":
        return None
    s = prods[num][1].invars[0]
    d = _through(prods, den, _SHAPE_ONLY)
    if not isinstance(d, jcore.Var) or d not in prods or prods[d][1].primitive.name != "reduce_sum":
        return None
    summed = prods[d][1].invars[0]
    if summed is not num:
        if (not isinstance(summed, jcore.Var) or summed not in prods
                or prods[summed][1].primitive.name != "exp" or prods[summed][1].invars[0] is not s):
            return None
    return _unshifted(prods, s)


def _unshifted(prods, s):
    """``z`` when ``s = z − stop_gradient(max z)`` (the stable shift), else ``s``."""
    if isinstance(s, jcore.Var) and s in prods and prods[s][1].primitive.name == "sub":
        z, m = prods[s][1].invars
        m = _through(prods, m, _SHAPE_ONLY + ("max",))
        if (isinstance(m, jcore.Var) and m in prods and prods[m][1].primitive.name == "reduce_max"
                and prods[m][1].invars[0] is z):
            return z
    return s


def _log_softmax_logits(prods, eqn):
    """The logits variable of a log-softmax ``s − log(sum(exp(s)))`` ending in ``eqn``, or
    ``None``."""
    if eqn.primitive.name != "sub" or len(eqn.invars) != 2:
        return None
    s, lse = eqn.invars
    lse = _through(prods, lse, _SHAPE_ONLY)
    if not isinstance(lse, jcore.Var) or lse not in prods or prods[lse][1].primitive.name != "log":
        return None
    d = _through(prods, prods[lse][1].invars[0], _SHAPE_ONLY)
    if not isinstance(d, jcore.Var) or d not in prods or prods[d][1].primitive.name != "reduce_sum":
        return None
    e = prods[d][1].invars[0]
    if (not isinstance(e, jcore.Var) or e not in prods or prods[e][1].primitive.name != "exp"
            or prods[e][1].invars[0] is not s):
        return None
    return _unshifted(prods, s)


def _locate(jaxpr, outvar):
    """``(path, var, kind)``: the equation indices leading (through call bodies) to the final
    nonlinearity and the variable holding its input; or ``(None, eqn)`` naming the producer."""
    prods = _producers(jaxpr)
    if not isinstance(outvar, jcore.Var) or outvar not in prods:
        return None, None
    i, eqn = prods[outvar]
    if eqn.primitive.name == "logistic":
        return ([i], eqn.invars[0], "sigmoid"), eqn
    z = _softmax_logits(prods, eqn)
    if z is not None:
        return ([i], z, "softmax"), eqn
    z = _log_softmax_logits(prods, eqn)
    if z is not None:
        return ([i], z, "log_softmax"), eqn
    body = call_body(eqn)
    if body is not None:
        j = eqn.outvars.index(outvar)
        found, inner_eqn = _locate(body[0], body[0].outvars[j])
        if found is not None:
            path, var, kind = found
            return ([i] + path, var, kind), inner_eqn
        return None, inner_eqn or eqn
    return None, eqn


def _eval_until(jaxpr, consts, args, path, var):
    """Evaluate ``jaxpr`` up to equation ``path[0]`` and return ``var`` (descending into the
    call bodies named by the rest of ``path``)."""
    env: dict = dict(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))

    def read(v):
        return v.val if isinstance(v, jcore.Literal) else env[v]

    stop = path[0]
    for eqn in jaxpr.eqns[:stop]:
        for v, o in zip(eqn.outvars, bind_eqn(eqn, [read(v) for v in eqn.invars])):
            env[v] = o
    if len(path) == 1:
        return read(var)
    eqn = jaxpr.eqns[stop]
    body, body_consts = call_body(eqn)
    return _eval_until(body, body_consts, [read(v) for v in eqn.invars], path[1:], var)


@dataclasses.dataclass(frozen=True)
class PreActivation:
    """``fn`` cut at the input of its final sigmoid, softmax or log-softmax (see
    :func:`pre_activation`)."""

    fn: Callable

    def __call__(self, params: Any, xb: Any) -> jax.Array:
        closed = jax.make_jaxpr(self.fn)(params, xb)
        jaxpr = closed.jaxpr
        if len(jaxpr.outvars) != 1:
            raise ValueError(f"pre_activation: fn returns {len(jaxpr.outvars)} arrays; it needs "
                             "one output ending in a sigmoid or softmax")
        found, eqn = _locate(jaxpr, jaxpr.outvars[0])
        if found is None:
            what = ("an input or constant" if eqn is None
                    else f"'{eqn.primitive.name}' (at {where_of(eqn)})")
            raise ValueError(
                f"pre_activation: fn's output is produced by {what}, not by a final sigmoid "
                "('logistic'), softmax (exp(s) / sum(exp(s))) or log-softmax "
                "(s − log(sum(exp(s)))); recognised: jax.nn.sigmoid, jax.nn.softmax, "
                "jax.nn.log_softmax and hand-written exp/sum (log-)softmaxes. Return the logits "
                "yourself (e.g. a logits=True switch) for other heads")
        path, var, _ = found
        args = jax.tree_util.tree_leaves((params, xb))
        return _eval_until(jaxpr, list(closed.consts), args, path, var)

    def kind(self, params: Any, xb: Any) -> str:
        """``"sigmoid"``, ``"softmax"`` or ``"log_softmax"``: which final nonlinearity was cut."""
        closed = jax.make_jaxpr(self.fn)(params, xb)
        found, _ = _locate(closed.jaxpr, closed.jaxpr.outvars[0])
        if found is None:
            raise ValueError("pre_activation: no final sigmoid, softmax or log-softmax")
        return found[2]


def pre_activation(fn: Callable) -> PreActivation:
    """``fn(params, xb)`` cut at the input of its final sigmoid/softmax/log-softmax: returns the
    logits ``(B, C)`` where ``fn`` returns (log-)probabilities ``(B, C)``. The paper's choice of target for
    sigmoid/softmax outputs (§3.6); see the module doc for what is recognised."""
    if not callable(fn):
        raise TypeError(f"pre_activation needs a callable fn(params, xb), got {type(fn).__name__}")
    return PreActivation(fn)


# ---------------------------------------------------------------------------------------------
# Selecting the target of one example

def select_target(out, target) -> jax.Array:
    """The scalar (or, for ``target="all"``, the flat vector) of one example's output ``out``
    that ``target`` picks (see :func:`jaxlift.attribute`); errors name the target and shape."""
    if callable(target) and not isinstance(target, str):
        t = jnp.asarray(target(out))
        if t.size != 1:
            raise ValueError(f"target callable must return a scalar, got shape {t.shape}")
        return t.reshape(())
    leaves = jax.tree_util.tree_leaves(out)
    if len(leaves) != 1:
        raise ValueError(
            f"fn returns a pytree of {len(leaves)} arrays per example; pass target as a "
            "callable that picks the scalar to explain")
    (o,) = leaves
    if target is None:
        if o.size != 1:
            raise ValueError(
                f"fn's output per example has shape {o.shape}; pass target=<index> to explain "
                "one output, or target='all' to explain every output")
        return o.reshape(())
    if isinstance(target, str):
        if target != "all":
            raise ValueError(f"unknown target {target!r}; use an index, a tuple, a callable "
                             "or 'all'")
        return o.reshape(-1)
    if isinstance(target, (int, np.integer)):
        if o.ndim == 0:
            raise ValueError("fn's output per example is a scalar; use target=None")
        n = o.shape[-1]
        if not -n <= int(target) < n:
            raise ValueError(f"target index {int(target)} is out of range for fn's output with "
                             f"{n} entries per example (shape {o.shape})")
        t = o[..., int(target)]
        if t.ndim:
            raise ValueError(f"target index {int(target)} selects shape {t.shape}, not a scalar; "
                             f"pass a tuple index into the per-example output of shape {o.shape}")
        return t
    if isinstance(target, tuple):
        if len(target) != o.ndim:
            raise ValueError(f"tuple target {target} must index all {o.ndim} axes of the "
                             f"per-example output of shape {o.shape}")
        for i, n in zip(target, o.shape):
            if not -n <= int(i) < n:
                raise ValueError(f"target {target} is out of range for the per-example output "
                                 f"of shape {o.shape}")
        return o[target]
    raise TypeError(f"target must be None, an int, a tuple, a callable or 'all', got "
                    f"{type(target).__name__}")


def per_example(fn: Callable, target) -> Callable:
    """``f(params, x_example) -> t``: ``fn`` (batch in, batch out) on one example, reduced to the
    target ``t`` (a scalar, or ``(T,)`` for ``target="all"``). What every method explains."""
    def f(params, x_example):
        xb = jax.tree_util.tree_map(lambda leaf: leaf[None], x_example)
        out = fn(params, xb)
        out_example = jax.tree_util.tree_map(lambda o: o[0], out)
        return select_target(out_example, target)
    return f
