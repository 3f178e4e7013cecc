"""Token-mixing blocks of the student decoder: bidirectional Mamba-2 (SSD) and attention."""

from lyra.models.blocks.attention import AttentionBlock
from lyra.models.blocks.mamba2 import BiMamba2Block, Mamba2
from lyra.models.blocks.norm import GatedRMSNorm
from lyra.models.blocks.ssd import (
    mamba_ssm_available,
    segment_sum,
    ssd_chunked_scan,
    ssd_naive_scan,
    ssd_scan,
)
from lyra.models.blocks.stack import BlockStack, BodyConfig, parse_block_pattern

__all__ = [
    "AttentionBlock",
    "BiMamba2Block",
    "BlockStack",
    "BodyConfig",
    "GatedRMSNorm",
    "Mamba2",
    "mamba_ssm_available",
    "parse_block_pattern",
    "segment_sum",
    "ssd_chunked_scan",
    "ssd_naive_scan",
    "ssd_scan",
]
