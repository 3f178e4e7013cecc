"""Monocular depth for the 3D cache: a ``transformers`` depth estimator loaded from a local folder.

What the models output, and what we hand on (always positive z-depth, OpenCV convention):

- ``relative_inverse`` (Depth Anything "relative", DPT/MiDaS): disparity known only up to an
  unknown scale *and shift*. No exact depth exists, so we pick one: the robust disparity range
  (2nd-98th percentile) is mapped affinely onto ``[1/far, 1/near]`` and inverted, so depth lies in
  ``[near, far]`` (defaults 1 and 20). The result is scale-ambiguous; the generator rescales its
  camera paths by the median depth, so only the ``far / near`` ratio shapes the geometry.
  A constant prediction (e.g. an untrained network) becomes the flat depth ``sqrt(near * far)``.
- ``metric`` (Depth Anything "metric", ZoeDepth, GLPN): already depth in metres; used as is
  (clamped to ``>= near * 1e-3`` so no point sits on the camera centre).
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoImageProcessor, AutoModelForDepthEstimation
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES,
)

DepthOutput = Literal["auto", "relative_inverse", "metric"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
_METRIC_MODEL_TYPES = ("zoedepth", "glpn")
_RELATIVE_MODEL_TYPES = ("dpt",)


def check_model_dir(path: str | os.PathLike, what: str) -> Path:
    """The folder must exist and hold a ``config.json`` (what ``save_pretrained`` writes)."""
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"{what} directory {str(p)!r} does not exist; pass the local folder written by "
                                "save_pretrained (nothing is downloaded: lyra runs offline)")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{what} directory {str(p)!r} has no config.json; point at the folder that "
                                "save_pretrained wrote (for a pipeline, its model subfolder)")
    return p


class MonocularDepth(nn.Module):
    """``images [B, H, W, 3]`` in [0, 1] -> z-depth ``[B, H, W]`` (see the module doc for units)."""

    def __init__(
        self,
        path: str | os.PathLike,
        output: DepthOutput = "auto",
        near: float = 1.0,
        far: float = 20.0,
        input_size: int = 518,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if not 0.0 < near < far:
            raise ValueError(f"need 0 < near < far, got near={near}, far={far}")

        folder = check_model_dir(path, "depth model")
        config = json.loads((folder / "config.json").read_text())
        model_type = config.get("model_type")
        if model_type not in MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES:
            found = model_type or config.get("_class_name") or "no model_type"
            raise ValueError(f"{str(folder)!r} holds {found!r}, not a transformers depth-estimation model; expected "
                             f"one of {sorted(MODEL_FOR_DEPTH_ESTIMATION_MAPPING_NAMES)} (e.g. a Depth Anything "
                             "folder saved with save_pretrained)")
        self.model = AutoModelForDepthEstimation.from_pretrained(folder).to(device=device, dtype=dtype).eval()
        self.model.requires_grad_(False)
        has_processor = (folder / "preprocessor_config.json").is_file()
        self.processor = AutoImageProcessor.from_pretrained(folder) if has_processor else None
        self.output: Literal["relative_inverse", "metric"] = self._resolve_output(output, model_type, config)
        self.near, self.far, self.input_size = float(near), float(far), int(input_size)
        backbone = config.get("backbone_config") or {}
        self.patch_size = int(backbone.get("patch_size", config.get("patch_size", 14)))

    @staticmethod
    def _resolve_output(output: DepthOutput, model_type: str, config: dict) -> Literal["relative_inverse", "metric"]:
        if output != "auto":
            if output not in ("relative_inverse", "metric"):
                raise ValueError(f"output must be 'auto', 'relative_inverse' or 'metric', got {output!r}")
            return output
        kind = config.get("depth_estimation_type")
        if model_type in _METRIC_MODEL_TYPES or kind == "metric":
            return "metric"
        if model_type in _RELATIVE_MODEL_TYPES or kind == "relative":
            return "relative_inverse"
        raise ValueError(f"cannot tell what a {model_type!r} model outputs; pass output='relative_inverse' "
                         "(disparity up to scale and shift) or output='metric' (depth in metres)")

    @property
    def is_metric(self) -> bool:
        return self.output == "metric"

    def _pixel_values(self, images: Tensor) -> Tensor:  # [B, H, W, 3] -> [B, 3, h, w]
        x = images.permute(0, 3, 1, 2).float()
        if self.processor is not None:
            return self.processor(images=list(x.cpu()), do_rescale=False, return_tensors="pt")["pixel_values"]
        # No processor saved: short side to input_size, both sides multiples of the ViT patch.
        H, W = x.shape[-2:]
        s = self.input_size / min(H, W)
        size = [max(self.patch_size, round(n * s / self.patch_size) * self.patch_size) for n in (H, W)]
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        mean = x.new_tensor(IMAGENET_MEAN)[:, None, None]
        return (x - mean) / x.new_tensor(IMAGENET_STD)[:, None, None]

    @torch.no_grad()
    def raw(self, images: Tensor) -> Tensor:  # [B, H, W, 3] -> [B, H, W] model output at image size
        B, H, W, _ = images.shape
        p = next(self.model.parameters())
        out = self.model(pixel_values=self._pixel_values(images).to(device=p.device, dtype=p.dtype))
        post_process = getattr(self.processor, "post_process_depth_estimation", None)
        if post_process is not None:
            # The processor knows its own padding (ZoeDepth pads and needs the source size); let it undo it.
            sizes = {"target_sizes": [(H, W)] * B}
            if "source_sizes" in inspect.signature(post_process).parameters:
                sizes["source_sizes"] = [(H, W)] * B
            post = post_process(out, **sizes)
            return torch.stack([d["predicted_depth"] for d in post]).float().to(images.device)
        pred = out.predicted_depth.float()[:, None]
        return F.interpolate(pred, size=(H, W), mode="bilinear", align_corners=False)[:, 0].to(images.device)

    def to_depth(self, raw: Tensor) -> Tensor:  # [B, H, W] -> [B, H, W] positive z-depth
        if self.is_metric:
            return raw.clamp_min(self.near * 1e-3)
        return disparity_to_depth(raw, self.near, self.far)

    def forward(self, images: Tensor) -> Tensor:  # [B, H, W, 3] or [H, W, 3] in [0, 1] -> [B, H, W] or [H, W]
        if not isinstance(images, Tensor) or images.shape[-1] != 3 or images.ndim not in (3, 4):
            shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor [H, W, 3] or [B, H, W, 3] in [0, 1], got {shape}")
        single = images.ndim == 3
        depth = self.to_depth(self.raw(images[None] if single else images))
        return depth[0] if single else depth


def disparity_to_depth(
    disparity: Tensor,  # [B, H, W] relative inverse depth, larger = nearer
    near: float,
    far: float,
) -> Tensor:  # [B, H, W] z-depth in [near, far]
    """Fix the scale and shift of a relative disparity by mapping its robust range onto [1/far, 1/near]."""
    flat = disparity.flatten(1).float()
    lo = torch.quantile(flat, 0.02, dim=1)[:, None, None]
    hi = torch.quantile(flat, 0.98, dim=1)[:, None, None]
    span = hi - lo
    degenerate = span <= 1e-6 * hi.abs().clamp_min(1e-6)
    u = ((disparity - lo) / torch.where(degenerate, torch.ones_like(span), span)).clamp(0, 1)
    inv = 1.0 / far + u * (1.0 / near - 1.0 / far)
    flat_depth = torch.full_like(inv, math.sqrt(near * far))
    return torch.where(degenerate, flat_depth, 1.0 / inv)
