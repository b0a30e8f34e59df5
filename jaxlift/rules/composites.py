"""Which rule where, per method: the built-in composites (docs/design.md §7.3, zennit-style).

A :class:`Composite` lists ``(match, rule)`` entries tried before the
registry's rule for a primitive. The DeepLIFT modes differ only here:

* ``rescale``: every fused nonlinearity gets Rescale (``m = Δy/Δx``);
* ``reveal_cancel``: every fused nonlinearity gets RevealCancel, and the forward pass carries
  the split ``Δv = Δv⁺ + Δv⁻``;
* ``genomics_default`` (the original deeplift's default): RevealCancel on a nonlinearity fed
  by a dense layer (``dot_general``, through bias adds, reshapes and casts), Rescale on every
  other (convolutions, pooling, inputs);
* ``guided_backprop``: the guided chain rule at every nonlinearity (run at ``r = x``);
* ``lrp_epsilon`` (:func:`lrp_composite`, one per ``ε``): ``m_z = m_y·g(z)/(z + ε·sign z)`` at
  every nonlinearity (run at ``r = x``).

and two options layer entries on top of any of them:

* ``max_mode="gradient"``: max-like primitives route to the input's argmax (the original's
  max-pooling; not exact, :mod:`jaxlift.rules.maxrule`);
* ``gating="gate_as_weight"``: a gate·signal ``mul`` gives the signal ``m_s = g`` and the gate
  nothing (Arras et al.; not exact, :mod:`jaxlift.rules.product`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

from jaxlift.rules.guided import GUIDED
from jaxlift.rules.lrp import lrp_epsilon_rule
from jaxlift.rules.maxrule import MAX_GRADIENT, MAX_PRIMITIVES
from jaxlift.rules.product import GATE_AS_WEIGHT, gated_product
from jaxlift.rules.registry import Rule
from jaxlift.rules.rescale import RESCALE
from jaxlift.rules.reveal_cancel import (NET_SPLIT, REVEAL_CANCEL, fed_by_dense,
                                        shifted_by_a_stopped_value)

Match = Callable[[Any, Any], bool]
"""``match(op, program) -> bool``: whether a composite's entry claims this operation."""


def is_nonlinearity(op, program) -> bool:
    """A fused elementwise nonlinearity of one live input (docs/design.md §5.4)."""
    return op.eqn is None


def primitive_in(*names: str) -> Match:
    """Matches operations of these primitives."""
    wanted = frozenset(names)
    return lambda op, program: op.eqn is not None and op.primitive in wanted


def both(first: Match, second: Match) -> Match:
    return lambda op, program: first(op, program) and second(op, program)


@dataclasses.dataclass(frozen=True)
class Composite:
    """Which rule where, as data (zennit's composites): ``entries`` are ``(match, rule)`` pairs
    tried in order on every live operation; the first whose ``match(op, program)`` holds gives
    the rule; where none does, the registry's rule for the primitive and its live operands.
    ``carries_split``: the forward pass carries the RevealCancel split ``Δv = Δv⁺ + Δv⁻``.

    A method's composite is built once (module level, or memoized) and reused: it is part of
    the compilation cache key, compared by identity of its matches and rules."""

    name: str
    entries: tuple[tuple[Match, Rule], ...] = ()
    carries_split: bool = False

    def with_entries(self, name: str, *entries: tuple[Match, Rule]) -> "Composite":
        """This composite with ``entries`` tried first."""
        return dataclasses.replace(self, name=name, entries=tuple(entries) + self.entries)

    @property
    def exact(self) -> bool:
        """Whether every rule this composite chooses promises summation-to-delta (the
        registry's rules all do)."""
        return all(rule.exact for _, rule in self.entries)

    def rule_for(self, op, program) -> Rule | None:
        for match, rule in self.entries:
            if match(op, program):
                return rule
        return None


COMPOSITES: dict[str, Composite] = {
    "rescale": Composite("rescale", ((is_nonlinearity, RESCALE),)),
    "reveal_cancel": Composite("reveal_cancel", ((is_nonlinearity, REVEAL_CANCEL),
                                                 (shifted_by_a_stopped_value, NET_SPLIT)),
                               carries_split=True),
    "genomics_default": Composite(
        "genomics_default",
        ((both(is_nonlinearity, fed_by_dense), REVEAL_CANCEL), (is_nonlinearity, RESCALE),
         (shifted_by_a_stopped_value, NET_SPLIT)),
        carries_split=True),
    "guided_backprop": Composite("guided_backprop", ((is_nonlinearity, GUIDED),)),
}



@functools.lru_cache(maxsize=None)
def lrp_composite(epsilon: float) -> Composite:
    """ε-LRP's composite for one ``ε`` (memoized)."""
    return Composite(f"lrp_epsilon({epsilon:g})", ((is_nonlinearity, lrp_epsilon_rule(epsilon)),))


MAX_MODES = ("preserving", "gradient")
GATINGS = ("shapley", "gate_as_weight")


@functools.lru_cache(maxsize=None)
def resolve(base: Composite, max_mode: str = "preserving", gating: str = "shapley") -> Composite:
    """``base`` (a method's composite, built-in or a user's own) with the entries its options
    add on top: ``max_mode="gradient"`` routes max-like primitives to the input's argmax,
    ``gating="gate_as_weight"`` gives a gate·signal product's signal ``m_s = g``. Memoized: one
    object per choice, so that it keys the compilation cache."""
    entries = []
    if max_mode == "gradient":
        entries.append((primitive_in(*MAX_PRIMITIVES), MAX_GRADIENT))
    if gating == "gate_as_weight":
        entries.append((gated_product, GATE_AS_WEIGHT))
    if not entries:
        return base
    name = "+".join([base.name] + [o for o, d in ((max_mode, "preserving"),
                                                  (gating, "shapley")) if o != d])
    return base.with_entries(name, *entries)
