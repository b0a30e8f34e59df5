"""Checks of a call: its options, its inputs, and what ``fn`` does with a batch.

Everything the pipeline refuses before (or, for values, as) it computes, each with a message
that names the problem instead of an error from deep inside JAX or a silent wrong number
(docs/design.md §17):

* the options: target, precision, batch size, ``max_mode``/``gating``/``layer=``/``mesh=`` only
  where the method has them, ``layer_bypass``;
* the inputs: shapes and dtypes of x and refs (``(K, *S)`` shared or ``(N, K, *S)`` per input),
  NaN/Inf in x, refs and params (params once per jax array: :func:`params_finite_check`);
* ``fn``: it takes a batch and returns a float batch (checked as it is traced,
  :func:`check_outputs`; a failing trace is explained by :func:`explain_trace_failure`), and it
  does not mix the examples of a batch (a BatchNorm in training mode, ``xb - xb.mean(0)``):
  the families compare ``fn`` on a batch of two with ``fn`` on each example inside their
  compiled program, and :func:`settle_independence` reads the comparison once per
  (fn, shapes).
"""
from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift._memo import memoized
from jaxlift._ops import in_host_memory, tree_finite
from jaxlift.errors import InputTypeError, InputValueError
from jaxlift.rules.composites import GATINGS, MAX_MODES


# ---------------------------------------------------------------------------------------------
# Options

def check_target(target) -> None:
    """Refuse target types that no rule can read, before anything is cached under them
    (``1.0 == 1 == True`` as cache keys). Per-input targets (a list or array of N classes,
    ``"pred"``) are normalized first (:func:`jaxlift.targets.normalize_target`)."""
    if target is None or callable(target):
        return
    if isinstance(target, str):
        if target not in ("all", "pred"):
            raise InputValueError(f"unknown target {target!r}; use an index, a tuple, a callable, "
                                  "'all', 'pred' or one index per input")
        return
    if isinstance(target, (bool, np.bool_)):
        raise InputTypeError(f"target must be an int index, not a bool ({target!r})")
    if isinstance(target, (int, np.integer)):
        return
    if isinstance(target, tuple) and all(
            isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))
            for i in target):
        return
    raise InputTypeError(f"target must be None, an int, a tuple of ints, a callable, 'all', 'pred' "
                         f"or one index per input (a list or 1-D array), got {type(target).__name__} "
                         f"{target!r}")


def check_method_options(method, max_mode, gating, layer_name, mesh) -> None:
    """Refuse options the method does not take: ``max_mode``/``gating`` choose DeepLIFT rules,
    ``layer=`` and ``mesh=`` need the interpreter on pairs."""
    if gating not in GATINGS:
        raise InputValueError(f"unknown gating {gating!r}; choose one of {', '.join(GATINGS)}")
    if max_mode not in MAX_MODES:
        raise InputValueError(f"unknown max_mode {max_mode!r}; choose one of {', '.join(MAX_MODES)}")
    deeplift = method.scope == "interpreter"
    if not deeplift and gating != "shapley":
        raise InputValueError(f"gating= chooses a DeepLIFT rule; mode {method.name!r} has no gating "
                              "rule")
    if not deeplift and max_mode != "preserving":
        raise InputValueError(f"max_mode= chooses a DeepLIFT rule for max-pooling; mode "
                              f"{method.name!r} has none (guided backprop and ε-LRP already route "
                              "max-pooling to the argmax)")
    if layer_name is not None and not deeplift:
        raise InputValueError(f"layer= is supported by the DeepLIFT modes only, not mode "
                              f"{method.name!r}")
    if mesh is not None and not deeplift:
        raise InputValueError(f"mesh= shards the DeepLIFT modes; mode {method.name!r} runs on one "
                              "device")


def check_layer_bypass(layer_bypass, layer_name) -> None:
    if layer_bypass not in ("refuse", "credit"):
        raise InputValueError(f"layer_bypass must be 'refuse' or 'credit', got {layer_bypass!r}")
    if layer_bypass == "credit" and layer_name is None:
        raise InputValueError("layer_bypass='credit' credits the inputs with what reaches the "
                              "target around a marked layer: it needs layer=")


PRECISIONS = ("default", "highest")


def check_precision(precision) -> None:
    if not (isinstance(precision, str) and precision in PRECISIONS):
        raise InputValueError(f"unknown precision {precision!r}; choose \"default\" (JAX's default "
                              "matmul precision: fast, TF32 float32 convolutions and dots on recent "
                              "NVIDIA GPUs) or \"highest\" (exact float32)")


