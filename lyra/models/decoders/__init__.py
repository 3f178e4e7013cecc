"""Gaussian decoders (the student's networks) and the parts they are built of."""

from lyra.models.decoders.activations import (
           GaussianActivationConfig,
           activate_gaussians,
           colour_logits,
)
from lyra.models.decoders.base import GaussianDecoder
from lyra.models.decoders.dynamic import DynamicGaussianDecoder
from lyra.models.decoders.head import GaussianHead
from lyra.models.decoders.input_depth import perturb_depth, warp_depth
from lyra.models.decoders.input_frames import (
           InputDepthReader,
           InputFrames,
           nearest_input_frames,
)
from lyra.models.decoders.input_image import InputImageGaussians
from lyra.models.decoders.layout import GaussianLayout
from lyra.models.decoders.static import StaticGaussianDecoder
from lyra.models.decoders.tokens import TimeEmbed, TokenEmbed

__all__ = ["DynamicGaussianDecoder", "GaussianActivationConfig", "GaussianDecoder", "GaussianHead", "GaussianLayout",
           "InputDepthReader", "InputFrames", "InputImageGaussians", "StaticGaussianDecoder", "TimeEmbed",
           "TokenEmbed", "activate_gaussians", "colour_logits", "nearest_input_frames", "perturb_depth", "warp_depth"]
