"""Multipliers of the positive and negative parts of a difference (docs/design.md §1, §6).

A leaf module shared by the interpreter and the rules (neither imports the other for it).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp


class SplitMultipliers(NamedTuple):
    """Multipliers of the positive and negative parts of a difference, ``(m⁺, m⁻)``; the same
    array in Rescale mode (``shared``), which the rules use to skip duplicate work."""

    pos: Any
    neg: Any

    @property
    def shared(self) -> bool:
        return self.pos is self.neg

    @staticmethod
    def of(m) -> "SplitMultipliers":
        return SplitMultipliers(m, m)

    def map(self, f) -> "SplitMultipliers":
        """Apply ``f`` to both parts (once when they are the same array)."""
        if self.shared:
            return SplitMultipliers.of(f(self.pos))
        return SplitMultipliers(f(self.pos), f(self.neg))

    def __add__(self, other: "SplitMultipliers") -> "SplitMultipliers":  # type: ignore[override]
        if self.shared and other.shared:
            return SplitMultipliers.of(self.pos + other.pos)
        return SplitMultipliers(self.pos + other.pos, self.neg + other.neg)


def sign_split(delta):
    """``(max(Δ, 0), min(Δ, 0))``; ``(Δ, 0)`` for a complex ``Δ``, which has no sign (its
    multipliers are then one array, as in Rescale: ``C = m⁺·Δ``)."""
    if jnp.issubdtype(jnp.result_type(delta), jnp.complexfloating):
        return delta, jnp.zeros_like(delta)
    return jnp.maximum(delta, 0), jnp.minimum(delta, 0)


def combine_by_sign(delta, m: SplitMultipliers):
    """One multiplier for the whole difference when its split is the sign split:
    ``m⁺`` where ``Δ > 0``, ``m⁻`` where ``Δ < 0``, their mean where ``Δ = 0``."""
    if m.shared or jnp.issubdtype(jnp.result_type(delta), jnp.complexfloating):
        return m.pos  # a complex difference is split (Δ, 0): only m⁺ carries it
    return jnp.where(delta > 0, m.pos, jnp.where(delta < 0, m.neg, (m.pos + m.neg) / 2))
