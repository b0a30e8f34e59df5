"""jaxlift: DeepLIFT (Rescale and RevealCancel) as a JAX program transformation."""
from jaxlift.api import attribute, layer, multipliers
from jaxlift.errors import JaxliftError, UnsupportedPrimitiveError

__all__ = ["attribute", "multipliers", "layer", "JaxliftError", "UnsupportedPrimitiveError"]