def precision_context(precision: str):
    """The context a program is traced and run under: nothing for ``"default"`` (JAX's setting,
    the user's own ``jax.default_matmul_precision`` included), ``jax.default_matmul_precision(
    "highest")`` for ``"highest"`` (every dot and convolution at full float32)."""
    if precision == "highest":
        return jax.default_matmul_precision("highest")
    return contextlib.nullcontext()


def check_batch_size(batch_size) -> None:
    ok = batch_size is None or isinstance(batch_size, str) and batch_size == "auto" or (
        isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool)
        and batch_size >= 1)
    if not ok:
        raise InputValueError(f"batch_size must be a positive number of pairs, \"auto\" or None; "
                              f"got {batch_size!r}")



# ---------------------------------------------------------------------------------------------
# Inputs

def validate_pairs(x, refs) -> tuple[int, int, bool]:
    """Check shapes and dtypes; return ``(N, K, per_input_refs)``."""
    x_leaves, x_tree = jax.tree_util.tree_flatten(x)
    r_leaves, r_tree = jax.tree_util.tree_flatten(refs)
    if not x_leaves:
        raise InputValueError("x is empty: pass a batch of inputs (leading axis N)")
    if x_tree != r_tree:
        raise InputValueError(f"refs must have the same pytree structure as x; got {r_tree} for x "
                              f"structured as {x_tree}")
    ns = {jnp.shape(l)[0] if jnp.ndim(l) else None for l in x_leaves}
    if None in ns:
        raise InputValueError("every leaf of x needs a leading batch axis (N, ...); got a scalar")
    if len(ns) != 1:
        raise InputValueError(f"the leaves of x disagree on the batch size N: {sorted(ns)}")
    (n,) = ns
    if n == 0:
        raise InputValueError("x is an empty batch (N = 0); pass at least one input")
    layouts, ks = set(), set()
    for xl, rl in zip(x_leaves, r_leaves):
        xs, rs = jnp.shape(xl), jnp.shape(rl)
        if len(rs) == len(xs) and rs[1:] == xs[1:]:
            layouts.add(False)
            ks.add(rs[0])
        elif len(rs) == len(xs) + 1 and rs[0] == n and rs[2:] == xs[1:]:
            layouts.add(True)
            ks.add(rs[1])
        elif len(rs) == len(xs) + 1 and rs[1:] == xs:  # the references are examples like x
            raise InputValueError(
                f"x of shape {xs} looks like one example without its batch axis (the "
                f"references, {rs}, are a batch of examples of that shape): pass x[None]")
        elif len(rs) == len(xs) + 1 and rs[1:] == xs[1:] + (1,):
            raise InputValueError(
                f"x of shape {xs} has no trailing axis of size 1 but the references, {rs}, "
                "have one: if fn takes (…, 1) examples (a channel axis), pass x[..., None]; "
                "otherwise drop it from the references (refs[..., 0])")
        else:
            raise InputValueError(
                f"refs of shape {rs} do not fit x of shape {xs}: expected (K, {', '.join(map(str, xs[1:]))}) "
                f"references shared by all inputs or ({n}, K, {', '.join(map(str, xs[1:]))}) "
                "references per input")
        if xl.dtype != rl.dtype:  # both arrays (chunking.host_arrays), canonical dtypes
            raise InputValueError(f"refs dtype {rl.dtype} differs from x dtype {xl.dtype}; cast "
                                  "them, e.g. refs.astype(x.dtype)")
    if len(layouts) != 1 or len(ks) != 1:
        raise InputValueError("all leaves of refs must use the same layout and number of references K")
    (k,) = ks
    if k == 0:
        raise InputValueError("refs is an empty batch (K = 0); pass at least one reference")
    return n, k, layouts.pop()


FINITE_ARRAYS: dict = {}  # id → weakref of a jax array seen free of NaN/Inf (arrays are immutable)
tree_finite_program = jax.jit(tree_finite)


def seen_finite(leaf) -> bool:
    ref = FINITE_ARRAYS.get(id(leaf))
    return ref is not None and ref() is leaf


def remember_finite(leaf) -> None:
    """Record the jax array ``leaf`` as finite for as long as it lives (NumPy arrays can change
    in place and are checked on every call)."""
    if not isinstance(leaf, jax.Array) or isinstance(leaf, jax.core.Tracer):
        return
    key = id(leaf)

    def forget(ref, key=key):
        if FINITE_ARRAYS.get(key) is ref:
            del FINITE_ARRAYS[key]
    FINITE_ARRAYS[key] = weakref.ref(leaf, forget)


