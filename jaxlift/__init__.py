"""jaxlift: DeepLIFT (Rescale and RevealCancel) as a JAX program transformation."""
from jaxlift.api import attribute, layer, multipliers
from jaxlift.errors import JaxliftError, UnsupportedPrimitiveError
from jaxlift.io.keras_h5 import load_keras_h5, save_keras_h5, keras_info

__all__ = ["attribute", "multipliers", "layer", "JaxliftError", "UnsupportedPrimitiveError"]
