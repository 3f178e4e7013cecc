"""``lightning predict`` for generation: a predict data source and a writer (configs/infer/*.yaml).

    lightning predict --config configs/infer/procedural.yaml --ckpt_path <checkpoint>

``GenerateDataModule`` runs its ``TeacherModule`` (any generator: ``ProceduralTeacher``,
``ImageTeacher``, ``VideoTeacher``, ...) for scene indices ``start .. start + scenes - 1`` and yields
each clip as a one-sample ``ClipBatch`` (``lyra.inference.clip_batch``) whose meta names the times a
dynamic decoder outputs; ``StudentModule.predict_step`` decodes it; ``SceneWriter`` writes the same
output folder as ``lyra generate`` (lyra.inference.outputs), one per scene, through a hidden
temporary folder renamed at the end.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from lyra.data.clip import Clip, ClipBatch
from lyra.inference.checks import check_out
from lyra.inference.clips import check_times, clip_batch, default_times, make_clip
from lyra.inference.outputs import staged_folder, write_meta, write_scene, write_views
from lyra.inference.pipeline import FORMAT
from lyra.inference.progress import StageLog
from lyra.models.teacher import TeacherModule
from lyra.render.renderer import BACKGROUNDS


class _Requests(Dataset):
    def __init__(self, dm: "GenerateDataModule") -> None:
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.scenes

    def __getitem__(self, i: int) -> ClipBatch:
        dm = self.dm
        index = dm.start + i
        t0 = time.perf_counter()
        if dm.device is not None:
            dm.teacher.to(dm.device)
        clip = make_clip(dm.teacher, index, dm.view_chunk)
        if dm.offload and dm.device is not None and dm.device.type == "cuda":
            dm.teacher.to("cpu")  # the decoder gets the GPU to itself
            torch.cuda.empty_cache()
        seconds = time.perf_counter() - t0
        times = dm.target_times
        if times is None and dm.num_times is not None:
            times = torch.linspace(0, 1, dm.num_times).tolist() if dm.num_times > 1 else [0.0]
        if times is None:
            times = default_times(clip)
        meta = {"teacher": dm.teacher.describe(), "teacher_seconds": round(seconds, 3)}
        return clip_batch(clip, times, dm.time_chunk, meta)


class GenerateDataModule(lightning.LightningDataModule):
    """Predict-only data: the teacher's clip of each scene index, as the student's input.

    Args:
        teacher: the ``TeacherModule`` (generator + codec + clip size) to run.
        scenes: how many scenes (indices ``start``, ``start + 1``, ...).
        start: the first scene index (procedural: the world seed is the generator's seed + index).
        target_times: scene times a dynamic decoder outputs a set at (default: the clip's frame times).
        num_times: or that many evenly spaced times in [0, 1].
        time_chunk: target times per decoder pass (bounds the decoder's peak memory).
        view_chunk: trajectories per codec call (bounds the codec's peak memory).
        offload: move the teacher to the CPU after each clip (and back before the next), so the
            teacher and the decoder are never on the GPU together.
    """

    def __init__(
        self,
        teacher: TeacherModule,
        scenes: int = 1,
        start: int = 0,
        target_times: list[float] | None = None,
        num_times: int | None = None,
        time_chunk: int | None = None,
        view_chunk: int | None = None,
        offload: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(teacher, TeacherModule):
            raise TypeError(f"teacher must be a lyra TeacherModule, got {type(teacher).__name__}")
        if scenes < 1 or start < 0:
            raise ValueError(f"need scenes >= 1 and start >= 0, got scenes={scenes}, start={start}")
        if target_times is not None and num_times is not None:
            raise ValueError("pass target_times or num_times, not both")
        if num_times is not None and num_times < 1:
            raise ValueError(f"num_times must be >= 1, got {num_times}")
        for name, v in (("time_chunk", time_chunk), ("view_chunk", view_chunk)):
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1, got {v}")
        self.teacher, self.scenes, self.start = teacher, int(scenes), int(start)
        self.target_times = check_times(target_times) if target_times is not None else None
        self.num_times, self.time_chunk, self.view_chunk = num_times, time_chunk, view_chunk
        self.offload, self.device = bool(offload), None

    def predict_dataloader(self) -> DataLoader:
        if self.trainer is not None:
            self.device = self.trainer.strategy.root_device  # the teacher's codec runs where the decoder does
        # batch_size=None: the dataset already yields batches (of one scene); the teacher runs in this process.
        return DataLoader(_Requests(self), batch_size=None, num_workers=0)


def batch_clip(batch: ClipBatch, b: int) -> Clip:
    """Sample ``b`` of a ``clip_batch`` back as the teacher's clip (targets = every frame)."""
    opt = lambda t: None if t is None else t[b].detach().cpu()  # noqa: E731
    meta = dict(batch.meta[b]) if batch.meta else {}
    return Clip(latents=batch.latents[b].detach().cpu(), rgb=batch.rgb[b].detach().cpu(),
                c2w=batch.c2w[b].detach().cpu(), K=batch.K[b].detach().cpu(), time=batch.time[b].detach().cpu(),
                depth=opt(batch.depth), gt_rgb=opt(batch.gt_rgb), caption=batch.captions[b] if batch.captions else "",
                depth_is_metric=batch.depth_is_metric, meta=meta)


class SceneWriter(BasePredictionWriter):
    """Writes each predicted scene as ``output_dir/scene_<index>/`` (the layout of ``lyra generate``).

    Args:
        output_dir: parent folder of the scene folders.
        orbit_frames, orbit_degrees, fps, background, render_chunk: as ``lyra generate``'s options.
        overwrite: replace existing scene folders (else a non-empty one is an error, before decoding).
    """

    def __init__(
        self,
        output_dir: str = "outputs/generate/predict",
        orbit_frames: int = 48,
        orbit_degrees: float = 60.0,
        fps: float = 24.0,
        background: str = "white",
        render_chunk: int = 8,
        overwrite: bool = False,
    ) -> None:
        super().__init__(write_interval="batch")

        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {sorted(BACKGROUNDS)}, got {background!r}")
        self.output_dir, self.orbit_frames, self.orbit_degrees = Path(output_dir), int(orbit_frames), float(orbit_degrees)
        self.fps, self.background, self.render_chunk, self.overwrite = float(fps), background, int(render_chunk), overwrite
        self._t0 = 0.0

    def folder(self, meta: dict[str, Any]) -> Path:
        return self.output_dir / f"scene_{int(meta.get('index', 0)):06d}"

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        for m in batch.meta or [{}]:
            check_out(self.folder(m), self.overwrite)  # before the decoder runs
        self._t0 = time.perf_counter()

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0):

        decode_seconds = round(time.perf_counter() - self._t0, 3)
        g_all, target = prediction["gaussians"], prediction["target_time"]
        dynamic = target is not None
        for b in range(batch.batch_size):
            clip = batch_clip(batch, b)
            meta_in = clip.meta
            out = self.folder(meta_in)
            log = StageLog(pl_module.device)
            with staged_folder(out) as tmp:
                g = g_all[b]
                times = [float(t) for t in target[b].tolist()] if dynamic else None
                with log.stage("export"):
                    scene = write_scene(tmp, g, times)
                with log.stage("render"):
                    views = write_views(tmp, clip, g, times, meta_in.get("trajectories", []), self.orbit_frames,
                                        self.orbit_degrees, self.fps, BACKGROUNDS[self.background],
                                        self.render_chunk, pl_module.device)
                summary = log.summary()
                stages = {"teacher": {"seconds": meta_in.get("teacher_seconds")},
                          "decode": {"seconds": decode_seconds}, **summary["stages"]}
                meta = {
                    "format": FORMAT, "source": {"kind": "lightning predict", "index": meta_in.get("index")},
                    "weights": {"decoder_class": type(pl_module.decoder).__name__,
                                "checkpoint": str(trainer.ckpt_path) if trainer.ckpt_path else None,
                                "init_from": pl_module.hparams.get("init_from")},
                    "teacher": meta_in.get("teacher"),
                    "clip": {"num_views": clip.num_views, "num_frames": clip.num_frames, "height": clip.image_size[0],
                             "width": clip.image_size[1], "trajectories": views["view_names"], "caption": clip.caption},
                    "scene": scene, "times": times, "num_gaussians": int(g.num_gaussians),
                    "fidelity_psnr": views["fidelity_psnr"], "device": str(pl_module.device), "timings": stages,
                }
                write_meta(tmp, meta, summary)
            print(f"wrote {out}/ ({scene}, {g.num_gaussians} Gaussians" + (f" x {len(times)} times)" if dynamic else ")"))
