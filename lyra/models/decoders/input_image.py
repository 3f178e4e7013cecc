"""One Gaussian per pixel of the input image: an optional layer of the static decoder.

Every trajectory of a Lyra clip starts at the input image, and GEN3C's 3D cache is that image
lifted with its depth. The decoder's own Gaussians are one per ``space_factor / density`` pixel
block, coloured through the latents, so they cannot hold the input image's pixel detail; measured
on the procedural teacher they reproduce their own source views at ~25 dB while the image warped
with its depth shows held-out views at 25-29 dB (docs/benchmarks.md, "Student quality"). A decoder
built with ``input_image_gaussians=True`` adds one Gaussian per input pixel, on its pixel ray at the
input depth (sky: at ``far``), coloured by the pixel, nearly opaque, about a pixel wide; a
transposed convolution from the mixed tokens of the input frame corrects every one of its channels.
The correction starts at zero, so training starts from the lifted image and learns what to change:
colour and opacity where the image is wrong from other views, size where views come closer, depth
within the input depth's bound.

Pixel-aligned Gaussians coloured from the image are the layout of feed-forward splatting models
(Splatter Image, pixelSplat, Flash3D); Lyra's decoder does not have them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyra.models.decoders.activations import RAW_CHANNELS, GaussianActivationConfig, activate_gaussians, colour_logits
from lyra.render.cameras import pixel_rays, ray_distance
from lyra.render.gaussians import Gaussians

# Raw channel layout (activations.py): distance, RGB (3), scale (3), quaternion (4), opacity.
_OPACITY = 11


class InputImageGaussians(nn.Module):
    """Pixel-aligned Gaussians of the input frame, corrected from its tokens.

    Args:
        width: channels of the decoder's tokens.
        pixels_per_token: input pixels per token along each side (``patch_size * space_factor``).
        opacity_bias: the decoder's opacity bias (opacity = sigmoid(x - opacity_bias)).
        initial_opacity: the opacity every input Gaussian starts at.
        image_features: channels of a small convolutional net on the image itself (RGB, log depth,
            known depth: two 3 x 3 convolutions) whose zero-initialised output adds a per-pixel
            correction (sharpening against the splats' blur, edges); 0: none.
    """

    def __init__(self, width: int, pixels_per_token: int, opacity_bias: float, initial_opacity: float = 0.9,
                 image_features: int = 0) -> None:
        super().__init__()
        if not 0 < initial_opacity < 1:
            raise ValueError(f"initial_opacity must be in (0, 1), got {initial_opacity}")
        if image_features < 0:
            raise ValueError(f"image_features must be >= 0 channels, got {image_features}")
        self.correction = nn.ConvTranspose2d(width, RAW_CHANNELS, pixels_per_token, stride=pixels_per_token)
        self.image_net = None
        if image_features:
            self.image_net = nn.Sequential(nn.Conv2d(5, image_features, 3, padding=1, padding_mode="replicate"),
                                           nn.GELU(),
                                           nn.Conv2d(image_features, image_features, 3, padding=1, padding_mode="replicate"),
                                           nn.GELU(), nn.Conv2d(image_features, RAW_CHANNELS, 1))
            nn.init.zeros_(self.image_net[-1].weight)
            nn.init.zeros_(self.image_net[-1].bias)
        nn.init.zeros_(self.correction.weight)  # starts at the lifted image; the weights still get gradients
        with torch.no_grad():
            self.correction.bias.zero_()
            self.correction.bias[_OPACITY] = opacity_bias + math.log(initial_opacity / (1 - initial_opacity))

    def forward(
        self,
        tokens: Tensor,  # [B, D, h', w'] the input frame's mixed tokens
        image: Tensor,  # [B, H, W, 3] the input image in [0, 1]
        depth: Tensor,  # [B, H, W] its z-depth, 0 = unknown (sky)
        c2w: Tensor,  # [B, 4, 4] the input camera
        K: Tensor,  # [B, 3, 3] for (H, W)
        activation: GaussianActivationConfig,
        unit: Tensor,  # [B] the scene's length unit (far is in it)
    ) -> Gaussians:  # [B, H*W], orientations in the input camera's frame
        B, H, W, _ = image.shape
        raw = self.correction(tokens).permute(0, 2, 3, 1)  # [B, H, W, 12]
        if raw.shape[1:3] != (H, W):
            raise ValueError(f"the input frame's tokens cover {tuple(raw.shape[1:3])} pixels, the image is {(H, W)}")
        raw = raw + F.pad(colour_logits(image.to(raw.dtype)), (1, RAW_CHANNELS - 4))  # the pixel's colour
        if self.image_net is not None:
            known = (depth > 0).to(raw.dtype)
            log_depth = torch.where(depth > 0, depth, torch.ones_like(depth)).log().to(raw.dtype) * known
            net_in = torch.cat([image.to(raw.dtype), log_depth[..., None], known[..., None]], -1).permute(0, 3, 1, 2)
            raw = raw + self.image_net(net_in).permute(0, 2, 3, 1)
        origins, dirs = pixel_rays(c2w, K, H, W)  # [B, H, W, 3]
        distance = ray_distance(depth, dirs, c2w)
        sky = activation.far * unit[:, None, None].to(distance.dtype)  # unknown depth: the far bound
        distance = torch.where(depth > 0, distance, sky.expand_as(distance))
        footprint = (1.0 / torch.sqrt(K[:, 0, 0] * K[:, 1, 1]))[:, None].expand(B, H * W)  # a pixel per unit distance
        return activate_gaussians(raw.reshape(B, H * W, RAW_CHANNELS), origins.reshape(B, H * W, 3),
                                  dirs.reshape(B, H * W, 3), activation, footprint, unit[:, None],
                                  distance.reshape(B, H * W))
