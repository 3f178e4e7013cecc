"""Gaussian decoders (the student's networks)."""

from lyra.models.decoders.activations import GaussianActivationConfig, activate_gaussians, colour_logits
from lyra.models.decoders.copies import copy_features
from lyra.models.decoders.dynamic import DynamicGaussianDecoder
from lyra.models.decoders.input_depth import perturb_depth, warp_depth
from lyra.models.decoders.static import GaussianDecoder, StaticGaussianDecoder

__all__ = ["DynamicGaussianDecoder", "GaussianActivationConfig", "GaussianDecoder", "StaticGaussianDecoder",
           "activate_gaussians", "colour_logits", "copy_features", "perturb_depth", "warp_depth"]