def params_finite_check(params):
    """The NaN/Inf check of the parameters, dispatched and not read: ``None`` when every leaf is
    a jax array already seen finite (a model's weights, call after call), else ``(leaves,
    flag)`` for the other leaves. :func:`params_check_passed` reads it after the result. Leaves
    in host memory (NumPy arrays, jax arrays on the CPU) are checked by NumPy at once: a first
    call compiles nothing for it."""
    fresh = [l for l in jax.tree_util.tree_leaves(params) if not seen_finite(l)]
    if not fresh:
        return None
    if all(in_host_memory(l) for l in fresh):
        return fresh, all(leaf_finite_on_host(l) for l in fresh)
    return fresh, tree_finite_program(fresh)


def leaf_finite_on_host(leaf) -> bool:
    dtype = jnp.result_type(leaf) if not hasattr(leaf, "dtype") else leaf.dtype
    if not (jnp.issubdtype(dtype, jnp.floating) or jnp.issubdtype(dtype, jnp.complexfloating)):
        return True  # integers, flags, PRNG keys
    return bool(np.isfinite(np.asarray(leaf)).all())


def params_check_passed(check) -> bool:
    """Whether the parameters of :func:`params_finite_check` are finite (remembering those that
    are jax arrays)."""
    if check is None:
        return True
    fresh, flag = check
    if not np.asarray(flag):
        return False
    for leaf in fresh:
        remember_finite(leaf)
    return True


def is_concrete(tree) -> bool:
    return not any(isinstance(l, jax.core.Tracer) for l in jax.tree_util.tree_leaves(tree))


