"""The teacher and student LightningModules, the Gaussian decoders and their body."""

from lyra.models.blocks import BlockStack, BodyConfig
from lyra.models.decoders import (
    DynamicGaussianDecoder,
    GaussianActivationConfig,
    GaussianDecoder,
    StaticGaussianDecoder,
)
from lyra.models.init_weights import load_decoder_weights
from lyra.models.student import StudentModule
from lyra.models.teacher import TeacherModule

__all__ = [
    "BlockStack",
    "BodyConfig",
    "DynamicGaussianDecoder",
    "GaussianActivationConfig",
    "GaussianDecoder",
    "StaticGaussianDecoder",
    "StudentModule",
    "TeacherModule",
    "load_decoder_weights",
]
