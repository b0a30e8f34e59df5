"""The table of attribution methods: every ``mode=`` of :func:`jaxlift.attribute` is a
:class:`~jaxlift.methods.base.Method` value here, one file per method and one line per entry.

Adding a method: write ``jaxlift/methods/my_method.py`` defining ``METHOD = Method(...)`` (a
kernel of one pair or one input, its typed options), add one line below. ``attribute(...,
mode=METHOD)`` also takes a method that is not in the table, and a
:class:`~jaxlift.rules.composites.Composite` (a DeepLIFT method with one's own rules).
"""
from __future__ import annotations

from jaxlift.errors import InputValueError
from jaxlift.methods import catalog, smoothgrad
from jaxlift.methods.deeplift import deeplift_method
from jaxlift.methods.base import REQUIRED, Method, Option
from jaxlift.rules.composites import Composite

METHODS: dict[str, Method] = {m.name: m for m in (*catalog.BASE_METHODS, smoothgrad.METHOD)}


def lookup(mode) -> Method:
    """The :class:`Method` for ``mode``: a name in :data:`METHODS`, a :class:`Method`, or a
    :class:`Composite` (run as a DeepLIFT method)."""
    if isinstance(mode, Method):
        return mode
    if isinstance(mode, Composite):
        return deeplift_method(mode)
    if isinstance(mode, str) and mode in METHODS:
        return METHODS[mode]
    raise InputValueError(f"unknown mode {mode!r}; choose one of {', '.join(METHODS)}, or pass a "
                          "jaxlift.methods.Method or a Composite")


__all__ = ["METHODS", "REQUIRED", "Composite", "Method", "Option", "lookup"]
