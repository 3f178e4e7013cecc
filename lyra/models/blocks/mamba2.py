"""Mamba-2 token mixer and the bidirectional pre-norm block built from two of them."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lyra.models.blocks.norm import GatedRMSNorm
from lyra.models.blocks.ssd import ScanBackend, ssd_scan

BiCombine = Literal["sum", "concat_linear"]


def causal_depthwise_conv1d(
    x: Tensor,  # [B, L, C]
    weight: Tensor,  # [C, 1, k] an nn.Conv1d(C, C, k, groups=C) weight
    bias: Tensor | None,  # [C]
) -> Tensor:  # [B, L, C]: out[t] = bias + sum_j weight[j] x[t - k + 1 + j] (zeros before the start)
    """The depthwise causal convolution of Mamba as k shifted multiply-adds, channels last. Same
    values as ``F.conv1d(x.mT, weight, bias, padding=k - 1, groups=C)[..., :L]`` (the reference,
    tests/test_blocks.py); on CPU torch's grouped-convolution backward is ~50x slower than this for
    Mamba's sizes (it was a fifth of a dynamic training step)."""
    L, k = x.shape[1], weight.shape[-1]
    padded = F.pad(x, (0, 0, k - 1, 0))
    w = weight[:, 0].to(x.dtype)  # [C, k]
    out = padded[:, :L] * w[:, 0]
    for j in range(1, k):
        out = out + padded[:, j:j + L] * w[:, j]
    return out if bias is None else out + bias.to(x.dtype)


class Mamba2(nn.Module):
    """One causal (left-to-right) Mamba-2 layer, [B, L, d_model] -> [B, L, d_model].

    in_proj -> (z, xBC, dt); depthwise causal conv1d + SiLU over xBC; selective SSD scan with
    scalar-times-identity A per head, dt = softplus(raw + dt_bias), D skip; gated RMSNorm with z;
    out_proj. Same parameterisation and initialisation ranges as the reference Mamba-2.
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 256,
        expand: int = 2,
        headdim: int = 64,
        d_conv: int = 4,
        ngroups: int = 1,
        chunk_size: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        norm_eps: float = 1e-5,
        scan_backend: ScanBackend = "auto",
    ) -> None:
        super().__init__()
        d_inner = expand * d_model
        if d_inner % headdim != 0:
            raise ValueError(
                f"expand * d_model ({d_inner}) must be divisible by headdim ({headdim}); "
                "pick a headdim that divides it"
            )
        nheads = d_inner // headdim
        if nheads % ngroups != 0:
            raise ValueError(f"number of heads ({nheads}) must be divisible by ngroups ({ngroups})")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.d_model, self.d_state, self.d_inner = d_model, d_state, d_inner
        self.headdim, self.nheads, self.ngroups = headdim, nheads, ngroups
        self.chunk_size, self.scan_backend = chunk_size, scan_backend
        conv_dim = d_inner + 2 * ngroups * d_state  # the conv runs over x, B and C together

        self.in_proj = nn.Linear(d_model, d_inner + conv_dim + nheads, bias=False)
        self.conv1d = nn.Conv1d(
            conv_dim, conv_dim, kernel_size=d_conv, groups=conv_dim, padding=d_conv - 1
        )
        # dt_bias = softplus^-1(dt) for dt log-uniform in [dt_min, dt_max]: the layer starts
        # with a spread of time scales, from short to long memory.
        log_dt = torch.rand(nheads) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        dt = torch.exp(log_dt)
        dt = dt.clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(nheads))
        self.norm = GatedRMSNorm(d_inner, group_size=d_inner // ngroups, eps=norm_eps)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)

    def forward(self, u: Tensor) -> Tensor:  # [B, L, d_model] -> [B, L, d_model]
        b, L, _ = u.shape
        gn = self.ngroups * self.d_state
        z, xBC, dt = torch.split(
            self.in_proj(u), [self.d_inner, self.d_inner + 2 * gn, self.nheads], dim=-1
        )
        xBC = F.silu(causal_depthwise_conv1d(xBC, self.conv1d.weight, self.conv1d.bias))
        x, B, C = torch.split(xBC, [self.d_inner, gn, gn], dim=-1)
        x = x.unflatten(-1, (self.nheads, self.headdim))  # [B, L, H, P]
        dt = F.softplus(dt + self.dt_bias)  # [B, L, H]
        A = -torch.exp(self.A_log.float())  # [H], negative so the state decays
        y = ssd_scan(
            x,
            dt,
            A,
            B.unflatten(-1, (self.ngroups, self.d_state)),
            C.unflatten(-1, (self.ngroups, self.d_state)),
            chunk_size=self.chunk_size,
            backend=self.scan_backend,
        )
        y = y + x * self.D[:, None].to(x.dtype)
        return self.out_proj(self.norm(y.flatten(-2), z))


class BiMamba2Block(nn.Module):
    """Pre-norm residual block: x + combine(fwd(n), flip(bwd(flip(n)))), n = RMSNorm(x).

    fwd and bwd are two `Mamba2` layers; flip reverses the sequence axis.

    The two directions have separate parameters. `combine="sum"` (default) adds the two outputs;
    `"concat_linear"` concatenates them and projects 2 d_model -> d_model (more parameters).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 256,
        expand: int = 2,
        headdim: int = 64,
        d_conv: int = 4,
        ngroups: int = 1,
        chunk_size: int = 64,
        combine: BiCombine = "sum",
        norm_eps: float = 1e-5,
        scan_backend: ScanBackend = "auto",
    ) -> None:
        super().__init__()
        if combine not in ("sum", "concat_linear"):
            raise ValueError(f"combine must be 'sum' or 'concat_linear', got {combine!r}")
        kwargs = dict(
            d_state=d_state, expand=expand, headdim=headdim, d_conv=d_conv, ngroups=ngroups,
            chunk_size=chunk_size, norm_eps=norm_eps, scan_backend=scan_backend,
        )  # fmt: skip
        self.norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.forward_mixer = Mamba2(d_model, **kwargs)
        self.backward_mixer = Mamba2(d_model, **kwargs)
        self.combine = combine
        self.merge = (
            nn.Linear(2 * d_model, d_model, bias=False) if combine == "concat_linear" else None
        )

    def forward(self, x: Tensor) -> Tensor:  # [B, L, D] -> [B, L, D]
        h = self.norm(x)
        fwd = self.forward_mixer(h)
        bwd = self.backward_mixer(h.flip(1)).flip(1)
        if self.merge is None:
            return x + fwd + bwd
        return x + self.merge(torch.cat([fwd, bwd], dim=-1))
