"""Image-quality metrics of the evaluation protocol (docs/evaluation.md)."""

from lyra.metrics.image import ImageMetrics, psnr, ssim
