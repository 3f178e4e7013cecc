"""Gen3CGenerator: a camera-controlled video diffusion teacher in the style of GEN3C, on diffusers parts.

One input image becomes V clips (one per trajectory), each generated separately:

1. depth of the image (``MonocularDepth`` or given), lifted to a point cloud: the "3D cache";
2. the cache rendered along each trajectory -> warped frames + hole masks (``point_cache``);
3. warped frames encoded by the teacher's codec; hole masks pooled to latent resolution;
4. a diffusers video transformer denoises ``[noisy latents | warped latents | hole fraction]``
   (channel concatenation, ``in_channels = 2 C + 1``, ``out_channels = C``) with flow matching.

Cameras: the input view is the identity pose with intrinsics from ``fov_x_deg``; every trajectory
looks at the point at median depth on the optical axis and moves by Lyra's ranges times that
median depth. Text is optional: without prompt embeddings the model attends to one all-zero
token (a "null" prompt), and classifier-free guidance, which contrasts the prompt with that null
prompt, is skipped because both branches would be identical.

Output: latents in the codec's (normalised) space, so the teacher must decode them with the same
codec; time is zero (static scene); ``depth`` is the rendered cache depth (``output_depth="cache"``:
the input's monocular depth seen from every frame, one scale for all views, 0 in holes), up to the
unknown scale of that depth. See docs/gen3c.md for real checkpoints and what differs from GEN3C.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import diffusers
import imageio.v3 as iio
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file
from torch import Tensor, nn

from lyra.data.codecs.base import VideoCodec
from lyra.data.codecs.diffusers_vae import DiffusersVideoVAE
from lyra.data.generators.base import ClipGenerator, GeneratedClip
from lyra.data.generators.depth import MonocularDepth, check_model_dir
from lyra.data.generators.point_cache import CachePlan, mask_to_latent_grid, plan_cache
from lyra.render.trajectories import LYRA_TRAJECTORIES

SUPPORTED_TRANSFORMERS = ("WanTransformer3DModel",)
OutputDepth = Literal["cache", "none"]


def load_video_transformer(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> nn.Module:
    """The diffusers video transformer saved in ``path`` (or in ``path/transformer`` of a pipeline folder)."""
    folder = Path(path)
    if not (folder / "config.json").is_file() and (folder / "transformer" / "config.json").is_file():
        folder = folder / "transformer"  # a pipeline folder
    check_model_dir(folder, "video transformer")
    name = json.loads((folder / "config.json").read_text()).get("_class_name")
    if name not in SUPPORTED_TRANSFORMERS:
        raise ValueError(f"{str(folder)!r} holds {name or 'no diffusers _class_name'!r}, not a supported video "
                         f"transformer; expected one of {SUPPORTED_TRANSFORMERS} (forward(hidden_states, timestep, "
                         "encoder_hidden_states)) saved with save_pretrained")

    cls = getattr(diffusers, name)
    if importlib.util.find_spec("accelerate") is not None:
        return cls.from_pretrained(folder, torch_dtype=dtype)
    # diffusers refuses models with fp32-pinned modules (Wan) without accelerate; load by hand.
    return _load_state_by_hand(cls, folder, dtype)


def _load_state_by_hand(cls: type, folder: Path, dtype: torch.dtype) -> nn.Module:
    """Build from config.json, load the (possibly sharded) safetensors, cast all but the fp32-pinned tensors."""
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else [
        "diffusion_pytorch_model.safetensors"]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{str(folder)!r} lacks weight files {missing}; save the model with "
                                "save_pretrained(safe_serialization=True)")
    model = cls.from_config(cls.load_config(folder))
    state: dict[str, Tensor] = {}
    for f in files:
        state.update(load_file(folder / f))
    model.load_state_dict(state, strict=True)
    keep = tuple(getattr(cls, "_keep_in_fp32_modules", None) or ())
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        if t.is_floating_point() and not any(k in name.split(".") for k in keep):
            t.data = t.data.to(dtype)
    return model


def load_image(
    image: Tensor | str | os.PathLike,  # [H0, W0, 3] float in [0, 1] or uint8, or an image file
    height: int | None = None,
    width: int | None = None,
) -> Tensor:  # [H, W, 3] float in [0, 1]
    """Centre-crop to the target aspect ratio, then resize (antialiased) to height x width."""
    if isinstance(image, (str, os.PathLike)):
        image = torch.as_tensor(iio.imread(image))[..., :3]
    if not isinstance(image, Tensor) or image.ndim != 3 or image.shape[-1] != 3:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be [H, W, 3] (float in [0, 1] or uint8) or an image file path, got {shape}")
    image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
    if image.min() < -1e-3 or image.max() > 1 + 1e-3:
        raise ValueError("image floats must lie in [0, 1]; divide [0, 255] data by 255")
    H0, W0 = image.shape[:2]
    height, width = height or H0, width or W0
    crop_h, crop_w = min(H0, round(W0 * height / width)), min(W0, round(H0 * width / height))
    top, left = (H0 - crop_h) // 2, (W0 - crop_w) // 2
    x = image[top:top + crop_h, left:left + crop_w].permute(2, 0, 1)[None]
    if (crop_h, crop_w) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x[0].permute(1, 2, 0).clamp(0, 1)


class Gen3CGenerator(ClipGenerator):
    def __init__(
        self,
        transformer_path: str | os.PathLike | nn.Module,
        vae_or_codec: VideoCodec | str | os.PathLike,
        depth_path: str | os.PathLike | MonocularDepth | None = None,
        images: Sequence[Tensor | str] = (),
        captions: Sequence[str] = (),
        num_inference_steps: int = 30,
        guidance_scale: float = 5.0,
        flow_shift: float = 5.0,
        trajectories: Sequence[str] | None = None,
        num_views: int = 6,
        fov_x_deg: float = 60.0,
        point_radius_px: float = 0.4,
        hole_threshold: float = 0.5,
        output_depth: OutputDepth = "cache",
        views_per_batch: int | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str = torch.float32,
    ) -> None:
        super().__init__(seed)
        dtype = getattr(torch, dtype.removeprefix("torch."), None) if isinstance(dtype, str) else dtype
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError("dtype must be a floating torch dtype such as 'float32' or 'bfloat16'")

        trajectories = list(LYRA_TRAJECTORIES[:num_views] if trajectories is None else trajectories)
        unknown = [k for k in trajectories if k not in LYRA_TRAJECTORIES]
        if len(trajectories) != num_views or unknown or not trajectories:
            raise ValueError(f"trajectories must be num_views={num_views} names from {LYRA_TRAJECTORIES}, "
                             f"got {trajectories}")
        if num_inference_steps < 1 or guidance_scale < 0 or flow_shift <= 0:
            raise ValueError(f"need num_inference_steps >= 1, guidance_scale >= 0 and flow_shift > 0, got "
                             f"{num_inference_steps}, {guidance_scale}, {flow_shift}")
        if output_depth not in ("cache", "none"):
            raise ValueError(f"output_depth must be 'cache' or 'none', got {output_depth!r}")
        if isinstance(vae_or_codec, (str, os.PathLike)):
            vae_or_codec = DiffusersVideoVAE(vae_or_codec, dtype=dtype)
        if not isinstance(vae_or_codec, VideoCodec):
            raise TypeError(f"vae_or_codec must be a lyra VideoCodec or a local VAE directory, got "
                            f"{type(vae_or_codec).__name__}")
        self.codec = vae_or_codec.to(device)
        if isinstance(transformer_path, nn.Module):
            # A ready module keeps its dtype (it may pin some layers to fp32 on purpose).
            self.transformer, self.transformer_source = transformer_path.to(device), type(transformer_path).__name__
        else:
            self.transformer = load_video_transformer(transformer_path, dtype).to(device)
            self.transformer_source = str(transformer_path)
        self.transformer.eval().requires_grad_(False)
        C, cfg = self.codec.latent_channels, self.transformer.config
        if cfg.in_channels != 2 * C + 1 or cfg.out_channels != C:
            raise ValueError(f"the transformer has in_channels={cfg.in_channels}, out_channels={cfg.out_channels} but "
                             f"the codec makes {C}-channel latents: it needs in_channels = 2*{C}+1 = {2 * C + 1} "
                             f"(noisy | warped | hole mask) and out_channels = {C}; pair it with its own codec")
        if isinstance(depth_path, MonocularDepth):
            self.depth_model, self.depth_source = depth_path.to(device), "MonocularDepth"
        else:
            self.depth_model = None if depth_path is None else MonocularDepth(depth_path, device=device)
            self.depth_source = None if depth_path is None else str(depth_path)
        self.scheduler = FlowMatchEulerDiscreteScheduler(shift=flow_shift)
        self.images, self.captions = list(images), list(captions)
        self.num_inference_steps, self.guidance_scale, self.flow_shift = num_inference_steps, guidance_scale, flow_shift
        self.trajectories, self.fov_x_deg = trajectories, float(fov_x_deg)
        self.point_radius_px, self.hole_threshold = float(point_radius_px), float(hole_threshold)
        self.output_depth, self.views_per_batch = output_depth, views_per_batch

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def describe(self) -> dict[str, Any]:
        images = [f"tensor{tuple(im.shape)}" if isinstance(im, Tensor) else str(im) for im in self.images]
        return {**super().describe(), "transformer": self.transformer_source, "depth": self.depth_source,
                "codec": type(self.codec).__name__, "images": images, "captions": self.captions,
                "num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "flow_shift": self.flow_shift, "trajectories": self.trajectories, "fov_x_deg": self.fov_x_deg,
                "point_radius_px": self.point_radius_px, "hole_threshold": self.hole_threshold,
                "output_depth": self.output_depth}

    def generate(self, index: int, num_frames: int, height: int, width: int) -> GeneratedClip:
        index = self.check_index(index)
        if not self.images:
            raise ValueError("Gen3CGenerator has no input images; pass images=[...] (tensors or image files) "
                             "or call from_image(image, ...) directly")
        caption = self.captions[index % len(self.captions)] if self.captions else ""
        return self.from_image(self.images[index % len(self.images)], num_frames, height, width,
                               caption=caption, seed=self.base_seed + index)

    def plan(
        self,
        image: Tensor | str,  # [H0, W0, 3] float in [0, 1] or uint8, or an image file
        num_frames: int,
        height: int | None = None,
        width: int | None = None,
        depth: Tensor | None = None,  # [H, W] z-depth of the (resized) image; None: estimate it
        seed: int = 0,
    ) -> CachePlan:
        """Steps 1-2: cameras, depth and the rendered 3D cache (no diffusion)."""
        image = load_image(image, height, width)
        latent = self.codec.latent_shape(num_frames, image.shape[0], image.shape[1])[1:]  # (T', h, w)
        patch = tuple(self.transformer.config.patch_size)
        if any(n % p for n, p in zip(latent, patch)):
            raise ValueError(f"latent grid (T', h, w) = {latent} is not divisible by the transformer's patch size "
                             f"{patch}; pick height/width that are multiples of {self.codec.space_factor * patch[1]}")
        if depth is None:
            if self.depth_model is None:
                raise ValueError("no depth for the input image: pass depth=[H, W] or build the generator with "
                                 "depth_path=<local depth-estimation model folder>")
            depth = self.depth_model(image.to(self.device))
        return plan_cache(image.to(self.device), depth.to(self.device), num_frames, self.trajectories,
                          self.fov_x_deg, self.point_radius_px, self.hole_threshold, seed)

    @torch.no_grad()
    def condition(self, plan: CachePlan) -> Tensor:  # -> [V, C + 1, T', h, w] warped latents | hole fraction
        warped = torch.cat([self.codec.encode(v[None].float()) for v in plan.cache.rgb])  # one view at a time
        holes = mask_to_latent_grid(plan.cache.holes, self.codec.time_factor, self.codec.space_factor,
                                    self.codec.causal_first_frame)
        return torch.cat([warped.to(self.device), holes[:, None].to(self.device, warped.dtype)], dim=1)

    @torch.no_grad()
    def denoise(
        self,
        condition: Tensor,  # [V, C + 1, T', h, w]
        prompt_embeds: Tensor | None = None,  # [L, text_dim] from the model's text encoder; None: null prompt
        seed: int = 0,
    ) -> Tensor:  # [V, C, T', h, w] generated latents (float32)
        V, C = condition.shape[0], condition.shape[1] - 1
        text_dim = self.transformer.config.text_dim
        if prompt_embeds is not None and (prompt_embeds.ndim != 2 or prompt_embeds.shape[-1] != text_dim):
            raise ValueError(f"prompt_embeds must be [L, {text_dim}] (the transformer's text_dim), "
                             f"got {tuple(prompt_embeds.shape)}")
        use_cfg = prompt_embeds is not None and self.guidance_scale != 1.0
        text = torch.zeros(1, text_dim) if prompt_embeds is None else prompt_embeds.float()
        noise_gen = torch.Generator().manual_seed(int(seed))
        x = torch.randn((V, C) + tuple(condition.shape[2:]), generator=noise_gen).to(self.device)
        dtype = self.transformer.dtype  # diffusers skips the fp32-pinned layers when reporting it
        self.scheduler.set_timesteps(self.num_inference_steps, device=self.device)
        step = self.views_per_batch or V
        for t in self.scheduler.timesteps:
            velocity = torch.cat([self._velocity(x[i:i + step], condition[i:i + step], text, t, use_cfg, dtype)
                                  for i in range(0, V, step)])
            x = self.scheduler.step(velocity, t, x, return_dict=False)[0]
        return x.float()

    def _velocity(self, x: Tensor, cond: Tensor, text: Tensor, t: Tensor, use_cfg: bool, dtype: torch.dtype) -> Tensor:
        inp = torch.cat([x, cond.to(x.dtype)], dim=1)  # [B, 2C + 1, T', h, w]
        ehs = text[None].expand(inp.shape[0], -1, -1)
        if use_cfg:  # conditional and null-prompt branches in one batch
            inp, ehs = torch.cat([inp, inp]), torch.cat([ehs, torch.zeros_like(ehs)])
        out = self.transformer(hidden_states=inp.to(dtype), timestep=t.expand(inp.shape[0]).to(self.device),
                               encoder_hidden_states=ehs.to(self.device, dtype), return_dict=False)[0].float()
        if use_cfg:
            cond_v, null_v = out.chunk(2)
            return null_v + self.guidance_scale * (cond_v - null_v)
        return out

    @torch.no_grad()
    def from_image(
        self,
        image: Tensor | str,  # [H0, W0, 3] float in [0, 1] or uint8, or an image file
        num_frames: int,
        height: int | None = None,
        width: int | None = None,
        *,
        depth: Tensor | None = None,  # [H, W] z-depth; None: estimate with the depth model
        caption: str = "",
        prompt_embeds: Tensor | None = None,  # [L, text_dim]
        seed: int = 0,
    ) -> GeneratedClip:
        """Generate V clips of ``num_frames`` frames from one image (resized/cropped to height x width)."""
        plan = self.plan(image, num_frames, height, width, depth=depth, seed=seed)
        latents = self.denoise(self.condition(plan), prompt_embeds, seed)
        V, T = plan.c2w.shape[:2]
        return GeneratedClip(
            c2w=plan.c2w.cpu(), K=plan.K.cpu(), time=torch.zeros(V, T), latents=latents.cpu(),
            depth=plan.cache.depth.cpu() if self.output_depth == "cache" else None, depth_is_metric=False,
            caption=caption, meta={"seed": int(seed), "trajectories": list(self.trajectories),
                                   "hole_fraction": [float(h) for h in plan.cache.holes.float().mean((1, 2, 3))]})
