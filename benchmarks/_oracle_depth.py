"""A diagnostic for ``quality.py --oracle-depth``: what the student would score with better depth.

Not a method. Every Gaussian whose source pixel has a known depth is slid along its ray to the
clip's depth there (its scale follows, as footprint scales do), optionally with log-normal errors
of a chosen size: ``bias`` (one per source frame, as a decoder's misjudged scene scale) and
``noise`` (one per Gaussian), both fixed per scene. Everything else (colours, shapes, opacities)
is still the decoder's, and it trains against these positions. docs/experiments.md (section 6)
has what it measured.
"""

from __future__ import annotations

import dataclasses

import torch

from lyra.models import StudentModule
from lyra.models.student_inputs import scene_seed


def with_clip_depth(student: StudentModule, g, batch, bias: float, noise: float):
    dec = student.decoder
    if dec.is_dynamic or batch.src_depth is None:
        raise ValueError("--oracle-depth needs a static decoder and clips with source depth")
    pred = dec.gaussian_depths(g, batch.src_c2w, batch.src_depth.shape[-2:])  # [B, V, F, gh, gw]
    true = dec.grid_depth(batch.src_depth)
    seed = scene_seed(batch.src_depth[:, 0, 0])  # fixed per scene (its input frame), whatever views were drawn
    gen = torch.Generator().manual_seed(seed)
    err = bias * torch.randn(*pred.shape[:3], 1, 1, generator=gen) + noise * torch.randn(pred.shape, generator=gen)
    target = true * torch.exp(err.to(true))
    ratio = torch.where(true > 0, target / pred.detach().clamp_min(1e-3), torch.ones_like(pred))
    ratio = ratio.reshape(pred.shape[0], -1, 1)
    frames = dec.gaussian_frame_indices(batch.src_c2w.shape[2]).to(pred.device)
    centres = batch.src_c2w[:, :, frames][..., :3, 3]  # [B, V, F, 3]
    origins = centres[:, :, :, None, None].expand(*pred.shape, 3).reshape(pred.shape[0], -1, 3)
    return dataclasses.replace(g, means=origins + (g.means - origins) * ratio, scales=g.scales * ratio,
                               check_values=False)


def install(bias: float, noise: float) -> None:
    """Make every StudentModule of this process place its Gaussians at the (perturbed) clip depth."""
    plain = StudentModule.forward

    def forward(self, batch, *args, **kwargs):
        return with_clip_depth(self, plain(self, batch, *args, **kwargs), batch, bias, noise)

    StudentModule.forward = forward
