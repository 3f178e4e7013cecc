"""Image-quality metrics of the evaluation protocol (docs/evaluation.md)."""

from lyra.metrics.clip_score import CLIPScore, clip_score
from lyra.metrics.image import ImageMetrics, mse_to_psnr, psnr, ssim

__all__ = ["CLIPScore", "ImageMetrics", "clip_score", "mse_to_psnr", "psnr", "ssim"]
