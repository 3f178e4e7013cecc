"""lyra: generative 3D/4D Gaussian scenes from video-diffusion self-distillation."""

__version__ = "0.1.0"
