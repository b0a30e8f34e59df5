"""``shapley_sampling`` (Castro et al. 2009): for ``num_permutations`` random orders of the
feature groups (default 25, drawn from ``key``, the same orders for every pair), add the groups'
input values to the reference one at a time and credit each group with the change of ``t``;
average over orders.

``feature_mask`` (integers, the example's shape) groups features; every feature of a group gets
the group's value (as Captum). By default (``"auto"``, :func:`jaxlift.methods.groups.default_mask`)
an image ``(H, W, C)`` has one group per patch of ``⌈H/8⌉ × ⌈W/8⌉`` pixels, ``(T, F)`` one per
position, a vector one per feature; ``None`` makes every feature a group. Per pair, the group
values sum to ``Δt`` exactly, whatever the orders. ``x`` must be one array.

Cost and memory: a pair needs ``P·(G + 1)`` forward passes (``P`` orders, ``G`` groups). They
are evaluated ``perturbations_per_eval`` at a time (default 512, a ``lax.map`` over the
flattened (order, step) coalitions), so memory stays at a few hundred forward passes per pair
in a chunk whatever ``P`` and ``G`` are; ``None`` evaluates all of them at once (one ``vmap``:
19,625 forward passes per pair for 25 orders of the 784 pixels of an MNIST digit, which is what
made 4 digits peak at 2.3 GB when every pixel was its own group).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlift.methods.base import Method, Option, optional_positive_int, positive_int
from jaxlift.methods.groups import feature_groups, feature_mask_option, map_batched, spread

PER_EVAL = 512
"""Forward passes per ``lax.map`` step by default (``perturbations_per_eval``)."""


def kernel(f, params, x, r, *, opts, arrays, key):
    """Shapley value sampling of one pair: per-feature values ``([T,] *S)``."""
    labels, perms = arrays["labels"], arrays["perms"]
    n_perm, n_groups = perms.shape
    ranks = jnp.argsort(perms, axis=1)                                # (P, G)
    steps = n_groups + 1

    def t_at(i):                     # coalition i = (order p, first j groups of it switched on)
        p, j = i // steps, i % steps
        return f(params, jnp.where(ranks[p][labels] < j, x, r))

    ts = map_batched(t_at, jnp.arange(n_perm * steps), opts["perturbations_per_eval"])
    ts = ts.reshape((n_perm, steps) + ts.shape[1:])                   # (P, G+1, [T])
    gains = jax.vmap(lambda t, rank: t[rank + 1] - t[rank])(ts, ranks)  # (P, G, [T])
    return spread(gains.mean(axis=0), labels), None                   # ([T,] *S)


def prepare(opts, shape, key) -> dict:
    """The feature groups and the ``num_permutations`` orders of them, shared by all pairs."""
    labels, n_groups = feature_groups(shape, opts["feature_mask"])
    perms = jax.vmap(lambda kk: jax.random.permutation(kk, n_groups))(
        jax.random.split(key, opts["num_permutations"]))
    return {"labels": labels, "perms": perms}


def _rows(opts: dict) -> int | None:
    """Forward passes in flight per pair, for ``batch_size="auto"`` (None: all at once, their
    number depending on the groups)."""
    return opts["perturbations_per_eval"]


METHOD = Method(
    name="shapley_sampling",
    summary="Shapley value sampling over random orders of the feature groups",
    cost="`num_permutations`·(groups + 1) forwards per pair, `perturbations_per_eval` at a time",
    scope="pair", kernel=kernel, single_array=True, completeness="exact", prepare=prepare,
    rows_per_pair=_rows,
    options=(Option("num_permutations", 25, "random orders of the groups",
                    positive_int("shapley_sampling", "num_permutations")),
             feature_mask_option("shapley_sampling"),
             Option("perturbations_per_eval", PER_EVAL,
                    "forward passes per batch (bounds memory; None: all orders × groups at "
                    "once)", optional_positive_int("shapley_sampling", "perturbations_per_eval"))))
