"""Flax models: the generic Keras-graph module and hand-written ports of the three CNNs.

The names below are imported on first use (PEP 562), so that ``jaxlift.models.graph`` (a
Keras model as data) can be imported without Flax and JAX.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {"KerasModel": "generic", "LayerSpec": "graph", "ModelGraph": "graph"}

__all__ = ["KerasModel", "LayerSpec", "ModelGraph"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'jaxlift.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from jaxlift.models.generic import KerasModel  # noqa: F401
    from jaxlift.models.graph import LayerSpec, ModelGraph  # noqa: F401
