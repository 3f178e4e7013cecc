"""Where a decoder's grid Gaussians sit, and how raw head channels become Gaussians there.

Each Gaussian of the grid lies on the ray through the centre of its pixel block: ``density`` x
``density`` Gaussians per latent pixel, on the source frames that emit Gaussians (every frame, or
one per latent frame: ``gaussian_frames``), at the distance its raw channels give (or a correction
of an input depth, where the decoder reads one). docs/conventions.md states the layout.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from lyra.data.codecs.frames import last_frame_of, latent_frame_count
from lyra.models.decoders.activations import (
    RAW_CHANNELS,
    GaussianActivationConfig,
    activate_gaussians,
)
from lyra.render.cameras import pixel_rays, ray_distance, resize_intrinsics
from lyra.render.gaussians import Gaussians
from lyra.render.rotations import quat_multiply, rotmat_to_quat

GaussianFrames = Literal["all", "latent"]


def orient_to_world(g: Gaussians, ref: Tensor) -> Gaussians:  # ref [B, (M,) 4, 4] the frame orientations are in
    """Decoders predict orientations in a camera's frame (the first source camera, or the input
    camera for input pixels): rotate them to world coordinates."""
    q_ref = rotmat_to_quat(ref[..., :3, :3])
    q_ref = q_ref.reshape(*q_ref.shape[:-1], *([1] * (g.quats.ndim - q_ref.ndim)), 4)
    g.quats = quat_multiply(q_ref.to(g.quats.dtype).expand_as(g.quats), g.quats)
    return g


class GaussianLayout:
    """The grid of a decoder's Gaussians (no parameters: the facts of its configuration).

    Args:
        time_factor: frames per latent frame of the codec.
        space_factor: pixels per latent pixel (each side) of the codec.
        causal_first_frame: whether the codec encodes the first frame alone.
        density: Gaussians per latent pixel along each side.
        gaussian_frames: ``"all"`` (every source frame emits Gaussians) or ``"latent"`` (the last
            frame of each latent frame's group).
        latent_frames_per_view: with ``"latent"``, this many latent frames of each trajectory emit,
            evenly spaced with the first and the last included (``None``: all).
        activation: raw channels -> Gaussian parameters.
    """

    def __init__(self, time_factor: int, space_factor: int, causal_first_frame: bool, density: int,
                 gaussian_frames: GaussianFrames, latent_frames_per_view: int | None,
                 activation: GaussianActivationConfig) -> None:
        self.time_factor, self.space_factor, self.causal_first_frame = time_factor, space_factor, causal_first_frame
        self.density, self.gaussian_frames = density, gaussian_frames
        self.latent_frames_per_view, self.activation = latent_frames_per_view, activation

    def latent_frames(self, x: Tensor, dim: int) -> Tensor:
        """``x`` restricted, along its latent-frame axis ``dim``, to the latent frames that emit Gaussians."""
        n, tl = self.latent_frames_per_view, x.shape[dim]
        if n is None or n >= tl:
            return x
        return x.index_select(dim, torch.linspace(0, tl - 1, n, device=x.device).round().long())

    def frame_indices(self, num_frames: int) -> Tensor:  # [F] the source frames that emit Gaussians
        if self.gaussian_frames == "all":
            return torch.arange(num_frames)
        tl = latent_frame_count(num_frames, self.time_factor, self.causal_first_frame)
        latent = self.latent_frames(torch.arange(tl), 0)
        return last_frame_of(latent, self.time_factor, self.causal_first_frame)

    def grid_size(self, image_size: tuple[int, int]) -> tuple[int, int]:  # (H, W) -> (gh, gw)
        return tuple(n // self.space_factor * self.density for n in image_size)  # type: ignore[return-value]

    def to_gaussians(
        self,
        raw: Tensor,  # [B, M, V, F, gh, gw, 12] raw channels of every grid Gaussian
        c2w: Tensor,  # [B, V, T, 4, 4] every source camera
        K: Tensor,  # [B, V, T, 3, 3]
        prior_depth: Tensor | None = None,  # [B, M, V, F, gh, gw] an input depth seen from each cell, 0 = none
    ) -> Gaussians:  # [B, M, V*F*gh*gw] in world coordinates
        B, M, V, F_, gh, gw, _ = raw.shape
        ref = c2w[:, 0, 0]  # orientations are predicted in the first source camera's frame
        frames = self.frame_indices(c2w.shape[2]).to(c2w.device)
        c2w, K = c2w[:, :, frames], K[:, :, frames]
        K_grid = resize_intrinsics(K, (gh // self.density * self.space_factor, gw // self.density * self.space_factor),
                                   (gh, gw))
        origins, dirs = pixel_rays(c2w, K_grid, gh, gw)  # [B, V, F, gh, gw, 3]
        # A cell's width per unit of distance along its ray (1 / focal in grid cells).
        footprint = (1.0 / torch.sqrt(K_grid[..., 0, 0] * K_grid[..., 1, 1]))[..., None, None].expand(origins.shape[:-1])
        prior = None
        if prior_depth is not None:
            prior = ray_distance(prior_depth, dirs[:, None], c2w[:, None]).reshape(B, M, -1)
        shape = (B, M, V * F_ * gh * gw)

        def per_set(x: Tensor) -> Tensor:  # [B, V, F, gh, gw(, c)] -> [B, M, N(, c)], the same for every set
            return x[:, None].expand(B, M, *x.shape[1:]).reshape(*shape, *x.shape[5:])

        g = activate_gaussians(raw.reshape(*shape, RAW_CHANNELS), per_set(origins), per_set(dirs), self.activation,
                               footprint=per_set(footprint), prior=prior)
        return orient_to_world(g, ref[:, None])

    def source_depths(
        self,
        gaussians: Gaussians,  # batch [B] or [B, M]: grid Gaussians first, as the decoders return them
        c2w: Tensor,  # [B, V, T, 4, 4] the source cameras
        image_size: tuple[int, int],  # (H, W) of the source frames
    ) -> Tensor:  # [B, (M,) V, F, gh, gw] camera z of every grid Gaussian in its own source frame
        """The grid Gaussians laid back on their source pixel grid: a depth map per source frame, to
        compare with a clip's depth there (``grid_depth``)."""
        gh, gw = self.grid_size(image_size)
        lead = tuple(gaussians.batch_shape)
        c2w = c2w[:, :, self.frame_indices(c2w.shape[2]).to(c2w.device)]
        V, F_ = c2w.shape[1:3]
        means = gaussians.means[..., : V * F_ * gh * gw, :].reshape(*lead, V, F_, gh, gw, 3)
        cams = c2w.reshape(c2w.shape[0], *([1] * (len(lead) - 1)), V, F_, 1, 1, 4, 4)
        return ((means - cams[..., :3, 3]) * cams[..., :3, 2]).sum(-1)

    def grid_depth(
        self,
        depth: Tensor,  # [B, V, T, H, W] the source frames' depth (0 = unknown)
    ) -> Tensor:  # [B, V, F, gh, gw] the depth at each Gaussian's block centre, frames with Gaussians
        s = self.space_factor // self.density
        return depth[:, :, self.frame_indices(depth.shape[2]).to(depth.device), s // 2::s, s // 2::s]
