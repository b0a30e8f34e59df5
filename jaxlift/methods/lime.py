"""``lime``: a weighted linear surrogate on switched-off groups of features (Ribeiro et al.,
"Why should I trust you?", KDD 2016).

For each (input, reference) pair: ``S`` coalitions ``z ∈ {0,1}^G`` of the ``G`` feature groups
(drawn once per call, shared by every pair), the perturbed inputs ``x_z = where(z[labels], x, r)``
(group on: the input's values; off: the reference's), their targets ``t(x_z)``, and a weighted
ridge regression ``min_{b,φ} Σ_s π(z_s)(t(x_z_s) − b − z_s·φ)² + α‖φ‖²`` (intercept not
penalized). Each feature's score is its group's slope ``φ_g`` (as Captum). No completeness.

Choices (and how they compare):

* **Coalitions**: each group on with probability ½, independently (Captum's default
  ``perturb_func``); when ``n_samples ≥ 2^G`` all ``2^G`` coalitions are enumerated instead (the
  fit is then deterministic). ``coalitions=`` takes your own ``(S, G)`` 0/1 array.
* **Proximity** ``π(z) = exp(−d(z, 1)²/w²)`` (the paper's kernel), ``d`` the cosine distance
  between ``z`` and the all-ones coalition (the unperturbed example) in the *interpretable*
  space, ``d = 1 − √(|z|/G)`` (``d = 1`` for ``z = 0``), as the ``lime`` package does for images
  and text. The weights do not depend on the pair's values, so every pair shares one fit.
  Default width ``w = 0.25``, the ``lime`` package's image width (it takes a square root of the
  kernel, so its weights are ours with ``w = 0.25·√2``). Captum's default differs: cosine
  distance between the flattened input and perturbed input, ``exp(−d²/(2·1²))``.
* **Surrogate**: ridge with ``alpha = 1`` (the ``lime`` package's ``Ridge(alpha=1)``; Captum's
  default is a Lasso with ``alpha = 0.01``). ``alpha = 0`` is least squares (minimum-norm when
  the coalitions do not determine the fit).
* **Groups**: ``feature_mask`` (integers with the example's shape, one value per group); by
  default (``"auto"``, :func:`jaxlift.methods.groups.default_mask`) patches of
  ``⌈H/8⌉ × ⌈W/8⌉`` pixels for an image ``(H, W, C)``, one position for ``(T, F)``, every
  feature for ``(F,)``; ``None``: every feature alone. For images :func:`superpixels` builds
  a mask from one image (scikit-image's SLIC or quickshift). The mask is shared by every input of a call (the
  coalitions are over its groups); to explain each image with its own superpixels, call
  ``attribute`` once per image with that image's mask.

Options: ``n_samples`` (1000, ``lime_image``'s default), ``feature_mask``, ``kernel_width``,
``alpha``, ``coalitions``, ``perturbations_per_eval`` (forwards per ``lax.map`` step; None:
all at once).
"""
from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlift.errors import InputValueError
from jaxlift.methods import base, groups
from jaxlift.methods import linear_surrogate as ls

NAME = "lime"


def _positive_float(name: str):
    inner = base.non_negative_float(NAME, name)

    def check(v):
        f = inner(v)
        if f == 0:
            raise InputValueError(f"{NAME} {name} must be a positive number, got {v!r}")
        return f
    return check


def cosine_kernel(z: np.ndarray, width: float) -> np.ndarray:
    """``π(z) = exp(−d²/w²)`` with ``d = 1 − cos(z, 1) = 1 − √(|z|/G)`` (``d = 1`` at
    ``z = 0``); ``z`` is ``(S, G)``, the result ``(S,)``."""
    g = z.shape[1]
    d = 1.0 - np.sqrt(z.sum(axis=1) / g)
    return np.exp(-(d ** 2) / width ** 2)


def _prepare(opts: dict, example_shape: tuple[int, ...], key) -> dict:
    labels, g = groups.feature_groups(tuple(example_shape), opts["feature_mask"])
    if opts["coalitions"] is not None:
        z = ls.check_coalitions(opts["coalitions"], g, NAME)
    elif g <= 16 and 2 ** g <= min(opts["n_samples"], ls.MAX_ENUMERATED):
        z = ls.all_coalitions(g)
    else:
        z = (ls.host_rng(key).random((opts["n_samples"], g)) < 0.5).astype(np.float64)
    w = cosine_kernel(z, opts["kernel_width"])
    return {"labels": jnp.asarray(labels), "z": jnp.asarray(z, jnp.float32),
            "proj": ls.ridge_projection(z, w, opts["alpha"])}


