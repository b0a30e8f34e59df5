"""The table of attribution methods: every ``mode=`` of :func:`jaxlift.attribute` is a
:class:`~jaxlift.methods.base.Method` value here, one file per method and one line per entry.

Adding a method: write ``jaxlift/methods/my_method.py`` defining ``METHOD = Method(...)`` (a
kernel of one pair or one input, its typed options), add one line below. ``attribute(...,
mode=METHOD)`` also takes a method that is not in the table, and a
:class:`~jaxlift.rules.registry.Composite` (a DeepLIFT method with one's own rules).
"""
from __future__ import annotations

from jaxlift.methods import (deeplift, grad_times_input, gradient, guided_backprop,
                             integrated_gradients, ism, kernel_shap, lime, lrp_epsilon, occlusion,
                             shapley_sampling, smoothgrad)
from jaxlift.methods.base import REQUIRED, Method, Option
from jaxlift.rules.registry import Composite

METHODS: dict[str, Method] = {m.name: m for m in (
    deeplift.RESCALE,
    deeplift.REVEAL_CANCEL,
    deeplift.GENOMICS_DEFAULT,
    gradient.METHOD,
    grad_times_input.METHOD,
    guided_backprop.METHOD,
    integrated_gradients.METHOD,
    occlusion.METHOD,
    shapley_sampling.METHOD,
    lrp_epsilon.METHOD,
    lime.METHOD,
    kernel_shap.METHOD,
    smoothgrad.METHOD,
    ism.METHOD,
)}


def lookup(mode) -> Method:
    """The :class:`Method` for ``mode``: a name in :data:`METHODS`, a :class:`Method`, or a
    :class:`Composite` (run as a DeepLIFT method)."""
    if isinstance(mode, Method):
        return mode
    if isinstance(mode, Composite):
        return deeplift.deeplift_method(mode)
    if isinstance(mode, str) and mode in METHODS:
        return METHODS[mode]
    raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(METHODS)}, or pass a "
                     "jaxlift.methods.Method or a Composite")


__all__ = ["METHODS", "REQUIRED", "Composite", "Method", "Option", "lookup"]
