"""``kernel_shap``: Shapley values of feature groups as a weighted linear fit (Lundberg & Lee,
"A unified approach to interpreting model predictions", NeurIPS 2017).

The machinery of ``lime`` (:mod:`jaxlift.methods.linear_surrogate`: coalitions
``z ∈ {0,1}^G`` of feature groups, ``x_z = where(z[labels], x, r)``) with the Shapley kernel
``π(z) = (G−1)/(C(G,|z|)·|z|·(G−|z|))`` and the two coalitions it weighs infinitely as exact
constraints: ``b = t(r)`` and ``Σ_g φ_g = t(x) − t(r)`` (efficiency; the paper's elimination of
the last coefficient). So per pair the *group* values sum to ``Δt`` exactly
(``completeness="exact"``, counted per group as for ``shapley_sampling``: every feature carries
its group's value, so with groups larger than one feature the per-feature sum is not ``Δt``); on
a model linear in the groups they are the exact Shapley values (``w_i·(x_i − r_i)`` summed over
each group) whatever the coalitions; with all ``2^G − 2`` proper coalitions enumerated they are the
exact Shapley values of any model.

Coalitions: when ``n_samples ≥ 2^G − 2`` all proper coalitions are enumerated and weighted by
``π`` (as the ``shap`` package does); otherwise ``n_samples`` coalitions are drawn from the
kernel itself (size ``k`` with probability ``∝ (G−1)/(k(G−k))``, then ``k`` groups uniformly, as
Captum's ``KernelShap``) and weigh 1 each. ``coalitions=`` takes your own ``(S, G)`` 0/1 array,
weighted by ``π`` (rows with no or all groups on carry no information beyond the constraints
and weigh 0). The fit is plain least squares (minimum-norm when the coalitions do not determine
it). Every feature of a group gets the group's value (as Captum).

Options: ``n_samples`` (2048, the constant of ``shap``'s ``2G + 2048``), ``feature_mask``,
``coalitions``, ``perturbations_per_eval``.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxlift.errors import InputValueError
from jaxlift.methods import base, groups
from jaxlift.methods import linear_surrogate as ls

NAME = "kernel_shap"


def shapley_kernel(z: np.ndarray) -> np.ndarray:
    """``π(z) = (G−1)/(C(G,|z|)·|z|·(G−|z|))`` for each row of ``z`` ``(S, G)``; 0 where
    ``|z| ∈ {0, G}`` (those are the constraints, not samples)."""
    g = z.shape[1]
    k = z.sum(axis=1)
    proper = (k > 0) & (k < g)
    if g < 2:
        return np.zeros(len(z))
    ks = np.where(proper, k, 1.0)                 # 1 ≤ ks ≤ G−1: every log below is finite
    logw = np.log(g - 1.0) - ls.log_comb(g, ks) - np.log(ks) - np.log(g - ks)
    return np.where(proper, np.exp(logw), 0.0)


def proper_coalitions(n_groups: int) -> np.ndarray:
    """Every ``z`` with ``0 < |z| < G``: ``(2^G − 2, G)``."""
    z = ls.all_coalitions(n_groups)
    return z[1:-1]


def sample_coalitions(key, n_groups: int, n_samples: int) -> np.ndarray:
    """``n_samples`` coalitions from the Shapley kernel: size ``k ∈ 1..G−1`` with probability
    ``∝ (G−1)/(k(G−k))``, then a uniformly random set of ``k`` groups."""
    rng = ls.host_rng(key)
    ks = np.arange(1, n_groups)
    p = 1.0 / (ks * (n_groups - ks))
    sizes = rng.choice(ks, size=n_samples, p=p / p.sum())
    ranks = np.argsort(np.argsort(rng.random((n_samples, n_groups)), axis=1), axis=1)
    return (ranks < sizes[:, None]).astype(np.float64)


def _prepare(opts: dict, example_shape: tuple[int, ...], key) -> dict:
    labels, g = groups.feature_groups(tuple(example_shape), opts["feature_mask"])
    if g == 1:
        z = np.zeros((0, 1))
        w = np.zeros((0,))
    elif opts["coalitions"] is not None:
        z = ls.check_coalitions(opts["coalitions"], g, NAME)
        w = shapley_kernel(z)
        keep = w > 0
        if not keep.any():
            raise InputValueError(f"{NAME} coalitions: every row switches on no or all groups; give "
                                  "at least one with 0 < |z| < G")
        z, w = z[keep], w[keep]
    elif g <= 16 and 2 ** g - 2 <= min(opts["n_samples"], ls.MAX_ENUMERATED):
        z = proper_coalitions(g)
        w = shapley_kernel(z)
    else:
        z = sample_coalitions(key, g, opts["n_samples"])
        w = np.ones(len(z))
    proj = ls.efficient_projection(z, w) if g > 1 else np.zeros((0, 0))
    return {"labels": jnp.asarray(labels), "z": jnp.asarray(z, jnp.float32), "proj": proj}


def _kernel(f, params, x, r, *, opts, arrays, key):
    """One pair: ``φ_{<G} = P (t(x_z) − t(r) − z_G Δt)``, ``φ_G = Δt − Σ φ_{<G}``."""
    del key
    labels, z = arrays["labels"], arrays["z"]
    t_x, t_r = f(params, x), f(params, r)
    dt = t_x - t_r
    if z.shape[0] == 0:                                     # one group: it gets Δt
        phi = dt[None]
    else:
        ys = ls.coalition_targets(f, params, x, r, labels, z, opts["perturbations_per_eval"])
        last = z[:, -1].astype(ys.dtype).reshape((-1,) + (1,) * (ys.ndim - 1))
        resid = ys - t_r - last * dt
        proj = jnp.asarray(arrays["proj"], ys.dtype)
        head = jnp.tensordot(proj, resid, axes=1)           # (G−1, [T])
        phi = jnp.concatenate([head, (dt - head.sum(axis=0))[None]], axis=0)
    return groups.spread(phi, labels).astype(x.dtype), None


def _rows(opts: dict) -> int:
    c = opts["coalitions"]
    return (int(np.shape(c)[0]) if c is not None else opts["n_samples"]) + 2


METHOD = base.Method(
    name=NAME,
    summary="KernelSHAP (Lundberg & Lee 2017): a weighted linear fit of t on coalitions of "
            "feature groups switched to the reference, with the Shapley kernel and efficiency "
            "imposed; all coalitions enumerated when they fit; exact Shapley values for a "
            "linear model",
    cost="`n_samples` forwards per pair",
    scope="pair",
    kernel=_kernel,
    options=(
        base.Option("n_samples", 2048, "coalitions to evaluate per pair (all 2^G − 2 when "
                    "that is fewer)", base.positive_int(NAME, "n_samples")),
        ls.feature_mask_option(NAME),
        ls.coalitions_option(NAME),
        groups.perturbations_option(NAME, "coalitions"),
    ),
    completeness="exact",
    prepare=_prepare,
    rows_per_pair=_rows,
    single_array=True,
)
