"""The student's optimiser and learning-rate schedule (Lyra: AdamW, warm-up, then constant)."""

from __future__ import annotations

import math
from typing import Iterable, Literal

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
