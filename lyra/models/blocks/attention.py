"""Pre-norm transformer block: full (non-causal) self-attention + MLP, both residual."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class AttentionBlock(nn.Module):
    """x = x + Attn(RMSNorm(x)); x = x + MLP(RMSNorm(x)), [B, L, D] -> [B, L, D].

    Attention is bidirectional (every token sees every token), through
    `F.scaled_dot_product_attention`, which picks flash / memory-efficient kernels when it can.
    """

    def __init__(
        self,
        d_model: int,
        headdim: int = 64,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if d_model % headdim != 0:
            raise ValueError(
                f"d_model ({d_model}) must be divisible by headdim ({headdim}); pick a divisor"
            )
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be positive, got {mlp_ratio}")
        self.nheads, self.headdim = d_model // headdim, headdim
        self.attn_norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=qkv_bias)
        self.attn_out = nn.Linear(d_model, d_model)
        hidden = int(round(mlp_ratio * d_model))
        self.mlp_norm = nn.RMSNorm(d_model, eps=norm_eps)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d_model)
        )

    def forward(self, x: Tensor) -> Tensor:  # [B, L, D] -> [B, L, D]
        q, k, v = (
            self.qkv(self.attn_norm(x))
            .unflatten(-1, (3, self.nheads, self.headdim))  # [B, L, 3, H, P]
            .permute(2, 0, 3, 1, 4)  # [3, B, H, L, P], the layout SDPA wants
        )
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        x = x + self.attn_out(attended.transpose(1, 2).flatten(-2))
        return x + self.mlp(self.mlp_norm(x))
