"""DiffusersVideoVAE: any diffusers video autoencoder, loaded from a local directory, as a VideoCodec.

At our API edge images are [0, 1] channels-last; diffusers VAEs take [-1, 1] ``[B, 3, T, H, W]``.
Latents leave ``encode`` in the normalised space the family's diffusion model works in (what the
student reads) and ``decode`` undoes that normalisation first:

==========================  ====================================================================
AutoencoderKLWan            (z - config.latents_mean) / config.latents_std
AutoencoderKLCosmos         (z - mean[:, t]) / std[:, t], config.latents_mean/std viewed as
                            [C, frames] (identity when absent; frames past the table reuse its
                            last column); the scheduler's sigma_data is not applied
AutoencoderKLLTXVideo       (z - latents_mean) * scaling_factor / latents_std (model buffers)
AutoencoderKLCogVideoX      (z - shift_factor) * scaling_factor (shift 0 when unset)
AutoencoderKLHunyuanVideo   z * scaling_factor
==========================  ====================================================================

``encode`` takes the posterior mode, so it is deterministic. All five are causal in time (the
first frame is encoded alone); CogVideoX additionally needs an odd number of latent frames
(``T = 1 + 8k``), because it encodes and decodes in batches of frames.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import diffusers
import torch
from torch import Tensor, nn

from lyra.data.codecs.base import VideoCodec

SUPPORTED_VAES = (
    "AutoencoderKLWan",
    "AutoencoderKLCogVideoX",
    "AutoencoderKLLTXVideo",
    "AutoencoderKLCosmos",
    "AutoencoderKLHunyuanVideo",
)


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    parsed = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(parsed, torch.dtype) or not parsed.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype such as 'float32' or 'bfloat16', got {dtype!r}")
    return parsed


def load_video_vae(path: str | os.PathLike, dtype: torch.dtype | str = torch.float32) -> nn.Module:
    """Instantiate the autoencoder saved in ``path`` (or ``path/vae``) by its ``_class_name``."""
    path = Path(path)
    supported = ", ".join(SUPPORTED_VAES)
    if not path.is_dir():
        raise FileNotFoundError(f"no VAE directory at {path}; pass a local folder written by "
                                f"save_pretrained (a diffusers pipeline folder with vae/ also works)")
    if not (path / "config.json").is_file() and (path / "vae" / "config.json").is_file():
        path = path / "vae"  # a whole pipeline folder: use its VAE
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ValueError(f"{path} has no config.json; point to a folder written by save_pretrained of "
                         f"one of the supported video autoencoders: {supported}")
    try:
        name = json.loads(config_file.read_text()).get("_class_name")
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{config_file} is not a JSON object ({err}); re-save the VAE with save_pretrained") from err
    if name not in SUPPORTED_VAES:
        raise ValueError(f"{config_file} names _class_name={name!r}, which DiffusersVideoVAE does not "
                         f"support; supported classes: {supported}")

    return getattr(diffusers, name).from_pretrained(path, torch_dtype=_as_dtype(dtype), local_files_only=True)


def _family(model: nn.Module) -> str:
    for name in SUPPORTED_VAES:
        if isinstance(model, getattr(diffusers, name)):
            return name
    raise TypeError(f"{type(model).__name__} is not a supported video autoencoder; "
                    f"supported: {', '.join(SUPPORTED_VAES)}")


def _compression(model: nn.Module, family: str) -> tuple[int, int, int]:  # (channels, time, space)
    cfg = model.config
    if family == "AutoencoderKLWan":
        # Fall back to the architecture when the config leaves the factors unset.
        t = cfg.scale_factor_temporal or 2 ** sum(cfg.temperal_downsample)
        s = cfg.scale_factor_spatial or 2 ** (len(cfg.dim_mult) - 1) * (cfg.patch_size or 1)
        return cfg.z_dim, int(t), int(s)
    if family == "AutoencoderKLCogVideoX":
        return cfg.latent_channels, int(cfg.temporal_compression_ratio), 2 ** (len(cfg.block_out_channels) - 1)
    if family == "AutoencoderKLCosmos":
        return cfg.latent_channels, int(cfg.temporal_compression_ratio), int(cfg.spatial_compression_ratio)
    return cfg.latent_channels, int(model.temporal_compression_ratio), int(model.spatial_compression_ratio)


def _normalisation(model: nn.Module, family: str, channels: int) -> tuple[Tensor, Tensor]:  # shift, gain [C, K]
    """z_normalised = (z - shift[:, t]) * gain[:, t]; K = 1 except Cosmos' per-frame table."""
    cfg = model.config
    as_col = lambda v: torch.as_tensor(v, dtype=torch.float32).detach().cpu().reshape(channels, -1)  # noqa: E731
    ones = torch.ones(channels, 1)
    if family == "AutoencoderKLWan":
        return as_col(cfg.latents_mean), 1.0 / as_col(cfg.latents_std)
    if family == "AutoencoderKLCosmos":
        if cfg.latents_mean is None or cfg.latents_std is None:
            return 0 * ones, ones
        return as_col(cfg.latents_mean), 1.0 / as_col(cfg.latents_std)
    if family == "AutoencoderKLLTXVideo":
        return as_col(model.latents_mean), cfg.scaling_factor / as_col(model.latents_std)
    shift = getattr(cfg, "shift_factor", None) or 0.0
    return shift * ones, cfg.scaling_factor * ones


