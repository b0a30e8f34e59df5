"""The table of attribution methods: every ``mode=`` of :func:`jaxlift.attribute` is a
:class:`~jaxlift.methods.base.Method` value here (one file per method, one entry per method)."""
from jaxlift.methods import kernel_shap, lime, smoothgrad
from jaxlift.methods.base import REQUIRED, Method, Option

METHODS: dict[str, Method] = {
    "lime": lime.METHOD,
    "kernel_shap": kernel_shap.METHOD,
    "smoothgrad": smoothgrad.METHOD,
}

__all__ = ["Method", "Option", "REQUIRED", "METHODS"]
