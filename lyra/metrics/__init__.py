"""Image-quality metrics of the evaluation protocol (docs/evaluation.md)."""

from lyra.metrics.clip_score import CLIPScore, clip_score
from lyra.metrics.image import ImageMetrics, psnr, ssim

__all__ = ["CLIPScore", "ImageMetrics", "clip_score", "psnr", "ssim"]
