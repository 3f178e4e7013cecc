"""The student's optimiser, learning-rate schedule (Lyra: AdamW, warm-up, then constant), its latent
skip's least-squares start and FSDP2 sharding: what ``StudentModule`` sets up before and around steps."""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal

import torch
from torch import nn

LRSchedule = Literal["constant", "cosine"]


def adamw(
    params: Iterable[nn.Parameter],
    lr: float,
    betas: tuple[float, float],
    weight_decay: float,
) -> torch.optim.AdamW:
    """AdamW with weight decay only on parameters of two dims or more: norm scales, biases and
    Mamba's ``A_log`` / ``D`` / ``dt_bias`` are 1-D, and decaying them pulls the SSM's time constants
    and skips towards zero for no benefit."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=tuple(betas))


def lr_factor(step: int, warmup_steps: int, schedule: LRSchedule, total_steps: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup_steps``, then constant or cosine down to ``min_ratio`` at ``total_steps``."""
    warm = max(1, warmup_steps)
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total_steps - warm))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def fit_skip_on_clips(decoder: nn.Module, datamodule: Any, n: int, device: torch.device) -> float:
    """Fit the decoder's latent skip (colour readout) by least squares on ``n`` training clips.

    Returns the RMS colour error (pre-activation). Needs an unsharded decoder and a data module with
    ``peek_clips(split, n)`` (``ClipDataModule``)."""
    if getattr(decoder, "_lyra_sharded", False):
        raise ValueError("skip_init_clips needs an unsharded decoder; fit the skip once on one process and "
                         "start the sharded run from it with init_from")
    peek = getattr(datamodule, "peek_clips", None)
    if peek is None:
        raise ValueError("skip_init_clips needs a data module with peek_clips(split, n) (ClipDataModule)")
    clips = peek("train", n)
    return decoder.fit_latent_skip(torch.cat([c.latents for c in clips]).to(device),
                                   torch.cat([c.rgb for c in clips]).to(device))


def shard_decoder(decoder: nn.Module, mesh: Any) -> None:
    """Shard every decoder block, then the decoder, with FSDP2 over ``mesh["data_parallel"]`` (once)."""
    if getattr(decoder, "_lyra_sharded", False):
        return  # already sharded (test after fit)
    from torch.distributed.fsdp import (
        fully_shard,  # needs a distributed build of torch; only here
    )

    for block in decoder.blocks.blocks:
        fully_shard(block, mesh=mesh["data_parallel"])
    fully_shard(decoder, mesh=mesh["data_parallel"])
    decoder._lyra_sharded = True
