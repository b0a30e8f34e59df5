"""Reading and writing models and data: Keras ``.h5`` files, images."""
from jaxlift.io.keras_h5 import KerasFormatError, keras_info, load_keras_h5, save_keras_h5
from jaxlift.io.images import load_image

__all__ = ["KerasFormatError", "keras_info", "load_keras_h5", "save_keras_h5", "load_image"]
