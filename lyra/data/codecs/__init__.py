"""Video codecs: RGB clips ``[B, T, H, W, 3]`` in [0, 1] <-> teacher latents ``[B, C, T', h, w]``."""

from lyra.data.codecs.base import VideoCodec
from lyra.data.codecs.dct import DEFAULT_LATENT_CHANNELS, DCTCodec
from lyra.data.codecs.diffusers_vae import (
    SUPPORTED_VAES,
    DiffusersVideoVAE,
    load_video_vae,
)

__all__ = ["DEFAULT_LATENT_CHANNELS", "SUPPORTED_VAES", "DCTCodec", "DiffusersVideoVAE", "VideoCodec", "load_video_vae"]
