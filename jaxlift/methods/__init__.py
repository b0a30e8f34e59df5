"""The table of attribution methods: every ``mode=`` of :func:`jaxlift.attribute` is a
:class:`~jaxlift.methods.base.Method` value here (one file per method, one entry per method)."""
from jaxlift.methods.base import REQUIRED, Method, Option

__all__ = ["Method", "Option", "REQUIRED"]
