"""``guided_backprop`` (Springenberg et al. 2015): the gradient with every relu-like step passing
only positive multipliers where its forward input is positive.

Runs the interpreter with the reference equal to the input and the ``guided_backprop``
composite (:mod:`jaxlift.rules.guided`); max-pooling routes to the argmax of ``x``. The score is
the guided gradient itself (as Captum's ``GuidedBackprop``); references as for ``gradient``.
"""
from __future__ import annotations

from jaxlift.methods.base import Method
from jaxlift.methods.interpreted import multipliers_at_input
from jaxlift.rules.composites import COMPOSITES


def kernel(f, params, x, r, *, opts, arrays, key):
    m = multipliers_at_input(f, params, x, COMPOSITES["guided_backprop"])
    return m, m


METHOD = Method(
    name="guided_backprop", summary="guided backpropagation (positive multipliers through relu)",
    cost="≈ one gradient",
    scope="input", kernel=kernel, needs_refs=False)
