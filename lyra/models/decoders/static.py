"""Gaussian decoders: video latents + cameras -> 3D Gaussians in one forward pass.

``GaussianDecoder`` is the interface (and diffusers-style save/load); ``StaticGaussianDecoder``
is Lyra's 3DGS decoder. The dynamic (4D) decoder in :mod:`.dynamic` reuses everything here and
only adds time conditioning.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

from lyra.data.codecs.frames import fold_frames, latent_frame_count, unfold_frames
from lyra.models.blocks import BlockStack, BodyConfig
from lyra.models.decoders.activations import (RAW_CHANNELS, GaussianActivationConfig, ScaleMode, activate_gaussians,
                                              colour_logits)
from lyra.models.decoders.copies import NUM_COPY_FEATURES, frame_copy_features
from lyra.models.decoders.embed import PatchEmbed3d, latent_rays, relative_cameras
from lyra.models.decoders.heads import ConvGaussianHead, HeadKind
from lyra.models.decoders.input_image import InputImageGaussians
from lyra.models.decoders.input_reading import InputReadingMixin
from lyra.render.cameras import pixel_rays, ray_distance, resize_intrinsics
from lyra.render.gaussians import Gaussians
from lyra.render.rotations import quat_multiply, rotmat_to_quat

DENSITIES = (1, 2, 4, 8)


def camera_spread(c2w: Tensor) -> Tensor:  # [B, V, T, 4, 4] -> [B]
    """Mean distance of every camera centre from the first one (1 where the cameras do not move)."""
    centres = c2w[..., :3, 3].reshape(c2w.shape[0], -1, 3)
    spread = (centres - centres[:, :1]).norm(dim=-1).mean(1)
    return torch.where(spread > 1e-6, spread, torch.ones_like(spread))


class GaussianDecoder(ModelMixin, ConfigMixin):
    """Interface: ``forward(latents, c2w, K, time=None, target_time=None) -> Gaussians``.

    Static decoders return batch shape [B] (one set per scene); dynamic decoders return [B, M]
    (one set per requested target time). Saved and loaded with ``save_pretrained`` /
    ``from_pretrained`` (a config.json plus safetensors), so a trained decoder is usable outside
    Lightning.
    """

    config_name = "config.json"
    is_dynamic = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        path = Path(pretrained_model_name_or_path)
        cfg = path / kwargs.get("subfolder", "") / cls.config_name
        if not cfg.is_file():
            raise FileNotFoundError(f"no decoder config at {cfg}; pass the directory written by save_pretrained")
        saved = json.loads(cfg.read_text()).get("_class_name")
        if cls is not GaussianDecoder and saved != cls.__name__:
            raise ValueError(f"{path} holds a {saved}, not a {cls.__name__}; load it with "
                             f"lyra.models.decoders.{saved}.from_pretrained(...)")
        if cls is GaussianDecoder:
            from lyra.models import decoders

            target = getattr(decoders, str(saved), None)
            if not (isinstance(target, type) and issubclass(target, GaussianDecoder) and target is not GaussianDecoder):
                raise ValueError(f"{path} holds an unknown decoder class {saved!r}")
            return target.from_pretrained(path, **kwargs)
        return super().from_pretrained(path, **kwargs)


class StaticGaussianDecoder(InputReadingMixin, GaussianDecoder):
    """Lyra's 3DGS decoder: one Gaussian set per scene from the latents of all its trajectories.

    Each trajectory's latents are patch-embedded (1 x p x p) with its Plucker rays added through a
    zero-initialised embed; all tokens are mixed jointly by the body; a transposed 3D convolution
    undoes the patching and the codec's temporal compression, giving ``density**2`` Gaussians per
    latent pixel of every frame, each on its own pixel ray (docs/conventions.md).

    Args:
        latent_channels: channels of the codec's latents (linked from the codec in the configs).
        time_factor: frames per latent frame of the codec.
        space_factor: pixels per latent pixel (each side) of the codec.
        causal_first_frame: whether the codec encodes the first frame alone.
        patch_size: latent pixels per token (each side).
        body: the token mixer (:class:`lyra.models.blocks.BodyConfig`; Lyra's by default).
        density: Gaussians per latent pixel along each side (1, 2, 4 or 8): one Gaussian per
            ``(space_factor / density)``-pixel block. Lyra: 1.
        near: closest distance along a pixel ray a Gaussian can sit.
        far: farthest distance (Lyra: 500; small procedural scenes: ~20).
        distance_bias: distance = near (1 - w) + far w with w = sigmoid(x - distance_bias).
        max_scale: upper bound of every scale.
        scale_bias: scale = min(exp(x - scale_bias), max_scale); ``None``: Lyra's 1 - ln 0.3
            (``"footprint"`` mode: ln 2, half the Gaussian's pixel block).
        opacity_bias: opacity = sigmoid(x - opacity_bias).
        scale_mode: ``"absolute"`` (Lyra: scales in scene units) or ``"footprint"`` (scales in
            units of the Gaussian's pixel-block width at its distance, so they fit any scene scale).
        gaussian_frames: ``"all"`` (Lyra: the codec's temporal compression is undone, Gaussians
            for every frame) or ``"latent"`` (Gaussians for one frame per latent frame, the last of
            its group: frames 0, 4, 8, ... of a causal 4x codec; a quarter of the Gaussians).
        latent_skip: also map every latent pixel straight to its Gaussians' raw values with a
            zero-initialised linear layer beside the body (the body's tokens are narrower than a
            latent patch, so colour detail otherwise has to squeeze through them).
        latent_frames_per_view: with ``gaussian_frames="latent"``, how many latent frames of each
            trajectory emit Gaussians, evenly spaced with the first and the last included (``None``:
            all). Fewer frames: fewer overlapping copies of the same surface.
        head_type: ``"linear"`` (Lyra: one transposed convolution from each token to its Gaussians) or
            ``"conv"`` (:class:`~lyra.models.decoders.heads.ConvGaussianHead`: tokens back to the
            latent grid, plus the latent pixel, two 3 x 3 residual convolutions, then the
            per-Gaussian readout).
        head_width: channels of the ``"conv"`` head's latent-resolution features.
        copy_features: give every Gaussian's readout two geometric facts about the other copies
            of its surface (:func:`~lyra.models.decoders.copies.copy_features`: how many Gaussian
            frames see it, and how much coarser it is than the finest of them) through a small
            zero-initialised MLP that adjusts its colour, scale, rotation and opacity (not its
            depth). Off in the paper.
        copy_tolerance: relative depth difference within which a frame counts as seeing a Gaussian.
        depth_units: ``"world"`` (the paper: ``near``, ``far``, ``max_scale`` and the embedded camera
            positions in scene units) or ``"cameras"``: all of them in units of the source cameras'
            spread (:func:`camera_spread`), so the decoder predicts depth relative to how far its
            cameras move and a scene scaled by k gives Gaussians scaled by k.
        input_depth: also read the input image's depth (the first source frame's: trajectory 0,
            frame 0; GEN3C's 3D cache) warped into every source camera
            (:mod:`~lyra.models.decoders.input_depth`): its log and coverage enter the tokens through a
            zero-initialised embed, and every Gaussian whose cell it covers starts at that depth,
            which the distance channel then corrects by at most a factor exp(``input_depth_range``).
            ``forward`` then needs ``input_depth``. Not in the paper. The dynamic decoder reads the
            input video instead: trajectory 0's frame nearest each target time.
        input_depth_range: the largest |log| correction of an input depth (0.5: x0.61 to x1.65).
        input_depth_fill: fill holes of the warped input depth (cells no point of the input image
            reaches, unless its sky does: disocclusions, beyond its edges) this many cells deep
            from their deepest neighbour (:func:`~lyra.models.decoders.input_depth.fill_holes`); 0:
            the decoder predicts their distance itself (measured worse: docs/benchmarks.md, E18-E21).
        input_image_gaussians: also emit one Gaussian per pixel of the input image (trajectory 0,
            frame 0), on its ray at the input depth, coloured by the pixel, corrected from the input
            frame's tokens (:mod:`~lyra.models.decoders.input_image`); they follow the grid's
            Gaussians in the output. ``forward`` then needs ``input_image``; needs ``input_depth``.
            Not in the paper.
        input_image_features: channels of the input-image Gaussians' own image net (per-pixel
            corrections from the image and its depth; 0: tokens only; 32 measured level with 0 and
            15 % slower: docs/benchmarks.md, E24).
        grid_cells: with ``input_image_gaussians``, which cells of the grid emit Gaussians: ``"all"``,
            or ``"unseen"``: only those the input image does not see (its warped depth is unknown or
            hole-filled there); the others get opacity 0, the input pixels show that surface
            (measured worse on views beyond the input's edges: E23).
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 16,
        time_factor: int = 4,
        space_factor: int = 8,
        causal_first_frame: bool = True,
        patch_size: int = 2,
        body: BodyConfig | None = None,
        density: int = 1,
        near: float = 0.1,
        far: float = 500.0,
        distance_bias: float = 1.65,
        max_scale: float = 0.3,
        scale_bias: float | None = None,
        opacity_bias: float = 2.0,
        scale_mode: ScaleMode = "absolute",
        gaussian_frames: Literal["all", "latent"] = "all",
        latent_skip: bool = False,
        latent_frames_per_view: int | None = None,
        head_type: HeadKind = "linear",
        head_width: int = 64,
        copy_features: bool = False,
        copy_tolerance: float = 0.1,
        depth_units: Literal["world", "cameras"] = "world",
        input_depth: bool = False,
        input_depth_range: float = 0.5,
        input_depth_fill: int = 8,
        input_image_gaussians: bool = False,
        input_image_features: int = 0,
        grid_cells: Literal["all", "unseen"] = "all",
    ) -> None:
        super().__init__()
        body = BodyConfig.coerce(body)
        self.register_to_config(body=asdict(body))  # config.json holds plain values
        if gaussian_frames not in ("all", "latent"):
            raise ValueError(f"gaussian_frames must be 'all' or 'latent', got {gaussian_frames!r}")
        if density not in DENSITIES or space_factor % density:
            raise ValueError(f"density must be one of {DENSITIES} and divide space_factor {space_factor}, got {density}")
        if latent_frames_per_view is not None and (gaussian_frames != "latent" or latent_frames_per_view < 1):
            raise ValueError("latent_frames_per_view needs gaussian_frames='latent' and a count >= 1 "
                             f"(got {latent_frames_per_view} with gaussian_frames={gaussian_frames!r})")
        if head_type not in ("linear", "conv"):
            raise ValueError(f"head_type must be 'linear' or 'conv', got {head_type!r}")
        if depth_units not in ("world", "cameras"):
            raise ValueError(f"depth_units must be 'world' or 'cameras', got {depth_units!r}")
        if input_depth_fill < 0:
            raise ValueError(f"input_depth_fill must be >= 0 cells, got {input_depth_fill}")
        if input_image_gaussians and not input_depth:
            raise ValueError("input_image_gaussians places the input image's pixels at its depth: build the decoder "
                             "with input_depth=True too")
        if grid_cells not in ("all", "unseen") or (grid_cells == "unseen" and not input_image_gaussians):
            raise ValueError(f"grid_cells must be 'all' or 'unseen' (the latter with input_image_gaussians=True), "
                             f"got {grid_cells!r}")
        if not copy_tolerance > 0:
            raise ValueError(f"copy_tolerance must be > 0, got {copy_tolerance}")
        self.activation = GaussianActivationConfig(near=near, far=far, distance_bias=distance_bias, max_scale=max_scale,
                                                   scale_bias=scale_bias, opacity_bias=opacity_bias, scale_mode=scale_mode,
                                                   prior_log_range=input_depth_range)
        tf, p, width = time_factor, patch_size, body.width
        self.latent_embed = PatchEmbed3d(latent_channels, width, p, norm=True)
        self.ray_embed = PatchEmbed3d(6 * tf, width, p, zero_init=True)
        self.depth_embed = PatchEmbed3d(3 * tf, width, p, zero_init=True) if input_depth else None
        self.blocks = BlockStack(body)
        # Undo the patching and the codec's temporal compression: density^2 Gaussians per latent
        # pixel per frame.
        k, kt = p * density, tf if gaussian_frames == "all" else 1
        if head_type == "conv":
            self.head = ConvGaussianHead(width, latent_channels, head_width, p, density, kt)
        else:
            self.head = nn.ConvTranspose3d(width, RAW_CHANNELS, kernel_size=(kt, k, k), stride=(kt, k, k))
        self.skip_head = None
        if latent_skip:
            self.skip_head = nn.ConvTranspose3d(latent_channels, RAW_CHANNELS, kernel_size=(kt, density, density),
                                                stride=(kt, density, density))
            nn.init.zeros_(self.skip_head.weight)
            nn.init.zeros_(self.skip_head.bias)
        self.copy_mlp = None
        if copy_features:
            self.copy_mlp = nn.Sequential(nn.Linear(NUM_COPY_FEATURES, 32), nn.GELU(), nn.Linear(32, RAW_CHANNELS))
            nn.init.zeros_(self.copy_mlp[2].weight)  # starts as a no-op
            nn.init.zeros_(self.copy_mlp[2].bias)
        self.pixel_gaussians = None
        if input_image_gaussians:
            self.pixel_gaussians = InputImageGaussians(width, p * space_factor, opacity_bias,
                                                       image_features=input_image_features)
        self.add_conditioning(width)

    def add_conditioning(self, width: int) -> None:
        """Extra input branches of subclasses (the dynamic decoder's time embeddings)."""

    def length_unit(self, c2w: Tensor) -> Tensor:  # [B, V, T, 4, 4] -> [B]
        """The scene's length unit for this decoder's ``depth_units`` (1 for ``"world"``)."""
        if self.config.depth_units == "world":
            return torch.ones(c2w.shape[0], dtype=c2w.dtype, device=c2w.device)
        return camera_spread(c2w)

    @property
    def body(self) -> BodyConfig:
        return self.blocks.config

    @property
    def readout(self) -> nn.ConvTranspose3d:
        """The head's last layer: the one that writes the 12 raw channels of every Gaussian."""
        return self.head.out if isinstance(self.head, ConvGaussianHead) else self.head

    def gaussian_frame_indices(self, num_frames: int) -> Tensor:  # [F] source frames that get Gaussians
        cfg = self.config
        if cfg.gaussian_frames == "all":
            return torch.arange(num_frames)
        tl = latent_frame_count(num_frames, cfg.time_factor, cfg.causal_first_frame)
        last = torch.arange(tl) * cfg.time_factor  # causal: 0, tf, 2 tf, ... (the first frame is alone)
        last = self.gaussian_latent_frames(last, 0)
        return last if cfg.causal_first_frame else last + cfg.time_factor - 1

    def _unfold(self, raw: Tensor) -> Tensor:  # [N, 12, T'*kt, gh, gw] -> [N, 12, F, gh, gw]
        cfg = self.config
        return unfold_frames(raw, cfg.time_factor, cfg.causal_first_frame) if cfg.gaussian_frames == "all" else raw

    # ---- input checks ------------------------------------------------------------------------

    def _check(self, latents: Tensor, c2w: Tensor, K: Tensor, input_depth: Tensor | None = None,
               input_image: Tensor | None = None) -> None:
        cfg = self.config
        if latents.ndim != 6:
            raise ValueError(f"latents must be [B, V, C, T', h, w], got {tuple(latents.shape)}")
        B, V, C, Tl, h, w = latents.shape
        if C != cfg.latent_channels:
            raise ValueError(f"latents have {C} channels but the decoder was built for {cfg.latent_channels}; "
                             "set latent_channels to the codec's channel count")
        if c2w.shape[:2] != (B, V) or c2w.shape[-2:] != (4, 4) or K.shape[:3] != c2w.shape[:3]:
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
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"latent size {h}x{w} is not divisible by patch_size {cfg.patch_size}; "
                             f"use images whose size is a multiple of {cfg.patch_size * cfg.space_factor}")
        for name, t in (("latents", latents), ("c2w", c2w), ("K", K)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} contains NaN or Inf; fix the clip (the teacher or codec produced it)")
        if (K[..., 0, 0] <= 0).any() or (K[..., 1, 1] <= 0).any():
            raise ValueError("K has a zero or negative focal length")
        # The static decoder reads the input image (trajectory 0, frame 0); the dynamic one the input
        # video (trajectory 0, every frame).
        frames, dims = ((T,), "[B, T, H, W]") if self.is_dynamic else ((), "[B, H, W]")
        what = "every frame of trajectory 0" if self.is_dynamic else "the first source frame"
        if cfg.input_depth and input_depth is None:
            raise ValueError(f"this decoder was built with input_depth=True and needs `input_depth` {dims}, the "
                             f"z-depth of {what} (StudentModule passes it from the clip's src_depth)")
        if not cfg.input_depth and input_depth is not None:
            raise ValueError("`input_depth` was given to a decoder built without input_depth; drop it or build the "
                             "decoder with input_depth=True")
        if input_depth is not None:
            want = (B, *frames, h * cfg.space_factor, w * cfg.space_factor)
            if tuple(input_depth.shape) != want:
                raise ValueError(f"input_depth must be {dims} = {want} (the source frames' size), "
                                 f"got {tuple(input_depth.shape)}")
            if not torch.isfinite(input_depth).all() or (input_depth < 0).any():
                raise ValueError("input_depth must be finite and >= 0 (0 = unknown)")
        if (self.pixel_gaussians is not None) != (input_image is not None):
            raise ValueError(f"a decoder built with input_image_gaussians=True needs `input_image` {dims[:-1]}, 3], "
                             f"the RGB of {what} (StudentModule passes the clip's input_rgb); others take none")
        if input_image is not None:
            want = (B, *frames, h * cfg.space_factor, w * cfg.space_factor, 3)
            if tuple(input_image.shape) != want:
                raise ValueError(f"input_image must be {dims[:-1]}, 3] = {want}, got {tuple(input_image.shape)}")
            if not torch.isfinite(input_image).all() or input_image.min() < 0 or input_image.max() > 1:
                raise ValueError("input_image must be finite RGB in [0, 1]")

    # ---- shared pieces -------------------------------------------------------------------------

    def embed_tokens(
        self,
        latents: Tensor,  # [B, V, C, T', h, w]
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
    ) -> Tensor:  # [B*V, L, D]
        cfg = self.config
        B, V, C, Tl, h, w = latents.shape
        T = c2w.shape[2]
        rel, _ = relative_cameras(c2w)
        if cfg.depth_units == "cameras":
            rel = rel.clone()
            rel[..., :3, 3] /= self.length_unit(c2w)[:, None, None, None]
        rays = latent_rays(rel, K, (h * cfg.space_factor, w * cfg.space_factor), (h, w))  # [B, V, T, h, w, 6]
        rays = fold_frames(rays.reshape(B * V, T, h, w, 6), cfg.time_factor, cfg.causal_first_frame)
        rays = rays.permute(0, 2, 5, 1, 3, 4).reshape(B * V, cfg.time_factor * 6, Tl, h, w)
        tokens = self.latent_embed(latents.reshape(B * V, C, Tl, h, w).to(self.dtype))
        return tokens + self.ray_embed(rays.to(self.dtype))

    def gaussian_latent_frames(self, x: Tensor, dim: int) -> Tensor:
        """``x`` restricted, along its latent-frame axis ``dim``, to the latent frames that emit
        Gaussians (all of them unless ``latent_frames_per_view`` is set: then that many, evenly
        spaced, the first and the last included)."""
        n, tl = self.config.latent_frames_per_view, x.shape[dim]
        if n is None or n >= tl:
            return x
        return x.index_select(dim, torch.linspace(0, tl - 1, n, device=x.device).round().long())

    def mix_tokens(
        self,
        tokens: Tensor,  # [S*V, L, D] (S scenes, or scene-times: S = B * M)
        latent_shape: tuple[int, int, int],  # (T', h, w)
        batch: int,  # S
        views: int,  # V
    ) -> Tensor:  # [S*V, D, T', h/p, w/p]
        """All trajectories' tokens mixed jointly by the body, back on their latent grid."""
        Tl, h, w = latent_shape
        p = self.config.patch_size
        D, L = tokens.shape[-1], tokens.shape[1]
        x = self.blocks(tokens.reshape(batch, views * L, D))
        return x.reshape(batch * views, Tl, h // p, w // p, D).permute(0, 4, 1, 2, 3)

    def decode_tokens(
        self,
        x: Tensor,  # [S*V, D, T', h/p, w/p] mixed tokens
        latents: Tensor,  # [B, V, C, T', h, w] the latents the tokens came from (once per scene)
        batch: int,  # S
        views: int,  # V
    ) -> Tensor:  # raw Gaussians [S, V, F, h*k, w*k, 12]
        cfg = self.config
        h, w = latents.shape[-2:]
        k = cfg.density
        x = self.gaussian_latent_frames(x, 2)  # every token was mixed; only these frames emit Gaussians
        if isinstance(self.head, ConvGaussianHead):
            lat = self.gaussian_latent_frames(latents, 3).repeat_interleave(batch // latents.shape[0], dim=0)
            raw = self.head(x, lat.reshape(batch * views, *lat.shape[2:]).to(self.dtype))
        else:
            raw = self.head(x)
        raw = self._unfold(raw)  # [S*V, 12, F, h*k, w*k]
        return raw.permute(0, 2, 3, 4, 1).reshape(batch, views, -1, h * k, w * k, RAW_CHANNELS)

    def latent_skip_raw(self, latents: Tensor) -> Tensor | None:
        """latents [B, V, C, T', h, w] -> raw [B, V, F, h*k, w*k, 12] of the skip head (None: off)."""
        if self.skip_head is None:
            return None
        cfg = self.config
        B, V, C, _, h, w = latents.shape
        k = cfg.density
        latents = self.gaussian_latent_frames(latents, 3)
        raw = self.skip_head(latents.reshape(B * V, C, -1, h, w).to(self.dtype))
        raw = self._unfold(raw)  # [B*V, 12, F, h*k, w*k]
        return raw.permute(0, 2, 3, 4, 1).reshape(B, V, -1, h * k, w * k, RAW_CHANNELS)

    def to_gaussians(
        self,
        raw: Tensor,  # [B, (M,) V, F, gh, gw, 12], F = the frames that get Gaussians
        c2w: Tensor,  # [B, V, T, 4, 4] every source camera
        K: Tensor,  # [B, V, T, 3, 3]
        input_depth: Tensor | None = None,  # [B, (M,) H, W] (decoders built with input_depth)
        input_c2w: Tensor | None = None,  # [B, (M,) 4, 4] its camera (``input_views``)
        input_K: Tensor | None = None,  # [B, (M,) 3, 3]
    ) -> Gaussians:  # [B, (M,) N] in world coordinates
        cfg = self.config
        ref = c2w[:, 0, 0]
        unit = self.length_unit(c2w)  # [B], from every source camera (the embedding's unit)
        frames = self.gaussian_frame_indices(c2w.shape[2]).to(c2w.device)
        c2w, K = c2w[:, :, frames], K[:, :, frames]
        gh, gw = raw.shape[-3:-1]
        k = cfg.density
        pixels = (gh // k * cfg.space_factor, gw // k * cfg.space_factor)
        K_grid = resize_intrinsics(K, pixels, (gh, gw))
        origins, dirs = pixel_rays(c2w, K_grid, gh, gw)  # [B, V, T, gh, gw, 3]
        # A grid cell's width per unit of distance along its ray (1 / focal in grid pixels).
        footprint = (1.0 / torch.sqrt(K_grid[..., 0, 0] * K_grid[..., 1, 1]))[..., None, None].expand(
            *origins.shape[:-1])
        prior = seen = None
        if self.depth_embed is not None:  # the input depth in each Gaussian's cell, as a distance along its ray
            z, filled = self.warped_input_depth(input_depth, input_c2w, input_K, c2w, K, (gh, gw))
            timed = z.ndim == dirs.ndim  # one input depth per target time: [B, M, V, F, gh, gw]
            prior = ray_distance(z, dirs[:, None] if timed else dirs, c2w[:, None] if timed else c2w)
            if cfg.grid_cells == "unseen":
                seen = (z > 0) & ~filled
        lead = raw.shape[:-5]
        extra = len(lead) - 1  # a target-time dim M for dynamic decoders
        for _ in range(extra):
            origins, dirs, footprint = origins[:, None], dirs[:, None], footprint[:, None]
            if prior is not None and prior.ndim < raw.ndim - 1:  # one input depth for every target time
                prior, seen = prior[:, None], None if seen is None else seen[:, None]
        origins, dirs = origins.expand(raw.shape[:-1] + (3,)), dirs.expand(raw.shape[:-1] + (3,))
        footprint = footprint.expand(raw.shape[:-1])
        prior = None if prior is None else prior.expand(raw.shape[:-1]).reshape(*lead, -1)
        seen = None if seen is None else seen.expand(raw.shape[:-1]).reshape(*lead, -1)
        raw = raw.reshape(*lead, -1, RAW_CHANNELS)
        origins, dirs, footprint = origins.reshape(*lead, -1, 3), dirs.reshape(*lead, -1, 3), footprint.reshape(*lead, -1)
        unit = unit.reshape(-1, *([1] * extra), 1)  # [B, (1,) 1]
        g = activate_gaussians(raw, origins, dirs, self.activation, footprint, unit, prior)
        if self.copy_mlp is not None:  # depths first, then the copies they imply, then all but depth again
            feats = frame_copy_features(g.means, c2w, K_grid, (gh, gw), cfg.copy_tolerance)
            delta = self.copy_mlp(feats.to(raw.dtype)) * (torch.arange(RAW_CHANNELS, device=raw.device) > 0)
            g = activate_gaussians(raw + delta, origins, dirs, self.activation, footprint, unit, prior)
        if seen is not None:  # the input pixels show what the input sees
            g.opacities = g.opacities.masked_fill(seen, 0.0)
        return self.orient_to_world(g, ref)

    @staticmethod
    def orient_to_world(g: Gaussians, ref: Tensor) -> Gaussians:  # ref [B, 4, 4]: the first source camera
        """Orientations are predicted in the first camera's frame: rotate them to world."""
        q_ref = rotmat_to_quat(ref[:, :3, :3])
        q_ref = q_ref.reshape(q_ref.shape[0], *([1] * (g.quats.ndim - 2)), 4)
        g.quats = quat_multiply(q_ref.to(g.quats.dtype).expand_as(g.quats), g.quats)
        return g

    # ---- interface -----------------------------------------------------------------------------

    def forward(
        self,
        latents: Tensor,  # [B, V, C, T', h, w]
        c2w: Tensor,  # [B, V, T, 4, 4]
        K: Tensor,  # [B, V, T, 3, 3]
        time: Tensor | None = None,  # [B, V, T] ignored by the static decoder
        target_time: Tensor | None = None,  # [B, M] ignored by the static decoder
        input_depth: Tensor | None = None,  # [B, H, W] z-depth of the first source frame, 0 = unknown
        input_image: Tensor | None = None,  # [B, H, W, 3] its RGB (decoders with input_image_gaussians)
    ) -> Gaussians:  # batch [B], N = V * F * (h * density) * (w * density) (+ H * W input pixels), F frames with Gaussians
        self._check(latents, c2w, K, input_depth, input_image)
        B, V, _, Tl, h, w = latents.shape
        tokens = self.embed_tokens(latents, c2w, K)
        inputs = {}
        if self.depth_embed is not None:
            inputs = self.input_views(c2w, K, input_depth)
            tokens = tokens + self.depth_tokens(**inputs, c2w=c2w, K=K, latent_shape=(Tl, h, w))
        x = self.mix_tokens(tokens, (Tl, h, w), B, V)
        raw = self.decode_tokens(x, latents, B, V)
        skip = self.latent_skip_raw(latents)
        if skip is not None:
            raw = raw + skip
        g = self.to_gaussians(raw.float(), c2w, K, **inputs)
        if self.pixel_gaussians is None:
            return g
        first = x.reshape(B, V, *x.shape[1:])[:, 0, :, 0]  # [B, D, h/p, w/p] trajectory 0, latent frame 0
        pixels = self.input_pixel_gaussians(first, input_image, **inputs, unit=self.length_unit(c2w))
        return Gaussians.cat([g, pixels])

    @torch.no_grad()
    def fit_latent_skip(
        self,
        latents: Tensor,  # [S, C, T', h, w] latents of S source trajectories
        rgb: Tensor,  # [S, T, H, W, 3] the teacher's RGB decoding of them
        ridge: float = 1e-3,
    ) -> float:
        """Set the latent skip's colour weights to the least-squares linear readout of each
        Gaussian's block colour from its latent pixel (pre-activation, so 0.5 tanh(x) + 0.5 gives
        the colour back), and the body head's colour outputs to zero. A data-driven start for any
        codec (the best linear fit; a VAE's is not exact). Returns the fit's RMS error (raw units)."""
        if self.skip_head is None:
            raise ValueError("fit_latent_skip needs a decoder built with latent_skip=True")
        cfg = self.config
        S, C, Tl, h, w = latents.shape
        T = rgb.shape[1]
        k, kt = cfg.density, self.skip_head.kernel_size[0]
        s = cfg.space_factor // k
        frames = self.gaussian_frame_indices(T)
        block = F.avg_pool2d(rgb[:, frames].permute(0, 1, 4, 2, 3).reshape(-1, 3, *rgb.shape[2:4]), s)
        block = block.reshape(S, len(frames), 3, h * k, w * k).permute(0, 1, 3, 4, 2)  # [S, F, gh, gw, 3]
        target = colour_logits(block)
        # Where each Gaussian frame sits in the codec's folded layout: (latent frame, slot in it).
        if cfg.gaussian_frames == "latent":
            lat_f = self.gaussian_latent_frames(torch.arange(Tl), 0)
            slot = torch.zeros(len(lat_f), dtype=torch.long)
        else:
            folded = frames + (cfg.time_factor - 1 if cfg.causal_first_frame else 0)
            lat_f, slot = folded // cfg.time_factor, folded % cfg.time_factor
        feats = latents.float()[:, :, lat_f]  # [S, C, F, h, w]: each Gaussian frame's latent pixel
        weight = self.skip_head.weight  # [C, 12, kt, k, k]
        # The skip owns colour at the start: the body head's colour outputs start at zero.
        self.readout.weight[:, 1:4] = 0
        self.readout.bias[1:4] = 0
        fits, means = [], []
        for f_slot in range(kt):
            rows = (slot == f_slot)
            if not rows.any():
                continue
            Xs = feats[:, :, rows].permute(0, 2, 3, 4, 1).reshape(-1, C)
            Xm = Xs.mean(0)
            Xc = Xs - Xm
            gram = Xc.T @ Xc
            gram += ridge * gram.diagonal().mean() * torch.eye(C)
            for dy in range(k):
                for dx in range(k):
                    Y = target[:, rows][:, :, dy::k, dx::k].reshape(-1, 3)
                    Ym = Y.mean(0)
                    W = torch.linalg.solve(gram, Xc.T @ (Y - Ym))  # [C, 3]
                    weight[:, 1:4, f_slot, dy, dx] = W.to(weight.dtype)
                    fits.append(((Xc @ W + Ym - Y) ** 2).mean())
                    means.append(Ym - Xm @ W)
        self.skip_head.bias[1:4] = torch.stack(means).mean(0).to(weight.dtype)  # the bias is shared
        return float(torch.stack(fits).mean().sqrt())

    def gaussian_depths(
        self,
        gaussians: Gaussians,  # batch [B] or [B, M], as this decoder returned them
        c2w: Tensor,  # [B, V, T, 4, 4] the source cameras
        image_size: tuple[int, int],  # (H, W) of the source frames
    ) -> Tensor:  # [B, (M,) V, F, gh, gw] camera z of every Gaussian in its own source frame
        """The Gaussians laid back on their source pixel grid: a depth map per source frame, to
        compare with the clip's depth at the grid (``grid_depth``)."""
        cfg = self.config
        gh, gw = (n // cfg.space_factor * cfg.density for n in image_size)
        lead = tuple(gaussians.batch_shape)
        c2w = c2w[:, :, self.gaussian_frame_indices(c2w.shape[2]).to(c2w.device)]
        V, T = c2w.shape[1:3]
        means = gaussians.means[..., : V * T * gh * gw, :]  # the grid's Gaussians (input pixels follow)
        means = means.reshape(*lead, V, T, gh, gw, 3)
        cams = c2w.reshape(c2w.shape[0], *([1] * (len(lead) - 1)), V, T, 1, 1, 4, 4)
        return ((means - cams[..., :3, 3]) * cams[..., :3, 2]).sum(-1)

    def grid_depth(
        self,
        depth: Tensor,  # [B, V, T, H, W] the source frames' depth (0 = unknown)
    ) -> Tensor:  # [B, V, F, gh, gw] the depth at each Gaussian's block centre, frames with Gaussians
        s = self.config.space_factor // self.config.density
        return depth[:, :, self.gaussian_frame_indices(depth.shape[2]).to(depth.device), s // 2::s, s // 2::s]
