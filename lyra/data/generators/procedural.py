"""ProceduralGenerator: the weight-free default teacher, ray-traced ``ProceduralWorld`` scenes.

Pixels are exact renders (they double as ``gt_rgb``) and depth is metric. Clip ``i`` shows the
world of seed ``seed + i`` (or ``seed + i // 2`` with ``time_reversal="extra_clips"``).

Dynamic scenes and time reversal (Lyra's augmentation): the teacher also generates the six
trajectories from the time-reversed input video. Such a generation shows, at frame ``i``, pose
``i`` at scene time ``1 - i / (T - 1)``. We store it re-reversed, every per-frame array flipped
together (``reverse_frames``): time runs 0 -> 1 again and the *poses* run backwards too, so
each frame keeps the camera it was rendered from (the reference tooling flipped frames but not
poses). Modes:

- ``"none"``: forward generations only;
- ``"extra_clips"``: even indices are forward, odd ones the reversed generation of the same scene;
- ``"random"``: each index is reversed with probability ``reverse_prob`` (seeded by the index).
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
from torch import Tensor

from lyra.data.generators.base import ClipGenerator, GeneratedClip
from lyra.data.procedural import SKY_DEPTH, ProceduralWorld, reverse_frames
from lyra.render.trajectories import LYRA_TRAJECTORIES

TimeReversal = Literal["none", "extra_clips", "random"]


class ProceduralGenerator(ClipGenerator):
    def __init__(
        self,
        seed: int = 0,
        dynamic: bool = False,
        num_views: int = 6,
        trajectories: Sequence[str] | None = None,
        fov_deg: float = 60.0,
        num_objects: tuple[int, int] = (4, 16),
        shadows: bool = True,
        time_reversal: TimeReversal = "none",
        reverse_prob: float = 0.5,
    ) -> None:
        super().__init__(seed)
        trajectories = list(LYRA_TRAJECTORIES[:num_views] if trajectories is None else trajectories)
        if trajectories and len(trajectories) != num_views:
            raise ValueError(f"num_views={num_views} disagrees with {len(trajectories)} trajectories "
                             f"{trajectories}; drop num_views or list exactly that many trajectories")
        unknown = [k for k in trajectories if k not in LYRA_TRAJECTORIES]
        if not trajectories or unknown:
            raise ValueError(f"trajectories must be 1-6 of {LYRA_TRAJECTORIES} (num_views <= 6), "
                             f"got {trajectories}")
        if time_reversal not in ("none", "extra_clips", "random"):
            raise ValueError(f"time_reversal must be 'none', 'extra_clips' or 'random', got {time_reversal!r}")
        if time_reversal != "none" and not dynamic:
            raise ValueError("time_reversal only applies to dynamic worlds (a static scene looks the same "
                             "backwards); set dynamic: true or time_reversal: none")
        if not 0.0 <= reverse_prob <= 1.0:
            raise ValueError(f"reverse_prob must lie in [0, 1], got {reverse_prob}")
        self.dynamic, self.trajectories, self.fov_deg = bool(dynamic), trajectories, float(fov_deg)
        self.num_objects, self.shadows = (int(num_objects[0]), int(num_objects[1])), bool(shadows)
        self.time_reversal, self.reverse_prob = time_reversal, float(reverse_prob)

    def scene_of(self, index: int) -> tuple[int, bool]:
        """(world seed, reversed?) of clip ``index``."""
        index = self.check_index(index)
        if self.time_reversal == "extra_clips":
            return self.base_seed + index // 2, bool(index % 2)
        if self.time_reversal == "random":
            # Its own stream (offset) so the coin does not correlate with the world's layout draws.
            coin = torch.rand((), generator=torch.Generator().manual_seed(self.base_seed + index + (1 << 40)))
            return self.base_seed + index, bool(coin < self.reverse_prob)
        return self.base_seed + index, False

    def generate(self, index: int, num_frames: int, height: int, width: int) -> GeneratedClip:
        index = self.check_index(index)
        seed, reverse = self.scene_of(index)
        world = ProceduralWorld(seed, dynamic=self.dynamic, num_objects=self.num_objects, shadows=self.shadows)
        # The default generator (seeded by the world seed) makes the forward and the reversed
        # generation of one scene share start view and trajectory magnitudes.
        clip = world.sample_clip(num_frames, height, width, trajectories=self.trajectories,
                                 fov_deg=self.fov_deg, reverse_time=reverse)
        if reverse:
            clip = reverse_frames(clip)
        return GeneratedClip(
            c2w=clip["c2w"], K=clip["K"], time=clip["time"], rgb=clip["rgb"], depth=sky_as_unknown(clip["depth"]),
            depth_is_metric=True, gt_rgb=clip["rgb"], caption=clip["caption"],
            meta={"index": index, "world_seed": seed, "time_reversed": reverse,
                  "trajectories": list(self.trajectories)},
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "dynamic": self.dynamic, "trajectories": list(self.trajectories),
                "fov_deg": self.fov_deg, "num_objects": list(self.num_objects), "shadows": self.shadows,
                "time_reversal": self.time_reversal, "reverse_prob": self.reverse_prob}


def sky_as_unknown(depth: Tensor) -> Tensor:  # [..., H, W]
    """Sky pixels carry a placeholder depth (SKY_DEPTH); in clips 0 means "no depth here" (as for
    the holes of a warped point cache), so depth losses skip them instead of pulling Gaussians
    out to a made-up distance."""
    return torch.where(depth >= SKY_DEPTH, torch.zeros_like(depth), depth)
