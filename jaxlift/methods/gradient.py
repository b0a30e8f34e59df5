"""``gradient``: saliency, ``∂t/∂x`` at the input (Simonyan et al. 2014).

Needs no reference: ``refs`` may be ``None`` (the result is then ``(N, *S)``); when given they
only shape the result (a K axis of copies with ``average_refs=False``) and define ``Δt``.
Multipliers are the gradient itself. Does not sum to ``Δt`` (exact only for linear ``t``).
"""
from __future__ import annotations

from typing import Callable

import jax

from jaxlift.methods.base import Method


def gradient_of(f: Callable, params, x):
    """``∂t/∂x`` per leaf: shaped like ``x``, or ``(T, *S)`` for a vector ``t`` (rows by
    VJPs)."""
    return jax.jacrev(f, argnums=1)(params, x)


def kernel(f, params, x, r, *, opts, arrays, key):
    g = gradient_of(f, params, x)
    return g, g


METHOD = Method(
    name="gradient", summary="saliency: the gradient ∂t/∂x at the input",
    cost="one gradient per input", scope="input",
    kernel=kernel, needs_refs=False)
