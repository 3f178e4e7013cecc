"""What the student hands its decoder from a batch, and what it compares the decoder's output with.

The decoder reads latents and source cameras, and, as its settings ask, the input frame's depth
(``input_depth``) and pixels (``input_image_gaussians``): the input image (trajectory 0, frame 0)
for a static decoder, the input video (trajectory 0, every frame) for a dynamic one. A procedural
teacher's depth is exact and a real pipeline's comes from a monocular estimate, so training and
evaluation may put a smooth log-normal error on it (``input_depth_noise``), one field per scene:
keyed by the scene's input frame, so it is the same at every use of a clip whatever views were
sampled, and the evaluation's ``input_warp`` baseline lifts the very depth the student read.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from lyra.data.clip import ClipBatch
from lyra.eval.geometry import depth_errors
from lyra.models.decoders import GaussianDecoder, perturb_depth
from lyra.models.decoders.input_depth import landing_cells
from lyra.render.gaussians import Gaussians


def scene_seed(input_depth: Tensor) -> int:  # [H, W] the input frame's depth
    """A seed that identifies a scene by its input frame (every trajectory starts there)."""
    data = input_depth.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") % (1 << 31)


def noisy_input_depth(
    depth: Tensor,  # [B, T, H, W] trajectory 0's depth (T = 1 for an input image)
    noise: float,  # std of the log-normal error (0: the depth as given)
) -> Tensor:  # [B, T, H, W] each scene's depth times its own smooth error field, the same on every frame
    if noise <= 0:
        return depth
    B, T = depth.shape[:2]
    seeds = [scene_seed(depth[b, 0]) for b in range(B)]
    return perturb_depth(depth.flatten(0, 1), noise, [s for s in seeds for _ in range(T)]).reshape(depth.shape)


def read_input_depth(batch: ClipBatch, dynamic: bool, noise: float = 0.0) -> Tensor | None:  # [B, T or 1, H, W]
    """Trajectory 0's depth as a student reads it: its first frame (static) or every frame (dynamic),
    with ``noise`` applied (``noisy_input_depth``); None when the clips carry no depth. The test
    report's ``input_warp`` baseline lifts exactly this."""
    if batch.src_depth is None:
        return None
    return noisy_input_depth(batch.src_depth[:, 0] if dynamic else batch.src_depth[:, 0, :1], noise)


def input_depth(batch: ClipBatch, dynamic: bool, noise: float = 0.0) -> Tensor:  # static [B, H, W]; dynamic [B, T, H, W]
    """The depth a decoder built with ``input_depth`` reads (``read_input_depth``)."""
    depth = read_input_depth(batch, dynamic, noise)
    if depth is None:
        raise ValueError("the decoder reads the input frame's depth (input_depth=True) but the clips carry no "
                         "depth; use a teacher that writes depth (procedural, GEN3C with output_depth='cache') "
                         "or a decoder built without input_depth")
    return depth if dynamic else depth[:, 0]


def decoder_inputs(decoder: GaussianDecoder, batch: ClipBatch, noise: float = 0.0) -> dict[str, Tensor]:
    """Everything ``decoder.forward`` takes besides latents, cameras and times, as its settings ask."""
    cfg = decoder.config
    out = {"input_depth": input_depth(batch, decoder.is_dynamic, noise)} if cfg.input_depth else {}
    if cfg.input_image_gaussians:
        out["input_image"] = batch.input_rgb if decoder.is_dynamic else batch.input_rgb[:, 0]
    return out


def source_depth_pairs(
    decoder: GaussianDecoder,
    g: Gaussians,  # batch [B] or [B, M], as the decoder returned them
    batch: ClipBatch,
) -> tuple[Tensor, Tensor]:  # [B, (M,) V, F, gh, gw] each grid Gaussian's depth and the clip's depth there
    """For a dynamic decoder, a target time's Gaussians are compared only in the source frames shot at
    that time (elsewhere the scene may have moved): other frames get target 0 (unknown). The input
    pixels are left out: supervising their depth too pinned them and cost the holes (E27,
    docs/experiments.md)."""
    pred = decoder.gaussian_depths(g, batch.src_c2w, batch.src_depth.shape[-2:])
    target = decoder.grid_depth(batch.src_depth)
    if decoder.is_dynamic:
        frames = decoder.gaussian_frame_indices(batch.src_time.shape[2]).to(batch.src_time.device)
        src_t = batch.src_time[:, :, frames]  # [B, V, F]
        same = (src_t[:, None] - target_times(batch)[:, :, None, None]).abs() < 1e-6  # [B, M, V, F]
        target = torch.where(same[..., None, None], target[:, None], torch.zeros_like(target[:, None]))
    return pred, target


def target_times(batch: ClipBatch) -> Tensor:  # [B, M] the scene time of every target view
    return batch.time.reshape(batch.batch_size, -1)


def input_coverage(
    decoder: GaussianDecoder,
    batch: ClipBatch,
    grid: tuple[int, int],  # (gh, gw) cells over each target image
) -> Tensor:  # [B, V*F, gh, gw] bool: True where a pixel of the input frame (sky included) lands
    """Which parts of every target view the decoder's input frame shows: its holes (False) are
    disocclusions and the world beyond its edges. A dynamic decoder's target view m reads set m."""
    B, V, F_ = batch.rgb.shape[:3]
    target = target_times(batch) if decoder.is_dynamic else None
    frames = decoder.input_frames(batch.src_c2w, batch.src_K, input_depth(batch, decoder.is_dynamic), batch.src_time,
                                  target)
    cams, Ks = batch.c2w.reshape(B, V * F_, 4, 4), batch.K.reshape(B, V * F_, 3, 3)
    if decoder.is_dynamic:  # one target view per set: each with its own input frame
        covered = landing_cells(frames.depth.flatten(0, 1), frames.c2w.flatten(0, 1), frames.K.flatten(0, 1),
                                cams.flatten(0, 1)[:, None], Ks.flatten(0, 1)[:, None], grid)
        return covered.reshape(B, V * F_, *grid)
    return landing_cells(frames.depth[:, 0], frames.c2w[:, 0], frames.K[:, 0], cams, Ks, grid)


def hole_weights(
    decoder: GaussianDecoder,
    batch: ClipBatch,
    weight: float,  # extra weight of a hole pixel
) -> Tensor:  # [B, V*F, H, W] 1 where the input frame shows the target pixel, 1 + weight in its holes
    """Pixel weights of the image loss that single out what the input frame does not show; its
    coverage is found on a half-resolution grid (a z-buffer of its points, not a render)."""
    H, W = batch.rgb.shape[-3:-1]
    holes = ~input_coverage(decoder, batch, (H // 2, W // 2))
    return 1 + weight * holes.repeat_interleave(2, -2).repeat_interleave(2, -1).float()


@torch.no_grad()
def depth_report(
    decoder: GaussianDecoder,
    g: Gaussians,  # batch [B] or [B, M]
    batch: ClipBatch,
    noise: float,  # the input depth noise the decoder read
) -> dict[str, Tensor]:  # values [B] (``lyra.eval.geometry.depth_errors``)
    """The geometry line of the test report: the Gaussians' depth errors, and where the decoder
    read an input depth, that depth's error beside theirs."""
    pred, target = source_depth_pairs(decoder, g, batch)
    given = None
    if decoder.config.input_depth:
        read = input_depth(batch, decoder.is_dynamic, noise)
        given = decoder.input_depth_prior(batch.src_c2w, batch.src_K, read, batch.src_time,
                                          target_times(batch) if decoder.is_dynamic else None)
    return depth_errors(pred, target, given)
