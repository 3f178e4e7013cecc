"""Raw head channels -> Gaussian parameters, with the activations of the Lyra paper's decoder.

The 12 channels per Gaussian are, in order: distance (1), RGB (3), scale (3), quaternion (4),
opacity (1). Each Gaussian sits on its pixel's camera ray at the predicted distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lyra.render.gaussians import Gaussians

RAW_CHANNELS = 12


ScaleMode = Literal["absolute", "footprint"]
DEFAULT_SCALE_BIAS = {"absolute": 1.0 - math.log(0.3), "footprint": math.log(2.0)}


@dataclass
class GaussianActivationConfig:
    """Defaults are the reference values; small CPU scenes may want a nearer ``far``.

    ``scale_mode``: ``"absolute"`` (the paper): scale = min(exp(x - scale_bias), max_scale) in
    scene units. ``"footprint"``: scale = min(f exp(x - scale_bias), max_scale) with f the width of
    the Gaussian's pixel block at its distance (distance x block pixels / focal), so at x = 0 a
    Gaussian covers half its block whatever the scene's scale (default bias ln 2).
    """

    near: float = 0.1  # distance = near (1 - w) + far w, w = sigmoid(x - distance_bias)
    far: float = 500.0
    distance_bias: float = 1.65
    max_scale: float = 0.3
    scale_bias: float | None = None  # None: the mode's default (DEFAULT_SCALE_BIAS)
    opacity_bias: float = 2.0  # opacity = sigmoid(x - opacity_bias)
    scale_mode: ScaleMode = "absolute"
    prior_log_range: float = 0.5  # with a prior distance d0: distance = d0 exp(prior_log_range tanh(x))

    def __post_init__(self) -> None:
        if self.scale_mode not in DEFAULT_SCALE_BIAS:
            raise ValueError(f"scale_mode must be one of {list(DEFAULT_SCALE_BIAS)}, got {self.scale_mode!r}")
        if self.scale_bias is None:
            self.scale_bias = DEFAULT_SCALE_BIAS[self.scale_mode]
        if not 0 < self.near < self.far:
            raise ValueError(f"need 0 < near < far, got near={self.near}, far={self.far}")
        if not self.prior_log_range > 0:
            raise ValueError(f"prior_log_range must be > 0, got {self.prior_log_range}")


# The colour activation is 0.5 tanh(x) + 0.5; its inverse is clamped so black and white stay
# reachable by a finite raw value.
_COLOR_CLAMP = 0.98


def colour_logits(rgb: Tensor) -> Tensor:  # [..., 3] in [0, 1] -> [..., 3] raw colour channels
    """The raw colour that ``activate_gaussians`` turns back into ``rgb`` (to 1 %)."""
    return torch.atanh((2 * rgb - 1).clamp(-_COLOR_CLAMP, _COLOR_CLAMP))


def colours_from_logits(x: Tensor) -> Tensor:  # [..., 3] raw colour channels -> [..., 3] in [0, 1]
    return 0.5 * torch.tanh(x) + 0.5


def activate_gaussians(
    raw: Tensor,  # [..., N, 12]
    origins: Tensor,  # [..., N, 3] ray origins (world)
    dirs: Tensor,  # [..., N, 3] unit ray directions (world)
    cfg: GaussianActivationConfig,
    footprint: Tensor | None = None,  # [..., N] block width per unit distance (footprint scale mode)
    prior: Tensor | None = None,  # [..., N] a known distance along each ray (an input depth), 0 = none
) -> Gaussians:
    if raw.shape[-1] != RAW_CHANNELS:
        raise ValueError(f"raw Gaussian channels must be {RAW_CHANNELS}, got {raw.shape[-1]}")
    dist_x, rgb_x, scale_x, quat_x, opac_x = raw.split([1, 3, 3, 4, 1], dim=-1)
    w = torch.sigmoid(dist_x - cfg.distance_bias)
    distance = cfg.near * (1 - w) + cfg.far * w
    if prior is not None:  # where the distance is known, the raw channel only corrects it, within bounds
        corrected = prior[..., None].to(raw.dtype) * torch.exp(cfg.prior_log_range * torch.tanh(dist_x))
        distance = torch.where(prior[..., None] > 0, corrected, distance)
    means = origins + dirs * distance
    colors = colours_from_logits(rgb_x)
    if cfg.scale_mode == "footprint":
        if footprint is None:
            raise ValueError("scale_mode='footprint' needs each Gaussian's pixel footprint")
        scales = torch.exp(scale_x - cfg.scale_bias) * (distance * footprint[..., None])
    else:
        scales = torch.exp(scale_x - cfg.scale_bias)
    scales = scales.clamp_max(cfg.max_scale)
    # A tiny constant keeps the quaternion defined when the head outputs zeros.
    quats = F.normalize(quat_x + torch.tensor([1e-6, 0, 0, 0], dtype=raw.dtype, device=raw.device), dim=-1)
    opacities = torch.sigmoid(opac_x[..., 0] - cfg.opacity_bias)
    return Gaussians(means, quats, scales, opacities, colors, check_values=False)
