"""Checks of a call before anything is traced: the target, and what ``fn`` does with a batch.

jaxlift traces ``fn`` at one example, so three things about ``fn`` must hold for its scores to
mean anything, and each is checked here once per (fn, shapes) with a clear message instead of
an error from deep inside JAX or a silent wrong number (docs/design.md §17):

* ``fn(params, xb)`` takes a batch (a leading axis) and returns a batch of outputs, as a model
  does for prediction;
* its outputs are floating point (logits, not labels);
* it does not mix the examples of a batch (a BatchNorm in training mode, ``xb - xb.mean(0)``):
  row i of ``fn`` on a batch equals ``fn`` on example i alone.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift._memo import memoized


def check_target(target) -> None:
    """Refuse target types that no rule can read, before anything is cached under them
    (``1.0 == 1 == True`` as cache keys)."""
    if target is None or callable(target):
        return
    if isinstance(target, str):
        if target != "all":
            raise ValueError(f"unknown target {target!r}; use an index, a tuple, a callable "
                             "or 'all'")
        return
    if isinstance(target, (bool, np.bool_)):
        raise TypeError(f"target must be an int index, not a bool ({target!r})")
    if isinstance(target, (int, np.integer)):
        return
    if isinstance(target, tuple) and all(
            isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_))
            for i in target):
        return
    raise TypeError(f"target must be None, an int, a tuple of ints, a callable or 'all', got "
                    f"{type(target).__name__} {target!r}")


def _rows(tree, index) -> Any:
    """Rows of every leaf, without converting a whole NumPy input to a device array."""
    return jax.tree_util.tree_map(
        lambda leaf: jnp.asarray((leaf if hasattr(leaf, "shape") else np.asarray(leaf))[index]),
        tree)


def _differs(a, b) -> bool:
    return any(not np.array_equal(np.asarray(u), np.asarray(v))
               for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def _second_example(x, refs, n: int, per_input_refs: bool):
    """An example other than ``x[0]``: another input or a reference (``None`` if all equal)."""
    first = _rows(x, 0)
    candidates = []
    if n > 1:
        candidates.append(_rows(x, 1))
    if refs is not None:
        candidates.append(_rows(refs, (0, 0) if per_input_refs else 0))
    for c in candidates:
        if _differs(first, c):
            return c
    return None


def _stack(a, b):
    return jax.tree_util.tree_map(lambda u, v: jnp.stack([u, v]), a, b)


def _shape_of(tree) -> str:
    shapes = [tuple(jnp.shape(l)) for l in jax.tree_util.tree_leaves(tree)]
    return str(shapes[0]) if len(shapes) == 1 else str(shapes)


def _call(fn: Callable, params, xb, x, what: str):
    try:
        return fn(params, xb)
    except Exception as exc:  # a user's function failing: say how jaxlift called it
        fails = not _traces(fn, params, xb)
        if fails and _looks_like_one_example(fn, params, x):
            raise ValueError(
                f"fn failed on {what}, but accepts x itself as a batch of one: x of shape "
                f"{_shape_of(x)} looks like a single example without its batch axis. Pass "
                "x[None] (and references with a leading axis too)") from exc
        added = _missing_axis(fn, params, xb) if fails else None
        if added is not None:
            where, fix = added
            raise ValueError(
                f"fn failed on {what} (xb of shape {_shape_of(xb)}), but runs when each example "
                f"gets {where} axis of size 1: x of shape {_shape_of(x)} looks like it lacks "
                f"its channel axis. Pass {fix} (and references of that shape too)") from exc
        raise ValueError(f"fn(params, xb) failed on {what} (xb of shape {_shape_of(xb)}); "
                         f"fn must take a batch with a leading axis: {exc}") from exc


_NEW_AXES = (("a trailing", "x[..., None]", lambda l: jnp.asarray(l)[..., None]),
             ("a leading (channels-first)", "x[:, None]", lambda l: jnp.asarray(l)[:, None]))


def _missing_axis(fn: Callable, params, xb) -> tuple[str, str] | None:
    """``(where, fix)`` when ``fn`` traces on the batch ``xb`` with a size-1 axis added to every
    example (a channel axis a (…, H, W, 1) or (…, 1, H, W) model wants), else ``None``."""
    for where, fix, add in _NEW_AXES:
        if _traces(fn, params, jax.tree_util.tree_map(add, xb)):
            return where, fix
    return None


def _traces(fn: Callable, params, xb) -> bool:
    try:
        jax.eval_shape(fn, params, xb)
        return True
    except Exception:
        return False


def _looks_like_one_example(fn: Callable, params, x) -> bool:
    return _traces(fn, params, jax.tree_util.tree_map(lambda l: jnp.asarray(l)[None], x))


def _check_outputs(out, batch: int, what: str) -> None:
    for leaf in jax.tree_util.tree_leaves(out):
        shape = jnp.shape(leaf)
        if not shape or shape[0] != batch:
            raise ValueError(
                f"fn must return one output per example (a leading axis of size {batch} for "
                f"{what}); it returned shape {shape}. Return the per-example outputs, not "
                "their sum or mean over the batch")
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise ValueError(
                f"fn returns {dtype} outputs; jaxlift explains floating-point outputs (logits "
                "or scores), not labels or indices: return the values argmax would pick from")


def _close(a, b) -> bool:
    """Equal up to what a different batch size can change: ``1e-3`` (or 8 ulps of a half
    precision dtype) of the larger output."""
    rtol = max(1e-3, 8 * float(jnp.finfo(jnp.result_type(a)).eps))
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


@functools.lru_cache(maxsize=256)
def _verdict(fn, key) -> list:
    """A cell per (fn, shapes) that remembers that the check has passed."""
    return []


def signature(tree, drop_leading: bool = False) -> tuple:
    """A cheap hashable key of ``tree``'s structure and leaves' shapes and dtypes (without their
    leading batch axis for ``drop_leading``): ``(treedef, ((shape, dtype), ...))``, the layout
    :func:`jaxlift.pipeline.structs_of` rebuilds. Reads ``.shape``/``.dtype`` directly (arrays,
    tracers); other leaves (Python numbers) go through ``jnp.result_type``."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    sig = []
    for l in leaves:
        if isinstance(l, (jax.Array, jax.core.Tracer)):  # shape a tuple, dtype canonical
            shape, dtype = l.shape, l.dtype
        elif isinstance(l, np.ndarray):
            shape, dtype = l.shape, jax.dtypes.canonicalize_dtype(l.dtype)
        else:
            shape, dtype = np.shape(l), jnp.result_type(l)
        sig.append((shape[1:] if drop_leading else shape, dtype))
    return treedef, tuple(sig)


