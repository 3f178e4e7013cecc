"""Normalisation layers the blocks need beyond torch's own.

Plain pre-norms use `torch.nn.RMSNorm`; Mamba-2 needs a *gated* RMSNorm (normalise y * silu(z)),
optionally per group of channels so that each SSM group is normalised on its own, which torch
does not provide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GatedRMSNorm(nn.Module):
    """out = rmsnorm(x * silu(z)) * weight, with the RMS taken over groups of `group_size`."""

    def __init__(self, dim: int, group_size: int | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        group_size = dim if group_size is None else group_size
        if group_size < 1 or dim % group_size != 0:
            raise ValueError(
                f"group_size ({group_size}) must divide dim ({dim}); use dim // ngroups"
            )
        self.dim, self.group_size, self.eps = dim, group_size, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(
        self,
        x: Tensor,  # [..., dim]
        z: Tensor,  # [..., dim], the gate
    ) -> Tensor:  # [..., dim]
        if x.shape[-1] != self.dim or z.shape != x.shape:
            raise ValueError(
                f"x and z must both end in dim={self.dim} with equal shapes; "
                f"got x {tuple(x.shape)}, z {tuple(z.shape)}"
            )
        dtype = x.dtype
        # Statistics in float32 at least: bf16 squares of large activations lose too much.
        gated = (x * F.silu(z)).to(torch.promote_types(dtype, torch.float32))
        grouped = gated.unflatten(-1, (self.dim // self.group_size, self.group_size))
        normed = grouped * torch.rsqrt(grouped.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return normed.flatten(-2).to(dtype) * self.weight

    def extra_repr(self) -> str:
        return f"{self.dim}, group_size={self.group_size}, eps={self.eps}"
