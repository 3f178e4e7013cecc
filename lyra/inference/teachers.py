"""The teachers of ``lyra generate``: clip generators for one scene along the requested cameras.

Each is a ``lyra.data.generators.ClipGenerator`` (so ``TeacherModule`` and ``lightning predict``
take it like any other) and checks its inputs in its constructor, before any long work:

- ``ProceduralTeacher``: the embedded ray-traced world (``ProceduralGenerator``'s clips, bit for bit,
  when no camera option is given) along Lyra's families and / or camera-path files.
- ``ImageTeacher``: the GEN3C-style diffusers teacher (``Gen3CGenerator``'s steps: depth -> 3D cache
  -> codec -> video transformer) from an image file, or from a text prompt through a diffusers
  text-to-image pipeline (``TextToImage``). Identical to ``Gen3CGenerator.from_image`` when no camera
  option is given.
- ``VideoTeacher``: a monocular video with per-frame cameras (``lyra.inference.video``): one trajectory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from diffusers import DiffusionPipeline
from torch import Tensor

from lyra.data.generators.base import ClipGenerator, GeneratedClip
from lyra.data.generators.gen3c import load_image
from lyra.data.generators.point_cache import CachePlan, lift_to_points, render_points
from lyra.data.generators.procedural import sky_as_unknown
from lyra.data.procedural import ProceduralWorld
from lyra.inference.paths import (
    Magnitude,
    check_trajectories,
    family_poses,
    load_camera_path,
    parse_magnitude,
    path_time,
    place_path,
    resample,
)
from lyra.inference.progress import bar, progress_enabled
from lyra.render.camera_path import CameraPath
from lyra.render.cameras import intrinsics_from_fov
from lyra.render.trajectories import LYRA_TRAJECTORIES


def _paths(camera_paths: Sequence[str | os.PathLike | CameraPath]) -> tuple[list[CameraPath], list[str]]:
    paths, names = [], []
    for i, p in enumerate(camera_paths):
        if isinstance(p, CameraPath):
            paths.append(p)
            names.append(f"path{i}")
        else:
            paths.append(load_camera_path(p))
            names.append(Path(p).stem)
    return paths, names


class _CameraChoice:
    """Families + camera-path files, with magnitudes and anchoring (lyra.inference.paths)."""

    def _init_cameras(self, trajectories, camera_paths, anchor, path_scale, magnitude) -> None:
        trajectories = list(LYRA_TRAJECTORIES if trajectories is None and not camera_paths else trajectories or [])
        self.trajectories = check_trajectories(trajectories)
        self.camera_paths, path_names = _paths(camera_paths)
        if not self.trajectories and not self.camera_paths:
            raise ValueError("no trajectories: name at least one family (--trajectories) or pass --camera-path")
        if not path_scale > 0:
            raise ValueError(f"path_scale must be > 0, got {path_scale}")
        self.anchor, self.path_scale = bool(anchor), float(path_scale)
        self.magnitude: Magnitude = parse_magnitude(magnitude)
        self.view_names = self.trajectories + [f"path_{n}" for n in path_names]

    def _camera_describe(self) -> dict[str, Any]:
        return {"trajectories": self.trajectories, "camera_paths": len(self.camera_paths), "anchor": self.anchor,
                "path_scale": self.path_scale, "magnitude": self.magnitude}

    def _path_poses(self, num_frames, height, width, start, scene_scale, dynamic):
        """Every camera-path file at T frames: poses [P, T, 4, 4], K [P, T, 3, 3], time [P, T]."""
        c2w, K, time = [], [], []
        for p in self.camera_paths:
            r = resample(p, num_frames, height, width)
            c2w.append(place_path(r, start if self.anchor else None, self.path_scale * scene_scale))
            K.append(r.K)
            time.append(path_time(r, dynamic))
        return torch.stack(c2w), torch.stack(K), torch.stack(time)


class ProceduralTeacher(_CameraChoice, ClipGenerator):
    """Procedural clips (world seed ``seed + index``) along the chosen cameras, exact RGB and depth.

    With the defaults it returns ``ProceduralGenerator(seed, dynamic, ...).generate(index, ...)``
    exactly (tests/test_generate.py checks it); ``magnitude``, ``trajectories`` and ``camera_paths``
    change the cameras (lyra.inference.paths).
    """

    def __init__(
        self,
        seed: int = 0,
        dynamic: bool = False,
        trajectories: Sequence[str] | None = None,
        camera_paths: Sequence[str | os.PathLike | CameraPath] = (),
        anchor: bool = False,
        path_scale: float = 1.0,
        magnitude: str | float | dict[str, float] | None = None,
        fov_deg: float = 60.0,
        num_objects: tuple[int, int] = (4, 16),
        shadows: bool = True,
    ) -> None:
        super().__init__(seed)
        self._init_cameras(trajectories, camera_paths, anchor, path_scale, magnitude)
        self.dynamic, self.fov_deg = bool(dynamic), float(fov_deg)
        self.num_objects, self.shadows = (int(num_objects[0]), int(num_objects[1])), bool(shadows)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self._camera_describe(), "dynamic": self.dynamic, "fov_deg": self.fov_deg,
                "num_objects": list(self.num_objects), "shadows": self.shadows}

    def generate(self, index: int, num_frames: int, height: int, width: int) -> GeneratedClip:
        index = self.check_index(index)
        seed = self.base_seed + index
        world = ProceduralWorld(seed, dynamic=self.dynamic, num_objects=self.num_objects, shadows=self.shadows)
        # The same draws, in the same order, as ProceduralWorld.sample_clip.
        g = torch.Generator().manual_seed(world.seed)
        K0 = intrinsics_from_fov(self.fov_deg, width, height)
        start = world.start_view(K0, height, width, g)
        c2w, K, time = [], [], []
        if self.trajectories:
            fam = family_poses(self.trajectories, start, world.center, num_frames, world.scene_scale, self.magnitude, g)
            t = torch.linspace(0.0, 1.0, num_frames) if self.dynamic and num_frames > 1 else torch.zeros(num_frames)
            c2w.append(fam)
            K.append(K0.expand(len(fam), num_frames, 3, 3).clone())
            time.append(t.expand(len(fam), num_frames).clone())
        if self.camera_paths:
            pc, pk, pt = self._path_poses(num_frames, height, width, start, world.scene_scale, self.dynamic)
            c2w, K, time = c2w + [pc], K + [pk], time + [pt]
        c2w, K, time = torch.cat(c2w), torch.cat(K), torch.cat(time)
        rgb, depth = zip(*(world.render(c2w[v], K[v], height, width, time[v])
                           for v in bar(range(len(c2w)), desc="teacher: ray-trace views", unit="view")))
        rgb, depth = torch.stack(rgb), torch.stack(depth)
        return GeneratedClip(
            c2w=c2w, K=K, time=time, rgb=rgb, depth=sky_as_unknown(depth), depth_is_metric=True, gt_rgb=rgb,
            caption=world.caption,
            meta={"index": index, "world_seed": seed, "time_reversed": False, "trajectories": list(self.view_names),
                  "scene_scale": world.scene_scale})


class TextToImage:
    """A diffusers text-to-image pipeline from a local folder (``model_index.json`` + its parts, as
    ``save_pretrained`` writes them): ``__call__(prompt, height, width, seed) -> [H, W, 3]`` in [0, 1]."""

    def __init__(self, path: str | os.PathLike, num_inference_steps: int = 30, guidance_scale: float = 7.5,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> None:
        folder = Path(path)
        if not folder.is_dir():
            raise FileNotFoundError(f"text-to-image pipeline folder {str(folder)!r} does not exist; pass the local "
                                    "folder a diffusers pipeline's save_pretrained wrote (nothing is downloaded)")
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(f"{str(folder)!r} has no model_index.json, so it is not a diffusers pipeline folder; "
                                    "pass the folder DiffusionPipeline.save_pretrained wrote")
        if num_inference_steps < 1:
            raise ValueError(f"text-to-image steps must be >= 1, got {num_inference_steps}")
        self.path, self.steps, self.guidance = str(folder), int(num_inference_steps), float(guidance_scale)
        self.device, self.dtype = torch.device(device), dtype
        self.pipe = None

    def load(self) -> None:

        try:
            self.pipe = DiffusionPipeline.from_pretrained(self.path, torch_dtype=self.dtype, local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as err:
            raise ValueError(f"{self.path!r} is not a loadable diffusers text-to-image pipeline ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}); save one with save_pretrained") from None
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=not progress_enabled(), desc="text-to-image", leave=False)

    def unload(self) -> None:
        self.pipe = None

    @torch.no_grad()
    def __call__(self, prompt: str, height: int, width: int, seed: int) -> Tensor:  # [H, W, 3] in [0, 1]
        if self.pipe is None:
            self.load()
        gen = torch.Generator(self.device).manual_seed(int(seed))
        out = self.pipe(prompt=prompt, height=height, width=width, num_inference_steps=self.steps,
                        guidance_scale=self.guidance, generator=gen, output_type="pt")
        images = out.images if hasattr(out, "images") else out[0]
        image = images[0]  # [3, H, W] in [0, 1]
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"the text-to-image pipeline at {self.path!r} returned an image of shape "
                             f"{tuple(image.shape)}, not [3, H, W]; use an RGB text-to-image pipeline")
        return image.float().permute(1, 2, 0).clamp(0, 1).cpu()

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "steps": self.steps, "guidance_scale": self.guidance}


class ImageTeacher(_CameraChoice, ClipGenerator):
    """``Gen3CGenerator``'s clips from an image (or a prompt) along the chosen cameras.

    ``images``: image files or ``[H, W, 3]`` tensors, one scene per index (cycled); or ``prompts`` with
    ``text_to_image``: the pipeline draws the image (seed ``seed + index``) at the clip size first. The
    caption is stored, not encoded: the transformer attends to the null prompt (docs/gen3c.md).
    """

    def __init__(
        self,
        gen3c: ClipGenerator,  # a lyra.data.generators.gen3c.Gen3CGenerator
        images: Sequence[str | os.PathLike | Tensor] = (),
        prompts: Sequence[str] = (),
        text_to_image: TextToImage | None = None,
        trajectories: Sequence[str] | None = None,
        camera_paths: Sequence[str | os.PathLike | CameraPath] = (),
        anchor: bool = False,
        path_scale: float = 1.0,
        magnitude: str | float | dict[str, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed)
        self._init_cameras(trajectories, camera_paths, anchor, path_scale, magnitude)
        if bool(images) == bool(prompts):
            raise ValueError("ImageTeacher takes images or prompts (with a text_to_image pipeline), exactly one of them")
        if prompts and text_to_image is None:
            raise ValueError("prompts need a text-to-image pipeline: pass text_to_image=TextToImage(<local folder>)")
        if gen3c.depth_model is None:
            raise ValueError("the image teacher needs a depth model: build the Gen3CGenerator with depth_path=<local "
                             "depth-estimation model folder> (lyra generate --depth-model DIR)")
        self.gen, self.images, self.prompts, self.t2i = gen3c, list(images), list(prompts), text_to_image
        self.last_image: Tensor | None = None

    def describe(self) -> dict[str, Any]:
        gen = self.gen.describe()
        gen.pop("images", None)
        gen.pop("trajectories", None)
        images = [f"tensor{tuple(im.shape)}" if isinstance(im, Tensor) else str(im) for im in self.images]
        return {**super().describe(), **self._camera_describe(), "gen3c": gen, "images": images,
                "prompts": self.prompts, "text_to_image": self.t2i.describe() if self.t2i else None}

    def check_size(self, num_frames: int, height: int, width: int) -> None:
        """The codec and the transformer's patches must fit the clip size (raised before any work)."""
        latent = self.gen.codec.latent_shape(num_frames, height, width)[1:]
        patch = tuple(self.gen.transformer.config.patch_size)
        if any(n % p for n, p in zip(latent, patch)):
            raise ValueError(f"latent grid (T', h, w) = {latent} of {num_frames} frames at {height}x{width} is not "
                             f"divisible by the transformer's patch size {patch}; pick --size with sides that are "
                             f"multiples of {self.gen.codec.space_factor * patch[1]}")

    def image(self, index: int, height: int, width: int) -> Tensor:  # [H, W, 3] in [0, 1]

        if self.prompts:
            return self.t2i(self.prompts[index % len(self.prompts)], height, width, self.base_seed + index)
        return load_image(self.images[index % len(self.images)], height, width)

    @torch.no_grad()
    def generate(self, index: int, num_frames: int, height: int, width: int) -> GeneratedClip:
        index = self.check_index(index)
        self.check_size(num_frames, height, width)
        gen, seed = self.gen, self.base_seed + index
        image = self.image(index, height, width).to(gen.device)
        self.last_image = image.cpu()  # [H, W, 3] what the teacher saw (the writer saves it as input.png)
        if self.t2i is not None:
            self.t2i.unload()  # the text-to-image model is done: free it before the video model runs
        depth = gen.depth_model(image)
        # Gen3CGenerator.plan / plan_cache, step by step (same draws), with user cameras.
        K0 = intrinsics_from_fov(gen.fov_x_deg, width, height).to(image.device)
        start = torch.eye(4, device=image.device)
        cloud = lift_to_points(image, depth, start, K0, gen.point_radius_px)
        median = float(depth.median())
        center = torch.tensor([0.0, 0.0, median], dtype=torch.float64)
        draws = torch.Generator().manual_seed(int(seed))
        c2w, K = [], []
        if self.trajectories:
            fam = family_poses(self.trajectories, start.cpu(), center, num_frames, median, self.magnitude, draws)
            c2w.append(fam)
            K.append(K0.cpu().expand(len(fam), num_frames, 3, 3))
        if self.camera_paths:
            pc, pk, _ = self._path_poses(num_frames, height, width, start.cpu(), median, dynamic=False)
            c2w, K = c2w + [pc], K + [pk]
        c2w = torch.cat(c2w).to(image.device)
        K = torch.cat(K).contiguous().to(image.device)
        cache = render_points(cloud, c2w, K, height, width, hole_threshold=gen.hole_threshold)
        plan = CachePlan(image, depth.float(), c2w, K, cache)
        cond = gen.condition(plan)
        V = c2w.shape[0]
        calls = gen.num_inference_steps * -(-V // (gen.views_per_batch or V))
        with bar(total=calls, desc="teacher: denoise", unit="call") as pbar:
            hook = gen.transformer.register_forward_hook(lambda *_: pbar.update(1))
            try:
                latents = gen.denoise(cond, None, seed)
            finally:
                hook.remove()
        T = num_frames
        return GeneratedClip(
            c2w=c2w.cpu(), K=K.cpu(), time=torch.zeros(V, T), latents=latents.cpu(),
            depth=cache.depth.cpu() if gen.output_depth == "cache" else None, depth_is_metric=False,
            caption=self.prompts[index % len(self.prompts)] if self.prompts else "",
            meta={"seed": int(seed), "trajectories": list(self.view_names), "median_depth": median,
                  "hole_fraction": [float(h) for h in cache.holes.float().mean((1, 2, 3))]})
