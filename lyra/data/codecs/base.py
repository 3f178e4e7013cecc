"""The video codec interface: RGB clips <-> latents ``[B, C, T', h, w]`` like a diffusers video VAE.

Every codec compresses ``space_factor`` x ``space_factor`` pixels into one latent pixel and
``time_factor`` frames into one latent frame. A causal codec (Wan, CogVideoX, Hunyuan, LTX, Cosmos)
keeps the first frame alone, so ``T' = 1 + (T - 1) / time_factor``; a non-causal one groups all
frames, ``T' = T / time_factor``. ``encode`` / ``decode`` validate their inputs here, once, and
hand clean tensors to the subclass's ``_encode`` / ``_decode``.
"""

from __future__ import annotations

import abc
import operator

import torch
from torch import Tensor, nn

from lyra.data.codecs.frames import frame_rule, latent_frame_count


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None


class VideoCodec(nn.Module, abc.ABC):
    """Abstract video autoencoder with Lyra's API edge: RGB float in [0, 1], channels-last."""

    latent_channels: int
    time_factor: int
    space_factor: int
    causal_first_frame: bool

    @classmethod
    def spec_from_init_args(cls, **init_args) -> dict:
        """The codec facts a decoder needs, from the codec's constructor arguments (what a config
        holds). The default builds the codec; codecs that load weights override it to read only
        their configuration."""
        return cls(**init_args).spec()

    def spec(self) -> dict:
        return {"latent_channels": self.latent_channels, "time_factor": self.time_factor,
                "space_factor": self.space_factor, "causal_first_frame": bool(self.causal_first_frame)}

    # ---- frame and size bookkeeping -------------------------------------------------------
    def _latent_frames_ok(self, latent_frames: int) -> bool:
        """Extra constraint on T' beyond the grouping rule (CogVideoX needs odd T')."""
        return latent_frames >= 1

    def _frames_ok(self, num_frames: int) -> bool:
        try:
            latent = latent_frame_count(num_frames, self.time_factor, self.causal_first_frame)
        except ValueError:
            return False
        return self._latent_frames_ok(latent)

    def _frame_rule(self) -> str:
        return frame_rule(self.time_factor, self.causal_first_frame)

    def valid_frame_counts(self, max_frames: int = 128) -> list[int]:
        return [n for n in range(1, max_frames + 1) if self._frames_ok(n)]

    def latent_frames(self, num_frames: int) -> int:
        num_frames = _as_int("num_frames", num_frames)
        if not self._frames_ok(num_frames):
            valid = self.valid_frame_counts(max(num_frames, 1) + 4 * self.time_factor)
            below = [n for n in valid if n < num_frames][-2:]
            above = [n for n in valid if n > num_frames][:2]
            raise ValueError(
                f"{type(self).__name__} cannot encode {num_frames} frames: it takes {self._frame_rule()}. "
                f"Nearest valid counts: {below + above}; trim or pad the clip to one of them."
            )
        return latent_frame_count(num_frames, self.time_factor, self.causal_first_frame)

    def pixel_frames(self, latent_frames: int) -> int:
        latent_frames = _as_int("latent_frames", latent_frames)
        if not self._latent_frames_ok(latent_frames):
            ok = [t for t in range(1, latent_frames + 4) if self._latent_frames_ok(t)]
            raise ValueError(f"{type(self).__name__} cannot decode {latent_frames} latent frames; "
                             f"valid latent frame counts include {ok}")
        if self.causal_first_frame:
            return 1 + (latent_frames - 1) * self.time_factor
        return latent_frames * self.time_factor

    def _check_size(self, name: str, size: int) -> None:
        sf = self.space_factor
        if size < 1 or size % sf:
            lo, hi = max(sf, size // sf * sf), (size // sf + 1) * sf
            raise ValueError(f"{name} {size} is not a positive multiple of space_factor {sf} "
                             f"({type(self).__name__}); resize or crop to e.g. {sorted({lo, hi})}")

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:  # (C, T', h, w)
        height, width = _as_int("height", height), _as_int("width", width)
        self._check_size("height", height)
        self._check_size("width", width)
        t = self.latent_frames(num_frames)
        return (self.latent_channels, t, height // self.space_factor, width // self.space_factor)

    # ---- validated entry points -------------------------------------------------------------
    def _validate_rgb(self, rgb: Tensor) -> None:  # [B, T, H, W, 3]
        if not isinstance(rgb, Tensor):
            raise TypeError(f"rgb must be a torch.Tensor [B, T, H, W, 3], got {type(rgb).__name__}")
        if rgb.ndim != 5 or rgb.shape[-1] != 3:
            hint = " (channels-first? permute to [B, T, H, W, 3])" if rgb.ndim == 5 and rgb.shape[2] == 3 else ""
            raise ValueError(f"rgb must have shape [B, T, H, W, 3], got {tuple(rgb.shape)}{hint}; "
                             "add a batch dim with rgb[None] for a single clip")
        if not rgb.is_floating_point():
            raise TypeError(f"rgb must be float in [0, 1], got {rgb.dtype}; convert uint8 with rgb.float() / 255")
        self.latent_shape(rgb.shape[1], rgb.shape[2], rgb.shape[3])
        rgb = rgb.detach()
        if not torch.isfinite(rgb).all():
            raise ValueError("rgb contains NaN or Inf; replace them (e.g. torch.nan_to_num) before encoding")
        lo, hi = float(rgb.min()), float(rgb.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"rgb must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                             "map [-1, 1] data with (x + 1) / 2 and [0, 255] data with x / 255")

    def _validate_latents(self, latents: Tensor) -> None:  # [B, C, T', h, w]
        if not isinstance(latents, Tensor):
            raise TypeError(f"latents must be a torch.Tensor [B, C, T', h, w], got {type(latents).__name__}")
        if latents.ndim != 5:
            raise ValueError(f"latents must have shape [B, C, T', h, w], got {tuple(latents.shape)}; "
                             "add a batch dim with latents[None] for a single clip")
        if latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents have {latents.shape[1]} channels but {type(self).__name__} uses "
                             f"{self.latent_channels}; decode them with the codec that encoded them")
        if not latents.is_floating_point():
            raise TypeError(f"latents must be a float tensor, got {latents.dtype}")
        self.pixel_frames(latents.shape[2])
        if not torch.isfinite(latents.detach()).all():
            raise ValueError("latents contain NaN or Inf; check the model that produced them "
                             "(or torch.nan_to_num) before decoding")

    def encode(self, rgb: Tensor) -> Tensor:  # [B, T, H, W, 3] in [0, 1] -> [B, C, T', h, w]
        self._validate_rgb(rgb)
        return self._encode(rgb)

    def decode(self, latents: Tensor) -> Tensor:  # [B, C, T', h, w] -> [B, T, H, W, 3] in [0, 1]
        self._validate_latents(latents)
        return self._decode(latents)

    @abc.abstractmethod
    def _encode(self, rgb: Tensor) -> Tensor:  # [B, T, H, W, 3] -> [B, C, T', h, w]
        ...

    @abc.abstractmethod
    def _decode(self, latents: Tensor) -> Tensor:  # [B, C, T', h, w] -> [B, T, H, W, 3]
        ...

    def extra_repr(self) -> str:
        return (f"latent_channels={self.latent_channels}, time_factor={self.time_factor}, "
                f"space_factor={self.space_factor}, causal_first_frame={self.causal_first_frame}")
