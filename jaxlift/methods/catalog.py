"""The methods that stand on their own, in the order of the table: every entry of
:data:`jaxlift.methods.METHODS` but the wrappers around another method (SmoothGrad), which
look their base up here. One list: the table is this list and its wrappers."""
from __future__ import annotations

from jaxlift.methods import (deeplift, grad_times_input, gradient, guided_backprop,
                             integrated_gradients, ism, kernel_shap, lime, lrp_epsilon, occlusion,
                             shapley_sampling)

BASE_METHODS = (
    deeplift.RESCALE,
    deeplift.REVEAL_CANCEL,
    deeplift.GENOMICS_DEFAULT,
    gradient.METHOD,
    grad_times_input.METHOD,
    guided_backprop.METHOD,
    integrated_gradients.METHOD,
    occlusion.METHOD,
    shapley_sampling.METHOD,
    lrp_epsilon.METHOD,
    lime.METHOD,
    kernel_shap.METHOD,
    ism.METHOD,
)
