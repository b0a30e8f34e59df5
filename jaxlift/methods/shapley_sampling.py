"""``shapley_sampling`` (Castro et al. 2009): for ``num_permutations`` random orders of the
feature groups (default 25, drawn from ``key``, the same orders for every pair), add the groups'
input values to the reference one at a time and credit each group with the change of ``t``;
average over orders.

``feature_mask`` (integers, the example's shape) groups features; every feature of a group gets
the group's value (as Captum). Per pair, the group values sum to ``Δt`` exactly, whatever the
orders. ``x`` must be one array.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlift.methods.base import Method, Option, positive_int
from jaxlift.methods.groups import (feature_groups, map_batched, perturbations_option,
                                    spread)


def kernel(f, params, x, r, *, opts, arrays, key):
    """Shapley value sampling of one pair: per-feature values ``([T,] *S)``."""
    labels, perms = arrays["labels"], arrays["perms"]
    n_groups = perms.shape[1]
    ranks = jnp.argsort(perms, axis=1)                                # (P, G)
    js = jnp.arange(n_groups + 1)

    def t_of(rank, j):
        on = rank[labels] < j
        return f(params, jnp.where(on, x, r))

    def per_perm(rank):
        ts = jax.vmap(lambda j: t_of(rank, j))(js)                     # (G+1, [T])
        return ts[rank + 1] - ts[rank]                                 # (G, [T])

    phi = map_batched(per_perm, ranks, opts["perturbations_per_eval"]).mean(axis=0)
    return spread(phi, labels), None                                   # ([T,] *S)


def prepare(opts, shape, key) -> dict:
    """The feature groups and the ``num_permutations`` orders of them, shared by all pairs."""
    labels, n_groups = feature_groups(shape, opts["feature_mask"])
    perms = jax.vmap(lambda kk: jax.random.permutation(kk, n_groups))(
        jax.random.split(key, opts["num_permutations"]))
    return {"labels": labels, "perms": perms}


METHOD = Method(
    name="shapley_sampling",
    summary="Shapley value sampling over random orders of the feature groups",
    scope="pair", kernel=kernel, single_array=True, completeness="exact", prepare=prepare,
    options=(Option("num_permutations", 25, "random orders of the groups",
                    positive_int("shapley_sampling", "num_permutations")),
             Option("feature_mask", None, "integer group of each feature (the example's "
                    "shape)", static=False),
             perturbations_option("shapley_sampling", "orders")))
