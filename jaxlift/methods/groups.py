"""Feature groups for the perturbation methods (Shapley sampling, LIME, KernelSHAP)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def feature_groups(shape: tuple[int, ...], feature_mask) -> tuple[jax.Array, int]:
    """``(labels, G)``: each feature's group index in ``0..G−1`` (every feature its own group
    when ``feature_mask`` is None; otherwise the mask's distinct values, in increasing order).
    ``feature_mask`` is a concrete integer array of the example's ``shape``."""
    size = int(np.prod(shape, dtype=np.int64))
    if feature_mask is None:
        return jnp.arange(size, dtype=jnp.int32).reshape(shape), size
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
    return jnp.asarray(labels.reshape(shape), jnp.int32), int(values.size)


def map_batched(fun, xs, batch_size):
    """``vmap`` of ``fun`` over the leading axis, or ``lax.map`` in batches of ``batch_size``
    (a method's ``perturbations_per_eval``: bounded memory for many perturbed inputs)."""
    if batch_size is None:
        return jax.vmap(fun)(xs)
    return jax.lax.map(fun, xs, batch_size=int(batch_size))
