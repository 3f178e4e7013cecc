"""A stack of token-mixing blocks chosen by a pattern string, with a final LayerNorm.

Pattern grammar: a string over the letters
    "M"  bidirectional Mamba-2 block (`BiMamba2Block`)
    "A"  attention block (`AttentionBlock`)
(case-insensitive, no other characters). The pattern is tiled to `num_layers`, so
`num_layers` must be a multiple of its length. Lyra's body is pattern "MMMMMMMA" with
`num_layers=16`: blocks 8 and 16 (1-based) are attention, the other 14 are Mamba-2.
A single letter ("M" or "A") gives a homogeneous stack.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from lyra.models.blocks.attention import AttentionBlock
from lyra.models.blocks.mamba2 import BiCombine, BiMamba2Block
from lyra.models.blocks.ssd import ScanBackend

BLOCK_LETTERS = {"M": "bidirectional Mamba-2", "A": "attention"}


def parse_block_pattern(pattern: str, num_layers: int) -> list[str]:
    """Expand `pattern` to one letter per layer, e.g. ("MA", 4) -> ["M", "A", "M", "A"]."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty string over 'M'/'A', got {pattern!r}")
    letters = pattern.upper()
    unknown = sorted(set(letters) - set(BLOCK_LETTERS))
    if unknown:
        raise ValueError(
            f"pattern {pattern!r} contains {unknown}; use only 'M' (bidirectional Mamba-2) "
            "and 'A' (attention), e.g. 'MMMMMMMA'"
        )
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
    if num_layers % len(letters) != 0:
        raise ValueError(
            f"num_layers ({num_layers}) is not a multiple of the pattern length "
            f"({len(letters)}, pattern {pattern!r}); change num_layers or the pattern"
        )
    return list(letters * (num_layers // len(letters)))


@dataclass
class BodyConfig:
    """The decoder body's architecture, passed whole to ``BlockStack`` and to both Gaussian
    decoders (one object, as litgpt passes its ``Config``). The defaults are Lyra's body.

    Args:
        width: token width (Lyra: 512).
        pattern: block pattern over "M" (bidirectional Mamba-2) and "A" (attention), tiled to
            ``num_layers`` (Lyra: "MMMMMMMA", blocks 8 and 16 attention).
        num_layers: number of blocks (Lyra: 16).
        d_state: Mamba-2 state size (Lyra: 256).
        expand: Mamba-2 inner width factor (Lyra: 2).
        headdim: Mamba-2 head dim (Lyra: 64).
        d_conv: Mamba-2 depthwise convolution width.
        ngroups: Mamba-2 groups of B/C.
        chunk_size: SSD scan chunk length (speed only; results do not depend on it).
        bi_combine: how the two scan directions merge, ``"sum"`` or ``"concat_linear"``.
        attn_headdim: attention head dim.
        mlp_ratio: attention blocks' MLP width factor.
        norm_eps: epsilon of every norm.
        scan_backend: ``"auto"`` (mamba_ssm's kernels on CUDA when installed), ``"torch"`` or
            ``"mamba_ssm"``.
    """

    width: int = 512
    pattern: str = "MMMMMMMA"
    num_layers: int = 16
    d_state: int = 256
    expand: int = 2
    headdim: int = 64
    d_conv: int = 4
    ngroups: int = 1
    chunk_size: int = 64
    bi_combine: BiCombine = "sum"
    attn_headdim: int = 64
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5
    scan_backend: ScanBackend = "auto"

    def __post_init__(self) -> None:
        parse_block_pattern(self.pattern, self.num_layers)  # fail at construction, naming the problem
        if self.width % self.attn_headdim:
            raise ValueError(f"width {self.width} must be a multiple of attn_headdim {self.attn_headdim}")

    @classmethod
    def coerce(cls, value: "BodyConfig | dict[str, Any] | None") -> "BodyConfig":
        """A ``BodyConfig`` from itself, a dict (a saved decoder config) or None (the defaults)."""
        if value is None:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, dict):
            unknown = sorted(set(value) - {f.name for f in fields(cls)})
            if unknown:
                raise ValueError(f"unknown decoder body settings {unknown}; valid: {[f.name for f in fields(cls)]}")
            return cls(**value)
        raise TypeError(f"body must be a BodyConfig or a dict, got {type(value).__name__}")


class BlockStack(nn.Module):
    """[B, L, width] -> [B, L, width]: the blocks in order, then LayerNorm.

    Each block is its own module in `self.blocks` (an nn.ModuleList), the unit that FSDP2's
    `fully_shard` wraps and that gradient checkpointing recomputes. Checkpointing is a runtime
    switch, not architecture: set ``gradient_checkpointing`` (diffusers'
    ``enable_gradient_checkpointing()`` on the decoder does it).
    """

    def __init__(self, config: BodyConfig | None = None) -> None:
        super().__init__()
        cfg = BodyConfig.coerce(config)
        self.config = cfg
        self.d_model = cfg.width
        self.layer_types = parse_block_pattern(cfg.pattern, cfg.num_layers)
        blocks: list[nn.Module] = []
        for letter in self.layer_types:
            if letter == "M":
                blocks.append(BiMamba2Block(
                    cfg.width, d_state=cfg.d_state, expand=cfg.expand, headdim=cfg.headdim, d_conv=cfg.d_conv,
                    ngroups=cfg.ngroups, chunk_size=cfg.chunk_size, combine=cfg.bi_combine, norm_eps=cfg.norm_eps,
                    scan_backend=cfg.scan_backend))
            else:
                blocks.append(AttentionBlock(cfg.width, cfg.attn_headdim, mlp_ratio=cfg.mlp_ratio, norm_eps=cfg.norm_eps))
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = nn.LayerNorm(cfg.width, eps=cfg.norm_eps)
        self.gradient_checkpointing = False

    def forward(self, x: Tensor) -> Tensor:  # [B, L, D] -> [B, L, D]
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(
                f"BlockStack expects tokens [batch, length, {self.d_model}], got {tuple(x.shape)}; "
                "flatten space/time/views into the length axis first"
            )
        # Recompute activations only when they would be kept for a backward pass.
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return self.final_norm(x)