def refuse_non_finite_input(name: str, tree) -> None:
    """Refuse NaN/Inf in the float leaves of ``tree`` (other leaves — integers, PRNG keys,
    flags in a model's state — are not checked)."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and not (jnp.issubdtype(dtype, jnp.floating)
                                      or jnp.issubdtype(dtype, jnp.complexfloating)):
            continue
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            where = jax.tree_util.keystr(path) or ""
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise InputValueError(f"{name}{where} contains {bad} NaN or Inf value(s); jaxlift needs "
                                  "finite inputs, references and parameters")


def check_inputs_finite(x, refs, params) -> None:
    """Raise the ``ValueError`` naming the first of x, refs, params with a NaN or Inf."""
    refuse_non_finite_input("x", x)
    refuse_non_finite_input("refs", refs)
    refuse_non_finite_input("params", params)



# ---------------------------------------------------------------------------------------------
# What fn does with a batch

def check_outputs(out, batch: int, what: str) -> None:
    for leaf in jax.tree_util.tree_leaves(out):
        shape = jnp.shape(leaf)
        if not shape or shape[0] != batch:
            raise InputValueError(
                f"fn must return one output per example (a leading axis of size {batch} for "
                f"{what}); it returned shape {shape}. Return the per-example outputs, not "
                "their sum or mean over the batch")
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise InputValueError(
                f"fn returns {dtype} outputs; jaxlift explains floating-point outputs (logits "
                "or scores), not labels or indices: return the values argmax would pick from")


def _shape_of(tree) -> str:
    shapes = [tuple(jnp.shape(l)) for l in jax.tree_util.tree_leaves(tree)]
    return str(shapes[0]) if len(shapes) == 1 else str(shapes)

def explain_trace_failure(fn: Callable, params, x, exc: Exception) -> ValueError | None:
    """The error to raise when tracing ``fn`` on a batch of one example of ``x`` failed with
    ``exc``: ``x`` that looks like one example without its batch axis, or like examples without
    the channel axis ``fn`` wants, or ``fn`` failing on a batch at all. ``None`` when ``fn``
    traces (``exc`` came from elsewhere: let it through)."""
    xb = jax.tree_util.tree_map(lambda l: jax.ShapeDtypeStruct((1,) + tuple(jnp.shape(l)[1:]),
                                                               jnp.result_type(l)), x)
    if _traces(fn, params, xb):
        if type(exc).__module__.startswith("flax") and "trace" in type(exc).__name__.lower():
            return InputValueError(
                f"fn updates the model's state while it runs ({type(exc).__name__}: a BatchNorm "
                "in training mode, whose batch statistics also mix the examples of a batch): "
                "jaxlift traces fn at one example inside its own transformations. Use the model "
                "in inference mode (from_nnx(model) with eval_mode=True, model.eval(), "
                "use_running_average=True)")
        return None
    what = "a batch of one example (x[:1])"
    if _looks_like_one_example(fn, params, x):
        return InputValueError(
            f"fn failed on {what}, but accepts x itself as a batch of one: x of shape "
            f"{_shape_of(x)} looks like a single example without its batch axis. Pass "
            "x[None] (and references with a leading axis too)")
    added = _missing_axis(fn, params, xb)
    if added is not None:
        where, fix = added
        return InputValueError(
            f"fn failed on {what} (xb of shape {_shape_of(xb)}), but runs when each example "
            f"gets {where} axis of size 1: x of shape {_shape_of(x)} looks like it lacks "
            f"its channel axis. Pass {fix} (and references of that shape too)")
    return InputValueError(f"fn(params, xb) raised {type(exc).__name__}: {exc} — on {what} "
                           f"(xb of shape {_shape_of(xb)}), as jaxlift calls it: fn must take a "
                           "batch with a leading axis; where it does, the error is fn's own "
                           "(a parameter's name, a shape inside fn: its traceback is chained "
                           "below)")


_NEW_AXES = (("a trailing", "x[..., None]", lambda l: jnp.asarray(l)[..., None]),
             ("a leading (channels-first)", "x[:, None]", lambda l: jnp.asarray(l)[:, None]))


def _missing_axis(fn: Callable, params, xb) -> tuple[str, str] | None:
    """``(where, fix)`` when ``fn`` traces on the batch ``xb`` with a size-1 axis added to every
    example (a channel axis a (…, H, W, 1) or (…, 1, H, W) model wants), else ``None``."""
    for where, fix, add in _NEW_AXES:
        grown = jax.tree_util.tree_map(
            lambda s, add=add: jax.ShapeDtypeStruct(tuple(jnp.shape(add(jnp.zeros(s.shape, s.dtype)))),
                                                    s.dtype), xb)
        if _traces(fn, params, grown):
            return where, fix
    return None


def _traces(fn: Callable, params, xb) -> bool:
    try:
        jax.eval_shape(fn, params, xb)
        return True
    except Exception:
        return False


def _looks_like_one_example(fn: Callable, params, x) -> bool:
    return _traces(fn, params, jax.tree_util.tree_map(
        lambda l: jax.ShapeDtypeStruct((1,) + tuple(jnp.shape(l)), jnp.result_type(l)), x))


MIXING = ("fn must not mix examples of a batch: fn on a batch of two examples differs from fn "
          "on each example alone (a BatchNorm in training mode, a mean over the batch axis …). "
          "jaxlift traces fn at one example, so its scores would be wrong; use the model in "
          "inference mode")


@functools.lru_cache(maxsize=256)
def _verdict(fn, key) -> list:
    """A cell per (fn, shapes) that remembers that the check has passed."""
    return []


def independence_settled(fn, shapes_key: tuple) -> bool:
    """Whether ``fn``'s batch independence has been confirmed at these shapes (a call whose
    inputs and references are all one example compares nothing and settles nothing)."""
    try:
        return bool(memoized(_verdict, fn, shapes_key))
    except TypeError:  # unhashable fn: never cached
        return False


def settle_independence(fn, shapes_key: tuple, compared: bool, batched, alone,
                        eps: float = 0.0, proven: bool = False) -> None:
    """Read the families' in-program comparison (``batched``: the targets of ``fn`` on a batch
    of two examples; ``alone``: the same on each example by itself, as jaxlift evaluates it;
    ``compared``: the two examples differ; ``eps``: of ``fn``'s own output dtype): raise if
    ``fn`` mixes them, else remember it for these shapes. ``proven``: ``fn``'s jaxpr showed
    that it keeps the examples apart (:mod:`jaxlift.independence`): remembered as settled."""
    if not compared and not proven:
        return
    if not proven and not close(batched, alone, eps):
        raise InputValueError(MIXING)
    try:
        memoized(_verdict, fn, shapes_key).append(True)
    except TypeError:
        pass


def close(a, b, eps: float = 0.0) -> bool:
    """Equal up to what a different batch size can change: ``1e-3`` (or 8 ulps of a half
    precision dtype: ``a``'s, or ``eps``) of the larger output."""
    rtol = max(1e-3, 8 * float(jnp.finfo(jnp.result_type(a)).eps), 8 * float(eps))
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    # NaN/Inf where the other side has the same (a NaN input gives NaN outputs whether or not
    # fn mixes examples: the finite checks, not this one, report it); scale from finite values
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    finite = np.isfinite(a) & np.isfinite(b)
    scale = max(float(np.max(np.abs(np.where(finite, a, 0.0)), initial=0.0)),
                float(np.max(np.abs(np.where(finite, b, 0.0)), initial=0.0)))
    with np.errstate(invalid="ignore"):
        return bool(np.all(same | (finite & (np.abs(a - b) <= rtol * scale + 1e-30))))