def independence_settled(fn, shapes_key: tuple) -> bool:
    """Whether :func:`check_examples_independent` has passed for ``fn`` at these shapes (a call
    whose inputs and references are all one example compares nothing and settles nothing)."""
    try:
        return bool(_verdict(fn, shapes_key))
    except TypeError:  # unhashable fn: never cached
        return False


def _shapes_key(params, x) -> tuple:
    return signature(params), signature(x, drop_leading=True)


def check_examples_independent(fn: Callable, params, x, refs, *, n: int,
                               per_input_refs: bool, shapes_key: tuple | None = None) -> None:
    """Once per (fn, shapes): ``fn`` takes a batch, returns a float batch, and treats each
    example on its own (``fn`` on ``[a, b]`` equals ``fn`` on ``[a]`` and on ``[b]`` to 1e-3 of
    the outputs' size). ``refs`` may be ``None``. Raises ``ValueError`` naming what is wrong.
    ``shapes_key`` (``_shapes_key(params, x)``, if the caller has it) saves flattening the trees
    again: a cache hit is one dictionary look-up."""
    key = _shapes_key(params, x) if shapes_key is None else shapes_key
    cell = memoized(_verdict, fn, key)
    if cell:
        return
    a = _rows(x, slice(0, 1))
    out_a = _call(fn, params, a, x, "a batch of one example (x[:1])")
    _check_outputs(out_a, 1, "a batch of one example")
    b = _second_example(x, refs, n, per_input_refs)
    if b is None:  # every input and reference is the same example: nothing to compare
        return
    pair = _stack(_rows(x, 0), b)
    out_pair = _call(fn, params, pair, x, "a batch of two examples")
    _check_outputs(out_pair, 2, "a batch of two examples")
    out_b = fn(params, _rows(pair, slice(1, 2)))
    for whole, first, second in zip(jax.tree_util.tree_leaves(out_pair),
                                    jax.tree_util.tree_leaves(out_a),
                                    jax.tree_util.tree_leaves(out_b)):
        if not (_close(whole[0], first[0]) and _close(whole[1], second[0])):
            raise ValueError(
                "fn must not mix examples of a batch: fn on a batch of two examples differs "
                "from fn on each example alone (a BatchNorm in training mode, a mean over the "
                "batch axis …). jaxlift traces fn at one example, so its scores would be wrong; "
                "use the model in inference mode")
    cell.append(True)
