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

from dataclasses import asdict, dataclass

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
class BlockStackConfig:
    """Everything `BlockStack` needs; the defaults are Lyra's decoder body."""

    d_model: int = 512
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
    gradient_checkpointing: bool = False


class BlockStack(nn.Module):
    """[B, L, d_model] -> [B, L, d_model]: the blocks in order, then LayerNorm.

    Each block is its own module in `self.blocks` (an nn.ModuleList), the unit that FSDP2's
    `fully_shard` wraps and that gradient checkpointing recomputes.
    """

    def __init__(
        self,
        d_model: int = 512,
        pattern: str = "MMMMMMMA",
        num_layers: int = 16,
        d_state: int = 256,
        expand: int = 2,
        headdim: int = 64,
        d_conv: int = 4,
        ngroups: int = 1,
        chunk_size: int = 64,
        bi_combine: BiCombine = "sum",
        attn_headdim: int = 64,
        mlp_ratio: float = 4.0,
        norm_eps: float = 1e-5,
        scan_backend: ScanBackend = "auto",
        gradient_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.layer_types = parse_block_pattern(pattern, num_layers)
        blocks: list[nn.Module] = []
        for letter in self.layer_types:
            if letter == "M":
                blocks.append(
                    BiMamba2Block(
                        d_model, d_state=d_state, expand=expand, headdim=headdim, d_conv=d_conv,
                        ngroups=ngroups, chunk_size=chunk_size, combine=bi_combine,
                        norm_eps=norm_eps, scan_backend=scan_backend,
                    )
                )  # fmt: skip
            else:
                blocks.append(
                    AttentionBlock(d_model, attn_headdim, mlp_ratio=mlp_ratio, norm_eps=norm_eps)
                )
        self.blocks = nn.ModuleList(blocks)
        self.final_norm = nn.LayerNorm(d_model, eps=norm_eps)
        self.gradient_checkpointing = gradient_checkpointing

    @classmethod
    def from_config(cls, config: BlockStackConfig) -> "BlockStack":
        return cls(**asdict(config))

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
