"""Which rule where, per method: the built-in composites (docs/design.md §7.3, zennit-style).

A :class:`~jaxlift.rules.registry.Composite` lists ``(match, rule)`` entries tried before the
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

import functools

from jaxlift.rules.guided import GUIDED
from jaxlift.rules.lrp import lrp_epsilon_rule
from jaxlift.rules.maxrule import MAX_GRADIENT, MAX_PRIMITIVES
from jaxlift.rules.product import GATE_AS_WEIGHT, gated_product
from jaxlift.rules.registry import Composite, both, is_nonlinearity, primitive_in
from jaxlift.rules.rescale import RESCALE
from jaxlift.rules.reveal_cancel import REVEAL_CANCEL, fed_by_dense

COMPOSITES: dict[str, Composite] = {
    "rescale": Composite("rescale", ((is_nonlinearity, RESCALE),)),
    "reveal_cancel": Composite("reveal_cancel", ((is_nonlinearity, REVEAL_CANCEL),),
                               carries_split=True),
    "genomics_default": Composite(
        "genomics_default",
        ((both(is_nonlinearity, fed_by_dense), REVEAL_CANCEL), (is_nonlinearity, RESCALE)),
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
def composite(mode: "str | Composite", max_mode: str = "preserving",
              gating: str = "shapley") -> Composite:
    """The composite of a DeepLIFT mode (a name, or a user's own :class:`Composite`) with its
    options (memoized: one object per choice, so that it keys the compilation cache)."""
    base = mode if isinstance(mode, Composite) else COMPOSITES[mode]
    mode = base.name
    entries = []
    if max_mode == "gradient":
        entries.append((primitive_in(*MAX_PRIMITIVES), MAX_GRADIENT))
    if gating == "gate_as_weight":
        entries.append((gated_product, GATE_AS_WEIGHT))
    if not entries:
        return base
    name = "+".join([mode] + [o for o, d in ((max_mode, "preserving"), (gating, "shapley"))
                              if o != d])
    return base.with_entries(name, *entries)
