"""``grad_times_input``: the classic ``x · ∂t/∂x`` (Shrikumar et al. 2016).

Not ``Δx · ∂t/∂x``: for a reference-relative variant use ``multipliers(mode="gradient") *
(x − r)``, which equals ``Δt`` only for linear ``t``. References as for ``gradient``;
multipliers are the gradient.
"""
from __future__ import annotations

import jax

from jaxlift.methods.base import Method
from jaxlift.methods.gradient import gradient_of


def kernel(f, params, x, r, *, opts, arrays, key):
    g = gradient_of(f, params, x)
    return jax.tree_util.tree_map(lambda gl, xl: gl * xl, g, x), g


METHOD = Method(
    name="grad_times_input", summary="gradient × input, x·∂t/∂x", cost="one gradient per input",
    scope="input", kernel=kernel,
    needs_refs=False)
