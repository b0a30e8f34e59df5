"""``lrp_epsilon``: ε-LRP (Bach et al. 2015) as DeepExplain defines it: relevance passes through
each nonlinearity ``y = g(z)`` as ``g(z)/(z + ε·sign(z))`` times the relevance multiplier of
``y``, by the weights through linear operations, and the score is ``x · m`` (:mod:`jaxlift.rules.lrp`).

Option ``epsilon`` (default 1e-4, DeepExplain's). Needs no reference (references only shape the
result and define ``Δt``). Equals gradient × input on bias-free ReLU networks at ``ε = 0``.
"""
from __future__ import annotations

import jax

from jaxlift.methods.base import Method, Option, non_negative_float
from jaxlift.methods.interpreted import multipliers_at_input
from jaxlift.rules.composites import lrp_composite


def kernel(f, params, x, r, *, opts, arrays, key):
    m = multipliers_at_input(f, params, x, lrp_composite(opts["epsilon"]))
    return jax.tree_util.tree_map(lambda ml, xl: ml * xl, m, x), m


METHOD = Method(
    name="lrp_epsilon",
    summary="ε-LRP as DeepExplain defines it: relevance through each nonlinearity y = g(z) as "
            "g(z)/(z + ε·sign z), by the weights through linear layers, score x·m (biases and ε "
            "absorb relevance; equals gradient × input on bias-free ReLU nets at ε = 0)",
    cost="≈ one gradient",
    scope="input", kernel=kernel, needs_refs=False,
    options=(Option("epsilon", 1e-4, "the stabiliser ε ≥ 0",
                    non_negative_float("lrp_epsilon", "epsilon")),))
