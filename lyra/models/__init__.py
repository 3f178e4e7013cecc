"""The teacher and student LightningModules, the Gaussian decoders, their body and the checkpoint reader."""

from lyra.models.blocks import BlockStack, BodyConfig
from lyra.models.checkpoints import DecoderInfo, load_decoder, load_decoder_weights
from lyra.models.decoders import (
    DynamicGaussianDecoder,
    GaussianActivationConfig,
    GaussianDecoder,
    StaticGaussianDecoder,
)
from lyra.models.student import StudentModule
from lyra.models.teacher import TeacherModule

__all__ = [
    "BlockStack",
    "BodyConfig",
    "DecoderInfo",
    "DynamicGaussianDecoder",
    "GaussianActivationConfig",
    "GaussianDecoder",
    "StaticGaussianDecoder",
    "StudentModule",
    "TeacherModule",
    "load_decoder",
    "load_decoder_weights",
]