def _kernel(f, params, x, r, *, opts, arrays, key):
    """One pair: ``φ = P t(x_z)`` with the shared projection ``P`` (:func:`_prepare`)."""
    del key
    ys = ls.coalition_targets(f, params, x, r, arrays["labels"], arrays["z"],
                              opts["perturbations_per_eval"])
    proj = jnp.asarray(arrays["proj"], ys.dtype)
    phi = jnp.tensordot(proj, ys, axes=1)                     # (G, [T])
    return groups.spread(phi, arrays["labels"]).astype(x.dtype), None


def _rows(opts: dict) -> int:
    c = opts["coalitions"]
    return int(np.shape(c)[0]) if c is not None else opts["n_samples"]


def superpixels(image: Any, *, n_segments: int = 50, method: str = "slic",
                compactness: float | None = None, channel_axis: int | None = -1,
                seed: int = 0) -> np.ndarray:
    """A ``feature_mask`` for ``lime`` from one image: scikit-image superpixels, repeated over
    the channel axis so that the mask has the image's shape.

    ``image``: ``(H, W)`` (``channel_axis=None``) or ``(H, W, C)`` (``channel_axis=-1``; other
    positions as scikit-image). ``method="slic"`` (k-means in colour × position space,
    ``n_segments`` about the count, ``compactness`` default 10 for colour, 0.1 for greyscale
    scaled to [0, 1]) or ``"quickshift"`` (``lime_image``'s default; needs 3 channels).
    Returns integer labels ``0..G−1`` of the image's shape.
    """
    try:
        import skimage.segmentation as seg  # late: scikit-image is optional
    except ImportError:
        raise ImportError("jaxlift.methods.lime.superpixels needs scikit-image, an optional "
                          "dependency: pip install 'jaxlift[methods]' (or pip install "
                          "scikit-image)") from None

    img = np.asarray(image, dtype=np.float64)
    if img.ndim not in (2, 3):
        raise InputValueError(f"superpixels needs one image of shape (H, W) or (H, W, C), got shape "
                              f"{img.shape}")
    if channel_axis is not None and img.ndim != 3:
        raise InputValueError(f"superpixels: an image of shape {img.shape} has no channel axis; pass "
                              "channel_axis=None for a greyscale (H, W) image")
    if channel_axis is None and img.ndim != 2:
        raise InputValueError(f"superpixels: channel_axis=None needs an (H, W) image, got shape "
                              f"{img.shape}")
    if not np.all(np.isfinite(img)):
        raise InputValueError("superpixels: the image has non-finite values")
    if isinstance(n_segments, bool) or not isinstance(n_segments, int) or n_segments < 1:
        raise InputValueError(f"superpixels n_segments must be a positive int, got {n_segments!r}")
    lo, hi = img.min(), img.max()
    scaled = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
    if method == "slic":
        if compactness is None:
            compactness = 10.0 if channel_axis is not None else 0.1
        labels = seg.slic(scaled, n_segments=n_segments, compactness=compactness,
                          channel_axis=channel_axis, start_label=0)
    elif method == "quickshift":
        if channel_axis is None or img.shape[channel_axis] != 3:
            raise InputValueError("superpixels method 'quickshift' needs a 3-channel image")
        labels = seg.quickshift(scaled, channel_axis=channel_axis, rng=seed)
    else:
        raise InputValueError(f"unknown superpixels method {method!r}; choose slic or quickshift")
    labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape).astype(np.int32)
    if channel_axis is not None:
        labels = np.broadcast_to(np.expand_dims(labels, channel_axis), img.shape).copy()
    return labels


METHOD = base.Method(
    name=NAME,
    summary="LIME (Ribeiro et al. 2016): a weighted ridge fit of t on random coalitions of "
            "feature groups switched to the reference (cosine kernel); superpixels from "
            "`jaxlift.methods.lime.superpixels(image)`",
    cost="`n_samples` forwards per pair + one shared solve",
    scope="pair",
    kernel=_kernel,
    options=(
        base.Option("n_samples", 1000, "coalitions to evaluate per pair",
                    base.positive_int(NAME, "n_samples")),
        ls.feature_mask_option(NAME),
        base.Option("kernel_width", 0.25, "width w of the proximity exp(−d²/w²) on the "
                    "cosine distance", _positive_float("kernel_width")),
        base.Option("alpha", 1.0, "ridge penalty α (0: least squares)",
                    base.non_negative_float(NAME, "alpha")),
        ls.coalitions_option(NAME),
        groups.perturbations_option(NAME, "coalitions"),
    ),
    completeness="none",
    prepare=_prepare,
    rows_per_pair=_rows,
    single_array=True,
)
