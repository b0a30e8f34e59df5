"""jaxlift: DeepLIFT (Rescale and RevealCancel) as a JAX program transformation.

Everything here is imported on first use (PEP 562 module ``__getattr__``): ``import jaxlift``
costs almost nothing, ``jaxlift.attribute`` imports JAX and the interpreter the first time it is
read, and the submodules are attributes too (``jaxlift.references.zeros_like``,
``jaxlift.concepts.top_features``, ``jaxlift.viz``, …) without an ``import jaxlift.references``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from jaxlift._lazy import lazy_attributes

# public name -> the module that defines it
_EXPORTS = {
    "attribute": "jaxlift.api", "multipliers": "jaxlift.api", "layer": "jaxlift.markers",
    "token_scores": "jaxlift.api",
    "completeness_gap": "jaxlift.gaps", "flag_gaps": "jaxlift.gaps",
    # the errors (all under JaxliftError) and the one warning, wherever they are defined
    "JaxliftError": "jaxlift.errors", "UnsupportedPrimitiveError": "jaxlift.errors",
    "InputValueError": "jaxlift.errors", "InputTypeError": "jaxlift.errors",
    "CompletenessError": "jaxlift.errors", "CompletenessWarning": "jaxlift.errors",
    "NonFiniteScoresError": "jaxlift.errors", "KerasFormatError": "jaxlift.io.keras_config",
    "SourceError": "jaxlift.io.sources", "ScoresStoreError": "jaxlift.io.scores_store",
    "FingerprintMismatchError": "jaxlift.io.scores_store", "CLIError": "jaxlift.errors",
    "UsageError": "jaxlift.errors",
    "LayerScores": "jaxlift.methods.interpreted",
    "hypothetical_contributions": "jaxlift.hypothetical",
    "genomics_scores": "jaxlift.hypothetical",
    "keras_info": "jaxlift.io.keras_files", "load_keras": "jaxlift.io.keras_files",
    "load_keras_h5": "jaxlift.io.keras_h5", "save_keras_h5": "jaxlift.io.keras_h5",
    "class_difference": "jaxlift.targets", "pre_activation": "jaxlift.targets",
    "softmax_normalized": "jaxlift.targets",
    "from_nnx": "jaxlift.adapters", "from_equinox": "jaxlift.adapters",
    "from_linen": "jaxlift.adapters", "module_paths": "jaxlift.named_layers",
    "surrogate": "jaxlift.surrogates",
    "attribute_dataset": "jaxlift.dataset", "open_scores": "jaxlift.io.scores_store",
}

# submodules reachable as attributes of the package
_SUBMODULES = ("adapters", "api", "certificate", "dataset", "gaps", "surrogates", "chunking", "cli", "concepts",
               "errors", "hypothetical", "interpreter", "io", "methods", "models", "named_layers", "pipeline",
               "program", "references", "rules", "targets", "validation", "viz")

__all__ = ["attribute", "multipliers", "layer", "token_scores", "JaxliftError",
           "UnsupportedPrimitiveError", "InputValueError", "InputTypeError", "CompletenessError",
           "CompletenessWarning", "NonFiniteScoresError", "KerasFormatError", "SourceError",
           "ScoresStoreError", "FingerprintMismatchError", "CLIError", "UsageError", "LayerScores",
           "load_keras", "load_keras_h5", "save_keras_h5", "keras_info",
           "class_difference", "softmax_normalized", "pre_activation",
           "hypothetical_contributions", "genomics_scores", "completeness_gap", "flag_gaps",
           "from_nnx", "from_equinox", "from_linen", "module_paths", "surrogate",
           "attribute_dataset", "open_scores"]


__getattr__, __dir__ = lazy_attributes(__name__, globals(), _EXPORTS, _SUBMODULES)

if TYPE_CHECKING:  # what static tools see; nothing is imported at run time
    from jaxlift.adapters import from_equinox, from_linen, from_nnx  # noqa: F401
    from jaxlift.api import attribute, multipliers, token_scores  # noqa: F401
    from jaxlift.markers import layer  # noqa: F401
    from jaxlift.gaps import completeness_gap, flag_gaps  # noqa: F401
    from jaxlift.errors import (CompletenessError, CompletenessWarning,  # noqa: F401
                                CLIError, InputTypeError, InputValueError, JaxliftError,
                                NonFiniteScoresError, UnsupportedPrimitiveError, UsageError)
    from jaxlift.io.keras_config import KerasFormatError  # noqa: F401
    from jaxlift.io.scores_store import FingerprintMismatchError, ScoresStoreError  # noqa: F401
    from jaxlift.io.sources import SourceError  # noqa: F401
    from jaxlift.methods.interpreted import LayerScores  # noqa: F401
    from jaxlift.hypothetical import (genomics_scores,  # noqa: F401
                                      hypothetical_contributions)
    from jaxlift.io.keras_files import keras_info, load_keras  # noqa: F401
    from jaxlift.io.keras_h5 import load_keras_h5, save_keras_h5  # noqa: F401
    from jaxlift.dataset import attribute_dataset  # noqa: F401
    from jaxlift.io.scores_store import open_scores  # noqa: F401
    from jaxlift.named_layers import module_paths  # noqa: F401
    from jaxlift.surrogates import surrogate  # noqa: F401
    from jaxlift.targets import (class_difference, pre_activation,  # noqa: F401
                                 softmax_normalized)
