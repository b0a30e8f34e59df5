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
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jcore
import numpy as np

from jaxlift.errors import InputTypeError, InputValueError
from jaxlift.jaxpr_walk import bind_eqn, call_body, where_of
from jaxlift.program import at_one_trace
from jaxlift.validation import check_outputs


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
                raise InputValueError(f"class_difference: class {name}={i} is out of range for an "
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
            raise InputValueError(f"softmax_normalized: class {self.i} is out of range for an output "
                                  f"with {n} entries per example (shape {out.shape})")
        return out[..., self.i] - out.mean(axis=-1)


def _class_index(name: str, v) -> int:
    if isinstance(v, bool) or not hasattr(v, "__index__"):
        raise InputTypeError(f"{name} must be an int class index, got {v!r}")
    return int(v)


def class_difference(a, b):
    """Target ``score[a] − score[b]`` (explain why class ``a`` rather than ``b``). ``a`` and
    ``b`` may also be arrays of N class indices, one pair per input: a :class:`PerInputTarget`."""
    if np.ndim(a) == 0 and np.ndim(b) == 0:
        return ClassDifference(_class_index("a", a), _class_index("b", b))
    a, b = _indices("class_difference a", a), _indices("class_difference b", b)
    if a.shape != b.shape:
        raise InputValueError(f"class_difference: {a.shape[0]} classes a but {b.shape[0]} classes b;"
                              " give one of each per input")
    return PerInputTarget(a, b)


def softmax_normalized(i: int) -> SoftmaxNormalized:
    """Target ``logit[i] − mean_j logit[j]`` (DeepLIFT §3.6, "adjustments for softmax layers");
    use it on logits, e.g. with :func:`pre_activation`."""
    return SoftmaxNormalized(_class_index("i", i))


# ---------------------------------------------------------------------------------------------
# Targets that differ per input

@dataclasses.dataclass(frozen=True)
class PerInput:
    """A static target whose value differs per input: the program explains ``t_i = s_i · o_i``
    with ``o_i`` input i's output (flattened) and ``s_i`` a row of weights — given as data
    (``kind="given"``: :attr:`jaxlift.methods.call.Inputs.seeds`, so other targets reuse the
    compiled program) or the one-hot of input i's own argmax (``kind="pred"``: the predicted
    class, computed inside the program)."""

    kind: str


GIVEN = PerInput("given")
PREDICTED = PerInput("pred")


@dataclasses.dataclass(frozen=True, eq=False)
class PerInputTarget:
    """Classes per input, as the user gave them: ``o[a_i]`` (``b`` ``None``) or
    ``o[a_i] − o[b_i]``; ``a`` and ``b`` are integer arrays of N."""

    a: np.ndarray
    b: np.ndarray | None = None

    def seeds(self, n: int, size: int) -> np.ndarray:
        """``(N, size)`` weights: one-hot rows (``e_a − e_b`` for differences)."""
        if self.a.shape[0] != n:
            raise InputValueError(f"target gives {self.a.shape[0]} classes for {n} inputs; give one "
                                  "per input")
        rows = np.zeros((n, size), np.float32)
        for name, idx, sign in (("target", self.a, 1.0), ("class b", self.b, -1.0)):
            if idx is None:
                continue
            bad = (idx < -size) | (idx >= size)
            if bad.any():
                i = int(np.argmax(bad))
                raise InputValueError(f"{name} {int(idx[i])} of input {i} is out of range for fn's "
                                      f"output with {size} entries per example")
            np.add.at(rows, (np.arange(n), idx % size), sign)
        return rows


def _indices(name: str, v) -> np.ndarray:
    arr = np.asarray(v)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise InputTypeError(f"{name} must be one int class index per input (a list or a 1-D "
                             f"integer array), got {type(v).__name__} of dtype {arr.dtype} and shape "
                             f"{arr.shape}")
    return arr.astype(np.int64)


def normalize_target(target):
    """``(static target, per-input classes or None)``: a list or 1-D integer array of N class
    indices becomes :data:`GIVEN` with a :class:`PerInputTarget`; ``"pred"`` becomes
    :data:`PREDICTED`; a 0-d integer array its int; anything else is returned as it is."""
    if isinstance(target, PerInputTarget):
        return GIVEN, target
    if isinstance(target, str) and target == "pred":
        return PREDICTED, None
    if isinstance(target, list) or (isinstance(target, (np.ndarray, jax.Array))
                                    and not isinstance(target, jax.core.Tracer)):
        if np.ndim(target) == 0:
            value = np.asarray(target)
            if not np.issubdtype(value.dtype, np.integer):
                raise InputTypeError(f"target must be an int index, got an array of dtype "
                                     f"{value.dtype}")
            return int(value), None
        return GIVEN, PerInputTarget(_indices("target", target))
    return target, None


def weigh(target, seed, values):
    """``Σ seed·values`` for a per-input target (``values``: the example's flattened outputs),
    else ``values`` itself."""
    if isinstance(target, PerInput):
        return jnp.sum(weighted(seed, values))
    return values


def weighted(seed, values):
    """``seed·values`` with 0 wherever the weight is 0, even where the value is not finite: an
    output the target does not read (a −inf logit masked out) does not make it NaN."""
    return jnp.where(seed != 0, seed * values, jnp.zeros((), jnp.result_type(seed, values)))


def predicted_seed(values):
    """The one-hot of the largest output (``target="pred"``; a single output: itself)."""
    flat = jnp.ravel(values)
    return jax.nn.one_hot(jnp.argmax(flat), flat.shape[0], dtype=flat.dtype)


def predicted_rows(n: int, size: int) -> np.ndarray:
    """``(n, size)`` per-input weights that ask for each input's predicted class: rows of NaN,
    which :func:`seed_of` resolves inside the program (``target="pred"`` run as data, so that
    it shares the compiled program of an int or per-input target). One row broadcast to ``n``
    (a view: chunks are cut as views of it)."""
    return np.broadcast_to(np.full(size, np.nan, np.float32), (n, size))


def asks_prediction(seeds) -> bool:
    """Whether per-input weights are :func:`predicted_rows` (checked on the host)."""
    return seeds is not None and bool(np.isnan(np.asarray(seeds[:1])).all())


def seed_of(seed, values):
    """A per-input target's weights for an example whose outputs are ``values``: ``seed`` as
    given; the one-hot of the largest output (:func:`predicted_seed`) where none is given
    (``None``) or where the row asks for it (NaN: :func:`predicted_rows`)."""
    predicted = predicted_seed(values)
    if seed is None:
        return predicted
    return jnp.where(jnp.isnan(seed), predicted.astype(seed.dtype), seed)


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
            raise InputValueError(f"pre_activation: fn returns {len(jaxpr.outvars)} arrays; it needs "
                                  "one output ending in a sigmoid or softmax")
        found, eqn = _locate(jaxpr, jaxpr.outvars[0])
        if found is None:
            what = ("an input or constant" if eqn is None
                    else f"'{eqn.primitive.name}' (at {where_of(eqn)})")
            raise InputValueError(
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
            raise InputValueError("pre_activation: no final sigmoid, softmax or log-softmax")
        return found[2]


def pre_activation(fn: Callable) -> PreActivation:
    """``fn(params, xb)`` cut at the input of its final sigmoid/softmax/log-softmax: returns the
    logits ``(B, C)`` where ``fn`` returns (log-)probabilities ``(B, C)``. The paper's choice of target for
    sigmoid/softmax outputs (§3.6); see the module doc for what is recognised."""
    if not callable(fn):
        raise InputTypeError(f"pre_activation needs a callable fn(params, xb), got {type(fn).__name__}")
    return PreActivation(fn)


# ---------------------------------------------------------------------------------------------
# Selecting the target of one example

def select_target(out, target) -> jax.Array:
    """The scalar (or, for ``target="all"``, the flat vector) of one example's output ``out``
    that ``target`` picks (see :func:`jaxlift.attribute`); errors name the target and shape."""
    if callable(target) and not isinstance(target, str):
        t = jnp.asarray(target(out))
        if t.size != 1:
            raise InputValueError(f"target callable must return a scalar, got shape {t.shape}")
        return t.reshape(())
    leaves = jax.tree_util.tree_leaves(out)
    if len(leaves) != 1:
        raise InputValueError(
            f"fn returns a pytree of {len(leaves)} arrays per example; pass target as a "
            "callable that picks the scalar to explain")
    (o,) = leaves
    if target is None:
        if o.size != 1:
            raise InputValueError(
                f"fn's output per example has shape {o.shape}; pass target=<index> to explain "
                "one output, or target='all' to explain every output")
        return o.reshape(())
    if isinstance(target, PerInput) or isinstance(target, str) and target == "all":
        return o.reshape(-1)
    if isinstance(target, str):
        raise InputValueError(f"unknown target {target!r}; use an index, a tuple, a callable, 'all' "
                              "or 'pred'")
    if isinstance(target, (int, np.integer)):
        if o.ndim == 0:
            raise InputValueError("fn's output per example is a scalar; use target=None")
        n = o.shape[-1]
        if not -n <= int(target) < n:
            raise InputValueError(f"target index {int(target)} is out of range for fn's output with "
                                  f"{n} entries per example (shape {o.shape})")
        t = o[..., int(target)]
        if t.ndim:
            raise InputValueError(f"target index {int(target)} selects shape {t.shape}, not a scalar; "
                                  f"pass a tuple index into the per-example output of shape {o.shape}")
        return t
    if isinstance(target, tuple):
        if len(target) != o.ndim:
            raise InputValueError(f"tuple target {target} must index all {o.ndim} axes of the "
                                  f"per-example output of shape {o.shape}")
        for i, n in zip(target, o.shape):
            if not -n <= int(i) < n:
                raise InputValueError(f"target {target} is out of range for the per-example output "
                                      f"of shape {o.shape}")
        return o[target]
    raise InputTypeError(f"target must be None, an int, a tuple, a callable or 'all', got "
                         f"{type(target).__name__}")


def per_example(fn: Callable, target, traced_once: bool = True) -> Callable:
    """``f(params, x_example) -> t``: ``fn`` (batch in, batch out) on one example, reduced to the
    target ``t`` (a scalar, or ``(T,)`` for ``target="all"`` and per-input targets, which weigh
    the flattened outputs afterwards). What every method explains. ``fn``'s outputs must keep
    the batch axis and be floating point (checked as it is traced).

    ``traced_once``: ``fn`` is called as :func:`jaxlift.program.at_one_trace` ``(fn)``, whose trace at a batch
    of one JAX makes once — shared by the interpreter's program and the batch-independence
    proof (:mod:`jaxlift.independence`). For a function traced at top level, as the
    interpreter's program is; ``False`` under ``vmap`` (a nested ``jit`` there is batched as a
    jaxpr, which costs more tracing than calling ``fn``: docs/design.md §20.9)."""
    target = "all" if isinstance(target, PerInput) else target
    try:
        return _per_example(fn, target, traced_once)
    except TypeError:  # an unhashable fn or target: a function of its own
        return _per_example.__wrapped__(fn, target, traced_once)


@functools.lru_cache(maxsize=512)
def _per_example(fn: Callable, target, traced_once: bool = True) -> Callable:
    """One function object per (fn, target): traces of it are cached by identity."""
    call = at_one_trace(fn) if traced_once else fn

    def f(params, x_example):
        xb = jax.tree_util.tree_map(lambda leaf: leaf[None], x_example)
        out = call(params, xb)
        check_outputs(out, 1, "a batch of one example")
        out_example = jax.tree_util.tree_map(lambda o: o[0], out)
        return select_target(out_example, target)
    return f


def targets_of_batch(fn: Callable, target, params, batch, seeds=None, same_seed: bool = False):
    """``fn``'s targets on ``batch`` (examples stacked on a leading axis of length m, here 1 or
    2), one per row: ``(m[, T])``. For a per-input target ``seeds`` holds the rows' weights;
    ``None`` (``"pred"``) takes each row's argmax (``same_seed``: row 0's for every row, the
    others being its reference)."""
    out = fn(params, batch)
    m = jax.tree_util.tree_leaves(batch)[0].shape[0]
    check_outputs(out, m, f"a batch of {'one example' if m == 1 else f'{m} examples'}")
    base = "all" if isinstance(target, PerInput) else target
    rows = [select_target(jax.tree_util.tree_map(lambda o, i=i: o[i], out), base)
            for i in range(m)]
    if isinstance(target, PerInput):
        if seeds is None:
            first = predicted_seed(rows[0])
            seeds = [first if same_seed or i == 0 else predicted_seed(r)
                     for i, r in enumerate(rows)]
        rows = [jnp.sum(weighted(seeds[i], rows[i])) for i in range(m)]
    return jnp.stack(rows)


def batch_of_two(fn: Callable, target, params, a, b, seeds=None, same_seed: bool = False):
    """``fn`` on the batch ``[a, b]``, each row reduced to its target (:func:`targets_of_batch`):
    compared with ``fn`` on each example alone, it tells whether ``fn`` mixes the examples of a
    batch (:func:`jaxlift.validation.settle_independence`)."""
    pair = jax.tree_util.tree_map(lambda u, v: jnp.stack([u, v]), a, b)
    return targets_of_batch(fn, target, params, pair, seeds, same_seed)


def each_alone(fn: Callable, target, params, a, b, seeds=None, same_seed: bool = False):
    """The targets of :func:`batch_of_two`, with ``fn`` called on each example by itself (a
    batch of one, as jaxlift explains ``fn``); with ``same_seed`` and ``"pred"``, ``b`` (``a``'s
    reference) is weighed with ``a``'s predicted class, as there."""
    if seeds is None and same_seed and isinstance(target, PerInput):
        seeds = jnp.stack([predicted_seed(targets_of_batch(fn, "all", params, _one(a))[0])] * 2)
    rows = (None, None) if seeds is None else (seeds[:1], seeds[1:2])
    return jnp.concatenate([targets_of_batch(fn, target, params, _one(a), rows[0]),
                            targets_of_batch(fn, target, params, _one(b), rows[1])])


def _one(example):
    return jax.tree_util.tree_map(lambda leaf: leaf[None], example)


def batch_comparison(fn, target, params, x, refs, per_input_refs: bool, seeds=None) -> tuple:
    """``(compared, batched, alone, eps)`` for :func:`jaxlift.validation.settle_independence`:
    ``fn``'s targets on the batch ``[a, b]`` — ``a`` the first input, ``b`` the second (or the
    first input's first reference) — beside the same targets of ``fn`` on each example by
    itself; ``compared``: the two examples differ; ``eps``: of ``fn``'s own output dtype (half
    precision rounds more than float32). One small compiled program of ``fn`` alone, run only
    where ``fn``'s batch independence is neither proven (:mod:`jaxlift.independence`) nor
    settled, so that jaxlift's own programs never hold it. ``seeds``: a per-input target's
    ``(N, T)`` weights. NumPy leaves are cut on the host (two rows); jax arrays are passed
    whole and cut inside the program (a cut outside would be a dispatch, and a compile, each)."""
    n = jax.tree_util.tree_leaves(x)[0].shape[0]
    second = n == 1  # b is the first reference
    rows_needed = 1 if second else 2
    x = jax.tree_util.tree_map(lambda l: l[:rows_needed] if isinstance(l, np.ndarray) else l, x)
    refs = (jax.tree_util.tree_map(lambda l: l[:1] if isinstance(l, np.ndarray) else l, refs)
            if second else None)
    rows = None if seeds is None else np.asarray(seeds)[:rows_needed]
    try:
        program = _comparison(fn, target, second, per_input_refs)
    except TypeError:  # an unhashable fn or target: a program of its own
        program = _comparison.__wrapped__(fn, target, second, per_input_refs)
    compared, batched, alone = jax.device_get(program(params, x, refs, rows))
    dtype = batched.dtype
    eps = jnp.finfo(dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.float32).eps
    return bool(compared), batched, alone, float(eps)


@functools.lru_cache(maxsize=128)
def _comparison(fn, target, from_reference: bool, per_input_refs: bool):
    """The program of :func:`batch_comparison`, once per (fn, target, where ``b`` comes from)."""
    def compare(params, x, refs, rows):
        a = jax.tree_util.tree_map(lambda l: l[0], x)
        if from_reference:
            b = jax.tree_util.tree_map(lambda l: l[0, 0] if per_input_refs else l[0], refs)
            rows = None if rows is None else jnp.concatenate([rows[:1], rows[:1]])
        else:
            b = jax.tree_util.tree_map(lambda l: l[1], x)
        compared = jnp.asarray(False)
        for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            compared = compared | jnp.any(u != v)
        batched = batch_of_two(fn, target, params, a, b, rows, from_reference)
        alone = each_alone(fn, target, params, a, b, rows, from_reference)
        return compared, batched, alone.astype(batched.dtype)
    return jax.jit(compare)
