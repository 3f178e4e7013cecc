"""The input frame each Gaussian set reads, and the decoder part that reads its depth.

A decoder built with ``input_depth`` / ``input_image_gaussians`` reads the input *frame* of every
Gaussian set it outputs: the static decoder's one set reads the input image (trajectory 0, frame 0);
each of the dynamic decoder's sets reads the input video's frame nearest its target time (trajectory
0). ``InputFrames`` holds that choice; ``InputDepthReader`` warps the chosen depth into every source
camera (``warp_depth``), once per distinct frame, and gives it to the tokens and to the grid
Gaussians as their starting distances. docs/conventions.md states which depth a clip holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lyra.models.decoders.input_depth import depth_features, warp_depth
from lyra.models.decoders.tokens import PatchEmbed3d, fold_to_latent_grid


def nearest_input_frames(
    time: Tensor,  # [B, V, T] scene time of every source frame
    target_time: Tensor,  # [B, M]
) -> Tensor:  # [B, M] for each target time, trajectory 0's frame nearest to it in time
    return (time[:, 0, None, :] - target_time[:, :, None]).abs().argmin(-1)


@dataclass
class InputFrames:
    """Per Gaussian set (M of them per scene) the input frame it reads: trajectory 0's ``frame``."""

    frame: Tensor  # [B, M] index into trajectory 0's frames
    depth: Tensor  # [B, M, H, W] z-depth, 0 = unknown
    c2w: Tensor  # [B, M, 4, 4] the camera it was seen from
    K: Tensor  # [B, M, 3, 3]
    image: Tensor | None = None  # [B, M, H, W, 3] its RGB (decoders with input-image Gaussians)

    @classmethod
    def pick(
        cls,
        frame: Tensor,  # [B, M] which frame of trajectory 0 each set reads
        c2w: Tensor,  # [B, V, T, 4, 4] the source cameras
        K: Tensor,  # [B, V, T, 3, 3]
        depth: Tensor,  # [B, T, H, W] trajectory 0's depth (only the frames picked are read)
        image: Tensor | None = None,  # [B, T, H, W, 3] trajectory 0's RGB
    ) -> "InputFrames":
        rows = torch.arange(frame.shape[0], device=frame.device)[:, None]
        return cls(frame, depth[rows, frame], c2w[:, 0][rows, frame], K[:, 0][rows, frame],
                   None if image is None else image[rows, frame])

    @property
    def sets(self) -> int:
        return self.frame.shape[1]

    def distinct(self) -> tuple["InputFrames", Tensor, Tensor]:
        """(the distinct (scene, frame) pairs as one flat batch [S'], the scene of each [S'], where
        each of the B * M sets finds its pair [B * M]): what depends only on the frame is computed
        once per frame, not once per set (a test of 30 target times reads 5 frames)."""
        B, M = self.frame.shape
        scene = torch.arange(B, device=self.frame.device)[:, None].expand(B, M)
        key = scene * (int(self.frame.max()) + 1) + self.frame
        uniq, inverse = torch.unique(key.flatten(), return_inverse=True)
        first = torch.full_like(uniq, B * M).scatter_reduce(0, inverse, torch.arange(B * M, device=key.device), "amin")
        pick = lambda t: None if t is None else t.flatten(0, 1)[first]  # noqa: E731
        flat = InputFrames(self.frame.flatten()[first][:, None], pick(self.depth), pick(self.c2w), pick(self.K),
                           pick(self.image))
        return flat, scene.flatten()[first], inverse


class InputDepthReader(nn.Module):
    """The input frame's depth as the decoder reads it: warped into every source camera, its log
    and coverage become token features through a zero-initialised patch embed (``tokens``), and
    seen from each grid cell it is the grid Gaussians' starting distance (``warp``).

    Args:
        width: token width.
        patch_size: latent pixels per token (each side).
        time_factor: frames per latent frame of the codec.
        causal_first_frame: whether the codec encodes the first frame alone.
        fill: fill holes of the warped depth this many cells deep (``fill_holes``).
        token_stride: the warp for the tokens reads one input pixel in ``token_stride`` x
            ``token_stride`` (``points_for_grid``); the grid Gaussians' warp reads them all.
    """

    def __init__(self, width: int, patch_size: int, time_factor: int, causal_first_frame: bool, fill: int,
                 token_stride: int = 1) -> None:
        super().__init__()
        self.time_factor, self.causal_first_frame, self.fill = time_factor, causal_first_frame, fill
        self.token_stride = token_stride
        self.embed = PatchEmbed3d(3 * time_factor, width, patch_size, zero_init=True)

    def warp(
        self,
        frames: InputFrames,  # M sets per scene
        c2w: Tensor,  # [B, V, T, 4, 4] the cameras to see it from
        K: Tensor,  # [B, V, T, 3, 3]
        grid: tuple[int, int],  # (gh, gw) cells per image
        stride: int = 1,  # read one input pixel in stride x stride (``points_for_grid``)
    ) -> tuple[Tensor, Tensor]:  # z-depth (0 = unknown), filled: [B, M, V, T, gh, gw]
        flat, scene, inverse = frames.distinct()
        z, filled = warp_depth(flat.depth, flat.c2w, flat.K, c2w[scene], K[scene], grid, self.fill, stride=stride)
        B, M = frames.frame.shape
        return z[inverse].reshape(B, M, *z.shape[1:]), filled[inverse].reshape(B, M, *filled.shape[1:])

    def tokens(
        self,
        frames: InputFrames,
        c2w: Tensor,  # [B, V, T, 4, 4] the source cameras
        K: Tensor,  # [B, V, T, 3, 3]
        latent_shape: tuple[int, int, int],  # (T', h, w)
    ) -> Tensor:  # [B, M, V, L, D] to add to the latent tokens
        _, h, w = latent_shape
        z, filled = self.warp(frames, c2w, K, (h, w), self.token_stride)  # [B, M, V, T, h, w]
        B, M, V, T = z.shape[:4]
        feats = fold_to_latent_grid(depth_features(z, filled).reshape(B * M * V, T, h, w, 3), self.time_factor,
                                    self.causal_first_frame)
        tokens = self.embed(feats.to(self.embed.proj.weight.dtype))
        return tokens.reshape(B, M, V, *tokens.shape[1:])