class DiffusersVideoVAE(VideoCodec):
    """A frozen diffusers video VAE behind the VideoCodec API (deterministic posterior-mode encode)."""

    @classmethod
    def spec_from_init_args(cls, path_or_model: str | os.PathLike | nn.Module, **_: object) -> dict:
        """Codec facts from the VAE folder's config alone: the model is built on the meta device
        (no weights read), so a config can link them before anything loads."""
        if isinstance(path_or_model, nn.Module):
            return cls(path_or_model).spec()
        path = Path(path_or_model)
        if (path / "vae" / "config.json").is_file() and not (path / "config.json").is_file():
            path = path / "vae"
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no VAE config at {path / 'config.json'}; pass a local folder written by "
                                    "save_pretrained")

        name = json.loads((path / "config.json").read_text()).get("_class_name")
        if name not in SUPPORTED_VAES:
            raise ValueError(f"{path} holds {name!r}; supported video autoencoders: {', '.join(SUPPORTED_VAES)}")
        vae_cls = getattr(diffusers, name)
        with torch.device("meta"):
            model = vae_cls.from_config(vae_cls.load_config(path))
        channels, time, space = _compression(model, name)
        return {"latent_channels": int(channels), "time_factor": time, "space_factor": space,
                "causal_first_frame": True}

    def __init__(
        self,
        path_or_model: str | os.PathLike | nn.Module,
        dtype: torch.dtype | str | None = None,  # None: float32 when loading, unchanged for a model
        enable_tiling: bool = False,
        enable_slicing: bool = False,
        decode_timestep: float = 0.0,  # only for decoders with timestep conditioning (LTX >= 0.9.1)
    ) -> None:
        super().__init__()
        if isinstance(path_or_model, nn.Module):
            vae = path_or_model if dtype is None else path_or_model.to(_as_dtype(dtype))
        elif isinstance(path_or_model, (str, os.PathLike)):
            vae = load_video_vae(path_or_model, torch.float32 if dtype is None else dtype)
        else:
            raise TypeError(f"path_or_model must be a local directory or a diffusers VAE module, "
                            f"got {type(path_or_model).__name__}")
        self.family = _family(vae)
        self.vae = vae.eval().requires_grad_(False)
        self.latent_channels, self.time_factor, self.space_factor = _compression(vae, self.family)
        self.causal_first_frame = True
        self.decode_timestep = float(decode_timestep)
        shift, gain = _normalisation(vae, self.family, self.latent_channels)
        self.register_buffer("latent_shift", shift, persistent=False)  # [C, K]
        self.register_buffer("latent_gain", gain, persistent=False)  # [C, K]
        for wanted, method in ((enable_tiling, "enable_tiling"), (enable_slicing, "enable_slicing")):
            if wanted and callable(getattr(vae, method, None)):
                getattr(vae, method)()
            elif wanted:
                warnings.warn(f"{self.family} has no {method}(); running without it", stacklevel=2)

    def _latent_frames_ok(self, latent_frames: int) -> bool:
        # CogVideoX batches 2 latent frames (8 pixel frames) plus the odd first one.
        odd = self.family != "AutoencoderKLCogVideoX" or latent_frames % 2 == 1
        return latent_frames >= 1 and odd

    def _frame_rule(self) -> str:
        if self.family == "AutoencoderKLCogVideoX":
            return f"1 + {2 * self.time_factor}k frames (an odd number of latent frames)"
        return super()._frame_rule()

    def _stats(self, num_latent_frames: int, device: torch.device) -> tuple[Tensor, Tensor]:  # [1, C, T', 1, 1] x2
        idx = torch.arange(num_latent_frames, device=self.latent_shift.device).clamp_max(self.latent_shift.shape[1] - 1)
        pick = lambda t: t[:, idx][None, :, :, None, None].to(device)  # noqa: E731
        return pick(self.latent_shift), pick(self.latent_gain)

    def normalise(self, z: Tensor) -> Tensor:  # raw VAE latents [B, C, T', h, w] -> normalised
        shift, gain = self._stats(z.shape[2], z.device)
        return (z.float() - shift) * gain

    def denormalise(self, latents: Tensor) -> Tensor:  # normalised [B, C, T', h, w] -> raw VAE latents
        shift, gain = self._stats(latents.shape[2], latents.device)
        return latents.float() / gain + shift

    def _encode(self, rgb: Tensor) -> Tensor:  # [B, T, H, W, 3] -> [B, C, T', h, w]
        b, t, h, w, _ = rgb.shape
        x = rgb.permute(0, 4, 1, 2, 3).to(self.vae.device, self.vae.dtype) * 2 - 1
        z = self.vae.encode(x).latent_dist.mode()
        expected = (b,) + self.latent_shape(t, h, w)
        if tuple(z.shape) != expected:
            raise RuntimeError(f"{self.family} encoded {tuple(rgb.shape)} to {tuple(z.shape)}, but its "
                               f"config implies {expected} (time_factor={self.time_factor}, space_factor="
                               f"{self.space_factor}); the config's compression factors disagree with the weights")
        return self.normalise(z).to(rgb.device)

    def _decode(self, latents: Tensor) -> Tensor:  # [B, C, T', h, w] -> [B, T, H, W, 3]
        z = self.denormalise(latents).to(self.vae.device, self.vae.dtype)
        kwargs = {}
        if getattr(self.vae.config, "timestep_conditioning", False):
            kwargs["temb"] = torch.full((z.shape[0],), self.decode_timestep, device=z.device, dtype=z.dtype)
        x = self.vae.decode(z, **kwargs).sample
        frames = self.pixel_frames(latents.shape[2])
        if x.shape[2] != frames:
            raise RuntimeError(f"{self.family} decoded {latents.shape[2]} latent frames to {x.shape[2]} "
                               f"frames, expected {frames}; its temporal factor is not {self.time_factor}")
        return ((x.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).to(latents.device)
