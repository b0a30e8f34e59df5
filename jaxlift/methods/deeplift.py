"""The DeepLIFT methods (Shrikumar, Greenside & Kundaje 2017): the interpreter on every
(input, reference) pair with a composite saying which rule where
(:mod:`jaxlift.rules.composites`):

* ``rescale``: Rescale at every nonlinearity, ``m = Δy/Δx``;
* ``reveal_cancel``: RevealCancel at every nonlinearity (the forward pass carries
  ``Δv = Δv⁺ + Δv⁻``);
* ``genomics_default``: RevealCancel after dense layers, Rescale elsewhere (the original
  deeplift's default for genomics).

Summation-to-delta ``Σ_i C_i = t(x) − t(r)`` holds per pair with ``max_mode="preserving"`` and
``gating="shapley"`` (the defaults).
"""
from __future__ import annotations

from jaxlift.methods.base import Method
from jaxlift.rules.composites import COMPOSITES, Composite

_SUMMARIES = {
    "rescale": "DeepLIFT Rescale: m = Δy/Δx at every nonlinearity",
    "reveal_cancel": "DeepLIFT RevealCancel: the positive and negative parts of each "
                     "pre-activation handled apart (reveals cancelled terms)",
    "genomics_default": "DeepLIFT: RevealCancel after dense layers, Rescale elsewhere (the "
                        "original deeplift's default for genomics)",
}
_COSTS = {
    "rescale": "below one `jax.grad` over the same pairs (forward on N + K rows, one backward)",
    "reveal_cancel": "≈ 1.5–2 × `jax.grad`",
    "genomics_default": "between the two",
}


def deeplift_method(composite: Composite, summary: str | None = None, cost: str = "") -> Method:
    """A DeepLIFT method running ``composite`` (a built-in one or a user's own)."""
    return Method(name=composite.name, summary=summary or f"DeepLIFT with composite "
                  f"{composite.name!r}", scope="interpreter", composite=composite,
                  carries_split=composite.carries_split, completeness="exact", cost=cost)


RESCALE = deeplift_method(COMPOSITES["rescale"], _SUMMARIES["rescale"], _COSTS["rescale"])
REVEAL_CANCEL = deeplift_method(COMPOSITES["reveal_cancel"], _SUMMARIES["reveal_cancel"],
                                _COSTS["reveal_cancel"])
GENOMICS_DEFAULT = deeplift_method(COMPOSITES["genomics_default"],
                                   _SUMMARIES["genomics_default"], _COSTS["genomics_default"])
