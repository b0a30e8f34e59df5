"""Flax models: the generic Keras-graph module and hand-written ports of the three CNNs."""
from jaxlift.models.generic import KerasModel, LayerSpec, ModelGraph

__all__ = ["KerasModel", "LayerSpec", "ModelGraph"]
