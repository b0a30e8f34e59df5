"""Flax models: the generic Keras-graph module and hand-written ports of the three CNNs.

The names below are imported on first use (PEP 562), so that ``jaxlift.models.graph`` (a
Keras model as data) can be imported without Flax and JAX.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from jaxlift._lazy import lazy_attributes

_EXPORTS = {"KerasModel": "generic", "LayerSpec": "graph", "ModelGraph": "graph"}

__all__ = ["KerasModel", "LayerSpec", "ModelGraph"]


__getattr__, __dir__ = lazy_attributes(
    __name__, globals(), {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})

if TYPE_CHECKING:
    from jaxlift.models.generic import KerasModel  # noqa: F401
    from jaxlift.models.graph import LayerSpec, ModelGraph  # noqa: F401
