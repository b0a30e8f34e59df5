"""Reading and writing models and data: Keras ``.h5`` and ``.keras`` files, images.

The names below are imported on first use (PEP 562), so that importing one light submodule
(``jaxlift.io.atomic``, ``jaxlift.io.images``) does not import the Keras readers, JAX and Flax.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from jaxlift._lazy import lazy_attributes

_EXPORTS = {"KerasFormatError": "keras_config", "keras_info": "keras_files",
            "load_keras": "keras_files", "load_keras_h5": "keras_h5",
            "save_keras_h5": "keras_h5", "load_image": "images"}

__all__ = ["KerasFormatError", "keras_info", "load_keras", "load_keras_h5", "save_keras_h5",
           "load_image"]


__getattr__, __dir__ = lazy_attributes(
    __name__, globals(), {name: f"{__name__}.{module}" for name, module in _EXPORTS.items()})

if TYPE_CHECKING:
    from jaxlift.io.images import load_image  # noqa: F401
    from jaxlift.io.keras_config import KerasFormatError  # noqa: F401
    from jaxlift.io.keras_files import keras_info, load_keras  # noqa: F401
    from jaxlift.io.keras_h5 import load_keras_h5, save_keras_h5  # noqa: F401
