"""Reading and writing models and data: Keras ``.h5`` and ``.keras`` files, images."""
from jaxlift.io.keras_config import KerasFormatError
from jaxlift.io.keras_files import keras_info, load_keras
from jaxlift.io.keras_h5 import load_keras_h5, save_keras_h5
from jaxlift.io.images import load_image

__all__ = ["KerasFormatError", "keras_info", "load_keras", "load_keras_h5", "save_keras_h5",
           "load_image"]
