"""What the perturbation methods (Shapley sampling, LIME, KernelSHAP, occlusion) share: feature
groups, spreading group values back onto features, and batched forward passes.

Defaults that fit the input (the same in the API and the ``jaxlift`` command): occlusion's
window and the feature groups of Shapley sampling, LIME and KernelSHAP come from
:func:`default_window`. For an image-like example ``(H, W, C)`` that is a patch of
``⌈H/8⌉ × ⌈W/8⌉`` pixels across all channels (about 64 groups, not one per pixel: a
perturbation method's cost grows with the number of groups); for ``(T, F)`` one position across
the last axis (a token, a base of a one-hot sequence); for a vector ``(F,)`` one feature.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift.errors import InputTypeError, InputValueError
from jaxlift.methods.base import Option, optional_positive_int

AUTO = "auto"
"""The default ``feature_mask`` (and occlusion ``window``/``stride``): chosen from the
example's shape by :func:`default_window`."""


def default_window(shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(window, stride)`` for an example of ``shape``: for an image ``(H, W, C)``,
    ``⌈H/8⌉ × ⌈W/8⌉`` pixels across all channels, moved by half a window (rounded up); for
    ``(T, F)`` or more axes one position of the leading axes across the last axis; for a
    vector ``(F,)`` one feature (stride 1 in both)."""
    if len(shape) <= 1:
        return (1,) * len(shape), (1,) * len(shape)
    lead = shape[:-1]
    w = tuple(max(1, math.ceil(d / 8)) for d in lead) if len(shape) == 3 else (1,) * len(lead)
    stride = tuple(max(1, math.ceil(v / 2)) for v in w)
    return w + (shape[-1],), stride + (shape[-1],)


def patch_mask(shape: tuple[int, ...], window: tuple[int, ...]) -> np.ndarray:
    """Integer labels (int32, ``shape``) of the non-overlapping ``window``-sized blocks of an
    array of ``shape``, numbered in row-major order of the blocks (the last ones clipped at
    the edges)."""
    counts = [math.ceil(d / w) for d, w in zip(shape, window)]
    index = np.meshgrid(*[np.arange(d) // w for d, w in zip(shape, window)], indexing="ij")
    return np.ravel_multi_index(index, counts).astype(np.int32)


def default_mask(shape: tuple[int, ...]) -> np.ndarray:
    """The ``feature_mask="auto"`` groups of an example of ``shape``: the non-overlapping
    :func:`default_window` patches (:func:`patch_mask`)."""
    return patch_mask(tuple(shape), default_window(tuple(shape))[0])


def feature_mask_option(method: str) -> Option:
    """The ``feature_mask`` option of the methods on feature groups: ``"auto"`` (the default,
    :func:`default_mask`: patches of an image), ``None`` (every feature alone, as Captum's
    default) or an integer array of the example's shape (one value per group; e.g.
    :func:`jaxlift.methods.lime.superpixels`)."""
    def check(v):
        if v is None or isinstance(v, str) and v == AUTO:
            return v
        if isinstance(v, (str, bytes, bool, int, float)):
            raise InputTypeError(f"{method} feature_mask must be None or an integer array with the "
                                 f"example's shape, or 'auto' (the default: patches of an image), "
                                 f"got {v!r}")
        return v
    return Option("feature_mask", AUTO,
                  "integer array of the example's shape, one value per group of features; "
                  "'auto': patches of ⌈H/8⌉×⌈W/8⌉ pixels for an image (H, W, C), one position "
                  "for (T, F), every feature for (F,); None: every feature alone",
                  check, static=False)


def feature_groups(shape: tuple[int, ...], feature_mask) -> tuple[np.ndarray, int]:
    """``(labels, G)``: each feature's group index in ``0..G−1`` (int32, ``shape``; every
    feature its own group when ``feature_mask`` is None; :func:`default_mask` for ``"auto"``;
    otherwise the mask's distinct values, in increasing order, as Captum's ``feature_mask``).
    ``feature_mask`` is ``None``, ``"auto"`` or a concrete integer array of the example's
    ``shape``."""
    size = int(np.prod(shape, dtype=np.int64))
    if isinstance(feature_mask, str) and feature_mask == AUTO:
        feature_mask = default_mask(tuple(shape))
    if feature_mask is None:
        return np.arange(size, dtype=np.int32).reshape(shape), size
    try:
        mask = np.asarray(feature_mask)
    except Exception:  # a tracer
        raise InputTypeError("feature_mask must be a concrete integer array") from None
    if mask.shape != shape:
        raise InputValueError(f"feature_mask of shape {mask.shape} must have the example's shape "
                              f"{shape}")
    if mask.dtype.kind not in "iub":
        raise InputTypeError(f"feature_mask must hold integers, got dtype {mask.dtype}")
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
