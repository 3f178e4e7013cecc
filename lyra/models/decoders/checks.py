"""What a decoder's ``forward`` accepts: every input checked first, errors naming the shape and the fix."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lyra.data.codecs.frames import check_clip_size, latent_frame_count


def check_decoder_inputs(
    config: Any,  # the decoder's config
    dynamic: bool,
    latents: Tensor,  # [B, V, C, T', h, w]
    c2w: Tensor,  # [B, V, T, 4, 4]
    K: Tensor,  # [B, V, T, 3, 3]
    input_depth: Tensor | None = None,  # static [B, H, W]; dynamic [B, T, H, W]
    input_image: Tensor | None = None,  # static [B, H, W, 3]; dynamic [B, T, H, W, 3]
) -> None:
    cfg = config
    if latents.ndim != 6:
        raise ValueError(f"latents must be [B, V, C, T', h, w], got {tuple(latents.shape)}")
    B, V, C, Tl, h, w = latents.shape
    if C != cfg.latent_channels:
        raise ValueError(f"latents have {C} channels but the decoder was built for {cfg.latent_channels}; "
                         "set latent_channels to the codec's channel count")
    if c2w.ndim != 5 or c2w.shape[:2] != (B, V) or c2w.shape[-2:] != (4, 4) or K.shape[:3] != c2w.shape[:3]:
        raise ValueError(f"c2w must be [B, V, T, 4, 4] and K [B, V, T, 3, 3] matching latents' B={B}, V={V}; "
                         f"got {tuple(c2w.shape)} and {tuple(K.shape)}")
    T = c2w.shape[2]
    try:
        want = latent_frame_count(T, cfg.time_factor, cfg.causal_first_frame)
    except ValueError as err:
        raise ValueError(f"{err}; check the codec settings or the frame count") from None
    if want != Tl:
        raise ValueError(f"{T} camera frames make {want} latent frames with time factor {cfg.time_factor} "
                         f"(causal first frame: {cfg.causal_first_frame}) but the latents have {Tl}; "
                         "the latents' shape does not fit the codec's factors")
    try:
        check_clip_size(None, h * cfg.space_factor, w * cfg.space_factor, cfg.time_factor, cfg.space_factor,
                        cfg.causal_first_frame, cfg.patch_size)
    except ValueError as err:
        raise ValueError(f"latents of {h}x{w} pixels do not fit the decoder: image {err}") from None
    for name, t in (("latents", latents), ("c2w", c2w), ("K", K)):
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or Inf; fix the clip (the teacher or codec produced it)")
    if (K[..., 0, 0] <= 0).any() or (K[..., 1, 1] <= 0).any():
        raise ValueError("K has a zero or negative focal length")
    frames, dims = ((T,), "[B, T, H, W]") if dynamic else ((), "[B, H, W]")
    what = "every frame of trajectory 0" if dynamic else "the first source frame"
    if cfg.input_depth and input_depth is None:
        raise ValueError(f"this decoder was built with input_depth=True and needs `input_depth` {dims}, the "
                         f"z-depth of {what} (StudentModule passes it from the clip's src_depth)")
    if not cfg.input_depth and input_depth is not None:
        raise ValueError("`input_depth` was given to a decoder built without input_depth; drop it or build the "
                         "decoder with input_depth=True")
    if input_depth is not None:
        want_shape = (B, *frames, h * cfg.space_factor, w * cfg.space_factor)
        if tuple(input_depth.shape) != want_shape:
            raise ValueError(f"input_depth must be {dims} = {want_shape} (the source frames' size), "
                             f"got {tuple(input_depth.shape)}")
        if not torch.isfinite(input_depth).all() or (input_depth < 0).any():
            raise ValueError("input_depth must be finite and >= 0 (0 = unknown)")
    if cfg.input_image_gaussians != (input_image is not None):
        raise ValueError(f"a decoder built with input_image_gaussians=True needs `input_image` {dims[:-1]}, 3], "
                         f"the RGB of {what} (StudentModule passes the clip's input_rgb); others take none")
    if input_image is not None:
        want_shape = (B, *frames, h * cfg.space_factor, w * cfg.space_factor, 3)
        if tuple(input_image.shape) != want_shape:
            raise ValueError(f"input_image must be {dims[:-1]}, 3] = {want_shape}, got {tuple(input_image.shape)}")
        if not torch.isfinite(input_image).all() or input_image.min() < 0 or input_image.max() > 1:
            raise ValueError("input_image must be finite RGB in [0, 1]")


def check_times(
    time: Tensor | None,  # [B, V, T]
    target_time: Tensor | None,  # [B, M]
    shape: tuple[int, int, int],  # (B, V, T)
) -> None:
    B = shape[0]
    if time is None or target_time is None:
        raise ValueError("DynamicGaussianDecoder needs `time` [B, V, T] (source frames) and `target_time` "
                         "[B, M]; for a static scene use StaticGaussianDecoder")
    if tuple(time.shape) != tuple(shape) or target_time.ndim != 2 or target_time.shape[0] != B:
        raise ValueError(f"time must be {tuple(shape)} and target_time [B={B}, M]; got {tuple(time.shape)} "
                         f"and {tuple(target_time.shape)}")
    for name, t in (("time", time), ("target_time", target_time)):
        if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
            raise ValueError(f"{name} must be finite and in [0, 1] (scene time is normalised)")
