"""What ``lime`` and ``kernel_shap`` share: groups of features, binary coalitions, a weighted
linear fit of the target on the coalitions, solved in JAX.

A *coalition* ``z ∈ {0,1}^G`` switches groups of features on (the input's values) or off (the
reference's): ``x_z = where(z[labels], x, r)``, with ``labels`` each feature's group index
(the example's shape). Both methods evaluate ``t(x_z)`` for ``S`` coalitions drawn once per call
(shared by every pair) and fit ``t(x_z) ≈ b + Σ_g z_g φ_g`` by weighted least squares; each
feature gets its group's ``φ_g`` (as Captum).

The fit is a projection that depends only on the coalitions and their weights, so it is built
once per call on the host in float64 (:func:`ridge_projection`, :func:`efficient_projection`)
and every pair only multiplies it by its ``S`` target values.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlift.errors import InputTypeError, InputValueError
from jaxlift.methods import base, groups
from jaxlift.methods.groups import map_batched

# Enumerate every coalition (instead of sampling) when there are at most this many.
MAX_ENUMERATED = 1 << 16


def host_rng(key) -> np.random.Generator:
    """A numpy generator seeded from a JAX key: ``prepare`` samples coalitions on the host
    (eager ``jax.random`` calls would each compile, seconds per new shape)."""
    data = key if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.key_data(key)
    return np.random.default_rng(np.asarray(data, np.uint32).ravel().tolist())


def all_coalitions(n_groups: int) -> np.ndarray:
    """Every ``z ∈ {0,1}^G``, ``(2^G, G)`` float64; row ``s`` is the binary expansion of ``s``
    (group 0 the lowest bit)."""
    s = np.arange(2 ** n_groups, dtype=np.int64)[:, None]
    return ((s >> np.arange(n_groups)) & 1).astype(np.float64)


def check_coalitions(value: Any, n_groups: int, method: str) -> np.ndarray:
    """A user's coalitions as an ``(S, G)`` float64 array of 0/1, or a clear error."""
    try:
        z = np.asarray(value)
    except Exception:
        raise InputTypeError(f"{method} coalitions must be a concrete (S, G) array of 0/1") from None
    if z.ndim != 2 or z.shape[1] != n_groups or z.shape[0] < 1:
        raise InputValueError(f"{method} coalitions must have shape (S, G) with S ≥ 1 and G = "
                              f"{n_groups} groups, got {z.shape}")
    if z.dtype.kind not in "biuf" or not np.all((z == 0) | (z == 1)):
        raise InputValueError(f"{method} coalitions must hold only 0 and 1")
    return z.astype(np.float64)


def coalitions_option(method: str) -> base.Option:
    """The ``coalitions`` option (checked against ``G`` in ``prepare``, where G is known)."""
    def check(v):
        if v is None:
            return None
        if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") and not hasattr(v, "shape"):
            raise InputTypeError(f"{method} coalitions must be None or an (S, G) array of 0/1, got "
                                 f"{v!r}")
        return v
    return base.Option("coalitions", None,
                       "None (sample, or enumerate all when n_samples allows) or an (S, G) "
                       "0/1 array of coalitions to evaluate", check, static=False)


def feature_mask_option(method: str) -> base.Option:
    """The ``feature_mask`` option (:func:`jaxlift.methods.groups.feature_mask_option`)."""
    return groups.feature_mask_option(method)


def singular_filter(s: np.ndarray, alpha: float, rows: int, cols: int) -> np.ndarray:
    """Ridge filter factors ``s/(s² + α)``, with singular values below numpy's ``lstsq``
    cut-off (``max(rows, cols)·eps·s_max``) dropped when ``α = 0`` (the minimum-norm
    least-squares solution: rank-deficient designs give finite coefficients, never NaN)."""
    if s.size == 0:
        return s
    cutoff = max(rows, cols) * np.finfo(np.float64).eps * s.max()
    keep = s > cutoff if alpha == 0 else s > 0
    return np.where(keep, s / np.where(keep, s * s + alpha, 1.0), 0.0)


def weighted_projection(d: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """``P`` ``(C, S)`` with ``β = P y`` minimising ``Σ_s w_s (y_s − d_s·β)² + α‖β‖²`` for the
    design ``d`` ``(S, C)``: with ``A = diag(√w) d = U diag(σ) Vᵀ``,
    ``P = V diag(σ/(σ²+α)) Uᵀ diag(√w)`` (:func:`singular_filter`; SVD in float64)."""
    sw = np.sqrt(w)
    a = sw[:, None] * d
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    return (vt.T * singular_filter(s, alpha, *a.shape)) @ (u.T * sw)


def ridge_projection(z: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """``P`` ``(G, S)`` with ``φ = P y`` the slopes of the weighted ridge regression with an
    unpenalized intercept: ``min_{b,φ} Σ_s w_s (y_s − b − z_s·φ)² + α‖φ‖²``.

    Centering by the weighted mean ``z̄ = Σ w z / Σ w`` removes the intercept; with
    ``A = diag(√w)(Z − z̄) = U diag(σ) Vᵀ``, ``φ = V diag(σ/(σ²+α)) Uᵀ diag(√w) y`` (the
    ``ȳ`` term drops since ``Uᵀ√w = 0``). SVD in float64, never the normal equations' squared
    condition number."""
    zbar = (w @ z) / w.sum()
    return weighted_projection(z - zbar, w, alpha)


def efficient_projection(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``P`` ``(G−1, S)`` for the Shapley-kernel fit with the two end constraints (the SHAP
    paper's elimination): ``b = t(r)`` and ``Σφ = Δt``, so with ``φ_G = Δt − Σ_{g<G} φ_g``,
    ``y_s − t(r) − z_{s,G}Δt = Σ_{g<G} (z_{s,g} − z_{s,G}) φ_g``: weighted least squares
    without intercept, ``φ_{<G} = P (y − t(r) − z_{:,G}Δt)``."""
    return weighted_projection(z[:, :-1] - z[:, -1:], w, 0.0)


def coalition_targets(f: Callable, params: Any, x: jax.Array, r: jax.Array, labels: jax.Array,
                      z: jax.Array, batch_size: int | None) -> jax.Array:
    """``t(where(z_s[labels], x, r))`` for every coalition: ``(S, [T])``, all forwards vmapped
    (``lax.map`` in batches of ``batch_size`` when given)."""
    def one(zs):
        return f(params, jnp.where(zs[labels] > 0.5, x, r))
    return map_batched(one, z, batch_size)


def log_comb(n: int, k: np.ndarray) -> np.ndarray:
    """``log C(n, k)`` elementwise (no overflow for large ``n``)."""
    lg = np.vectorize(math.lgamma)
    return lg(n + 1.0) - lg(k + 1.0) - lg(n - k + 1.0)
