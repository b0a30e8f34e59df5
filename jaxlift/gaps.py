"""Completeness gaps: how far a method's scores are from summing to ``Δt = t(x) − t(r)``.

Use with the scores and ``Δt`` of ``jaxlift.attribute(..., return_delta=True)``
(``average_refs=False`` for one gap per pair).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift.errors import InputValueError


def completeness_gap(attributions, delta, n_target_axes: int = 0):
    """``Σ_i attr_i − Δt`` per (input[, reference][, target]): summed over the example axes of
    every leaf. ``delta`` is what ``return_delta=True`` returns; its rank says how many leading
    axes to keep."""
    delta = jnp.asarray(delta)
    keep = delta.ndim
    total = sum(jnp.sum(a, axis=tuple(range(keep, a.ndim)))
                for a in jax.tree_util.tree_leaves(attributions))
    return total - delta


def flag_gaps(attributions, delta, threshold: float = 1e-3):
    """The relative completeness gap of each pair, and the pairs over ``threshold``.

    ``gap = |Σ_i C_i − Δt| / max(Σ_i |C_i|, |Δt|)`` per (input[, reference][, target]), from
    the scores and ``Δt`` of ``attribute(..., return_delta=True)`` (``average_refs=False`` for
    one gap per pair); ``0`` where every score and ``Δt`` vanish. In the DeepLIFT modes a gap
    above ``1e-2`` is a bug; ``1e-5``–``1e-3`` is float rounding (float32 convolutions in TF32
    on a GPU at ``precision="default"``: ~3e-5 on an H200), ~1e-7 at exact float32.

    Returns ``(gap, flagged)``: float arrays shaped like ``delta`` and a boolean mask
    ``gap > threshold``. Computed in at least float32 (float64 under ``jax_enable_x64``).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
            or not threshold >= 0:
        raise InputValueError(f"threshold must be a non-negative number, got {threshold!r}")
    delta = jnp.asarray(delta)
    dtype = jnp.promote_types(delta.dtype, jnp.float32)
    delta = delta.astype(dtype)
    keep = delta.ndim
    leaves = jax.tree_util.tree_leaves(attributions)
    if not leaves:
        raise InputValueError("attributions is empty: pass the scores returned by attribute")
    total = jnp.zeros(delta.shape, dtype)
    size = jnp.zeros(delta.shape, dtype)
    for a in leaves:
        a = jnp.asarray(a)
        if a.shape[:keep] != delta.shape:
            raise InputValueError(
                f"scores of shape {a.shape} do not start with delta's shape {delta.shape}: pass "
                "the scores and delta of the same attribute(..., return_delta=True) call")
        axes = tuple(range(keep, a.ndim))
        a = a.astype(jnp.promote_types(a.dtype, dtype))
        total = total + jnp.sum(a, axis=axes)
        size = size + jnp.sum(jnp.abs(a), axis=axes)
    scale = jnp.maximum(size, jnp.abs(delta))
    gap = jnp.where(scale > 0, jnp.abs(total - delta) / jnp.where(scale > 0, scale, 1), 0)
    return gap, gap > threshold
