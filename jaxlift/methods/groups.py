"""What the perturbation methods (Shapley sampling, LIME, KernelSHAP, occlusion) share: feature
groups, spreading group values back onto features, and batched forward passes."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift.methods.base import Option, optional_positive_int


def feature_groups(shape: tuple[int, ...], feature_mask) -> tuple[np.ndarray, int]:
    """``(labels, G)``: each feature's group index in ``0..G−1`` (int32, ``shape``; every
    feature its own group when ``feature_mask`` is None; otherwise the mask's distinct values,
    in increasing order, as Captum's ``feature_mask``). ``feature_mask`` is a concrete integer
    array of the example's ``shape``."""
    size = int(np.prod(shape, dtype=np.int64))
    if feature_mask is None:
        return np.arange(size, dtype=np.int32).reshape(shape), size
    try:
        mask = np.asarray(feature_mask)
    except Exception:  # a tracer
        raise TypeError("feature_mask must be a concrete integer array") from None
    if mask.shape != shape:
        raise ValueError(f"feature_mask of shape {mask.shape} must have the example's shape "
                         f"{shape}")
    if mask.dtype.kind not in "iub":
        raise TypeError(f"feature_mask must hold integers, got dtype {mask.dtype}")
    values, labels = np.unique(mask, return_inverse=True)
    return labels.reshape(shape).astype(np.int32), int(values.size)


def spread(phi: jax.Array, labels: jax.Array) -> jax.Array:
    """Group values ``(G, [T])`` → per-feature scores ``([T,] *S)`` (each feature its group's)."""
    vals = phi[labels]
    if vals.ndim > labels.ndim:
        vals = jnp.moveaxis(vals, -1, 0)
    return vals


def map_batched(fun, xs, batch_size):
    """``vmap`` of ``fun`` over the leading axis, or ``lax.map`` in batches of ``batch_size``
    (a method's ``perturbations_per_eval``: bounded memory for many perturbed inputs)."""
    if batch_size is None:
        return jax.vmap(fun)(xs)
    return jax.lax.map(fun, xs, batch_size=int(batch_size))


def perturbations_option(method: str, what: str = "perturbed inputs") -> Option:
    """The ``perturbations_per_eval`` option: how many ``what`` one ``lax.map`` step
    evaluates (None: all at once, vmapped) — memory against speed."""
    return Option("perturbations_per_eval", None, f"{what} per batch (None: all at once)",
                  optional_positive_int(method, "perturbations_per_eval"))
