"""jaxlift: DeepLIFT (Rescale and RevealCancel) as a JAX program transformation."""
from jaxlift.api import attribute, layer, multipliers, token_scores
from jaxlift.baselines import completeness_gap, flag_gaps
from jaxlift.dataset import attribute_dataset, open_scores
from jaxlift.errors import JaxliftError, UnsupportedPrimitiveError
from jaxlift.hypothetical import hypothetical_contributions
from jaxlift.io.keras_files import keras_info, load_keras
from jaxlift.io.keras_h5 import load_keras_h5, save_keras_h5
from jaxlift.targets import class_difference, pre_activation, softmax_normalized

__all__ = ["attribute", "multipliers", "layer", "token_scores", "JaxliftError",
           "UnsupportedPrimitiveError", "load_keras", "load_keras_h5", "save_keras_h5",
           "keras_info",
           "class_difference", "softmax_normalized", "pre_activation",
           "hypothetical_contributions", "completeness_gap", "flag_gaps",
           "attribute_dataset", "open_scores"]
