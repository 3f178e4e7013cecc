"""``StudentModule``: a Gaussian decoder trained by rendering against the teacher's RGB."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import Tensor

from lyra.data.clip import ClipBatch
from lyra.eval.export import export_test_scenes
from lyra.eval.report import EvalConfig, EvalReport
from lyra.eval.summary import format_table, summarize
from lyra.losses.rendering import LossOutput, RenderingLoss
from lyra.metrics.image import psnr
from lyra.models.checkpoints import (
    DECODER_RECORD,
    check_optimizer_state,
    check_student_checkpoint,
    load_decoder_weights,
    refuse_non_finite,
)
from lyra.models.decoders import GaussianDecoder
from lyra.models.optim import LRSchedule, adamw, fit_skip_on_clips, lr_factor, shard_decoder
from lyra.models.student_inputs import (decoder_inputs, depth_report, hole_weights, read_input_depth, source_depth_pairs,
                                       target_times)
from lyra.models.visuals import log_validation_visuals
from lyra.render.gaussians import Gaussians
from lyra.render.renderer import GaussianRenderer, Renders


class StudentModule(L.LightningModule):
    """The student: decoder -> Gaussians -> renderer -> images -> loss against the teacher's RGB.

    Args:
        decoder: a ``GaussianDecoder`` (static or dynamic).
        renderer: renders the Gaussians at the target cameras (default: white background,
            backend "auto", colour + expected depth).
        loss: image loss on the renders (default: MSE + depth, no LPIPS).
        lr: AdamW learning rate (Lyra: 1e-4).
        betas: AdamW betas (Lyra: 0.9, 0.999).
        weight_decay: AdamW weight decay (Lyra: 0.01), on parameters of two dims or more.
        warmup_steps: linear learning-rate warm-up steps (Lyra: 100).
        lr_schedule: after warm-up, ``"constant"`` (Lyra) or ``"cosine"`` down to ``min_lr_ratio``
            x lr at the trainer's last step (needs ``trainer.max_steps``).
        min_lr_ratio: the cosine schedule's final learning rate as a fraction of ``lr``.
        prune_keep: keep this fraction of Gaussians by opacity (Lyra's pruning stages: 0.2).
        init_from: start from these decoder weights: a ``save_pretrained`` folder or a Lightning
            checkpoint (also a static decoder's into a dynamic one, whose time embeddings then
            start at zero; also one without input-image Gaussians into one with them, which start at
            the lifted image). Unlike ``--ckpt_path`` it starts a new run (step 0, fresh optimiser).
        gradient_checkpointing: recompute the decoder blocks in backward (memory for time).
        skip_init_clips: before the first step of a new run, fit the decoder's latent skip (colour
            readout) by least squares on this many training clips (``fit_latent_skip``; needs
            ``latent_skip=True``; 0: off). Not with a sharded decoder.
        train_downscale: render and compare training targets this many times smaller (images
            area-averaged, ``ClipBatch.downscale_targets``): a cheaper step, as the paper's low-
            resolution curriculum stages; validation and test stay at full size.
        evaluation: the test report's settings (metrics, baselines; docs/evaluation.md).
        export_ply: write test scenes as PLY (one per target time for dynamic decoders).
        orbit_frames: frames of the validation orbit video (0: none).
        input_depth_noise: for decoders built with ``input_depth``: the std of a smooth log-normal
            error put on the input frame's depth before the decoder reads it, one field per scene
            (:mod:`lyra.models.student_inputs`). The procedural teacher's depth is exact; a real
            pipeline's comes from a monocular estimate. 0: as given. Training, validation and test
            only: ``predict_step`` (scene generation) reads the depth as given.
        hole_weight: extra weight, in the MSE, of the target pixels the decoder's input frame does
            not show (its holes: disocclusions, beyond its edges; ``input_coverage``): 1 + this.
            Needs a decoder built with ``input_depth``. 0: every pixel the same.
    """

    def __init__(
        self,
        decoder: GaussianDecoder,
        renderer: GaussianRenderer | None = None,
        loss: RenderingLoss | None = None,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        lr_schedule: LRSchedule = "constant",
        min_lr_ratio: float = 0.1,
        prune_keep: float | None = None,
        init_from: str | None = None,
        gradient_checkpointing: bool = False,
        skip_init_clips: int = 0,
        train_downscale: int = 1,
        evaluation: EvalConfig | None = None,
        export_ply: bool = False,
        orbit_frames: int = 16,
        input_depth_noise: float = 0.0,
        hole_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr}")
        if input_depth_noise < 0 or hole_weight < 0:
            raise ValueError(f"input_depth_noise and hole_weight must be >= 0, got {input_depth_noise}, {hole_weight}")
        if hole_weight > 0 and not decoder.config.input_depth:
            raise ValueError("hole_weight needs a decoder that reads the input depth (input_depth: true): the holes "
                             "are where the input frame, lifted with it, shows nothing")
        self.save_hyperparameters(ignore=["decoder", "renderer", "loss", "evaluation"])
        self.decoder = decoder
        self.renderer = renderer if renderer is not None else GaussianRenderer()
        self.loss = loss if loss is not None else RenderingLoss()
        self.eval_config = EvalConfig(**evaluation) if isinstance(evaluation, dict) else (evaluation or EvalConfig())
        self.report: EvalReport | None = None
        if init_from is not None:
            load_decoder_weights(self.decoder, init_from)
        if gradient_checkpointing:
            self.decoder.enable_gradient_checkpointing()

    def on_fit_start(self) -> None:
        describe = getattr(self.trainer.datamodule, "describe_clips", None)
        if describe is not None:  # a saved decoder says what it was trained on (lyra generate reads it)
            self.decoder.register_to_config(trained_on=describe())
        n = self.hparams.skip_init_clips
        if n and self.global_step == 0 and self.trainer.ckpt_path is None:  # a resumed run keeps its weights
            err = fit_skip_on_clips(self.decoder, self.trainer.datamodule, n, self.device)
            self.print(f"latent skip fitted on {n} clips: RMS colour error {err:.3f} (pre-activation)")

    # ---- the one decoding path: training, evaluation and scene generation ------------------------------

    def forward(
        self,
        batch: ClipBatch,
        target_time: Tensor | None = None,  # [B, M] dynamic decoders (default: the targets' times)
        depth_noise: float | None = None,  # default ``input_depth_noise``; predict_step passes 0
    ) -> Gaussians:  # [B] static, [B, M] dynamic
        if self.decoder.is_dynamic and target_time is None:
            target_time = target_times(batch)
        noise = self.hparams.input_depth_noise if depth_noise is None else depth_noise
        g = self.decoder(batch.latents, batch.src_c2w, batch.src_K, time=batch.src_time, target_time=target_time,
                         **decoder_inputs(self.decoder, batch, noise))
        return g if self.hparams.prune_keep is None else g.prune_fraction(self.hparams.prune_keep)

    @torch.no_grad()
    def predict_step(self, batch: ClipBatch, batch_idx: int = 0, dataloader_idx: int = 0,
                     time_chunk: int | None = None) -> dict[str, Any]:
        """The Gaussians of every sample, detached, on the CPU, from the input depth as given.

        Dynamic decoders: one set per target time: ``meta[b]["target_times"]`` when every sample
        lists them (``lyra.inference.clip_batch`` does), else the target frames' times, decoded
        ``time_chunk`` at a time (else ``meta[0]["time_chunk"]``, else all at once): fewer per pass
        bound the decoder's peak memory and change the result only by float rounding.
        Returns ``{"gaussians" ([B] or [B, M]), "target_time" ([B, M] or None), "meta"}``.
        """
        meta = batch.meta or []
        if not self.decoder.is_dynamic:
            return {"gaussians": self(batch, depth_noise=0.0).to("cpu"), "target_time": None, "meta": meta}
        target = target_times(batch)
        if meta and all("target_times" in m for m in meta):
            target = torch.tensor([list(m["target_times"]) for m in meta]).to(batch.src_time)
        chunk = int(time_chunk or (meta[0].get("time_chunk") if meta else None) or target.shape[1])
        if chunk < 1:
            raise ValueError(f"time_chunk must be >= 1, got {chunk}")
        parts = [self(batch, target[:, lo:lo + chunk], depth_noise=0.0).to("cpu")
                 for lo in range(0, target.shape[1], chunk)]
        return {"gaussians": Gaussians.cat(parts, batch_dim=1), "target_time": target.to("cpu"), "meta": meta}

    def render_targets(self, g: Gaussians, batch: ClipBatch) -> Renders:  # fields [B, V*F, H, W(, 3)]
        B, V, F, H, W, _ = batch.rgb.shape
        return self.renderer(g, batch.c2w.reshape(B, V * F, 4, 4), batch.K.reshape(B, V * F, 3, 3), H, W)

    # ---- training and validation --------------------------------------------------------------------------

    def _step(self, batch: ClipBatch, stage: str) -> tuple[LossOutput, Renders, Gaussians]:
        g = self(batch)
        r = self.render_targets(g, batch)
        B, V, F = batch.rgb.shape[:3]
        depth = batch.depth.reshape(B, V * F, *batch.depth.shape[-2:]) if batch.depth is not None else None
        pred = target = weight = None
        if self.loss.weights["gaussian_depth"] > 0 and batch.src_depth is not None and self.hparams.prune_keep is None:
            pred, target = source_depth_pairs(self.decoder, g, batch)  # pruned Gaussians no longer lie on a grid
        if self.hparams.hole_weight > 0:
            weight = hole_weights(self.decoder, batch, self.hparams.hole_weight)
        out = self.loss(r.rgb, batch.rgb.reshape(r.rgb.shape), r.depth, depth, r.alpha, g.opacities,
                        depth_is_metric=batch.depth_is_metric, gaussian_depth=pred, gaussian_depth_target=target,
                        pixel_weight=weight)
        if not torch.isfinite(out.total):
            raise FloatingPointError(f"non-finite {stage} loss ({ {k: float(v) for k, v in out.terms.items()} }); "
                                     "lower the learning rate or check the clip data for NaNs")
        bs = batch.batch_size
        self.log(f"{stage}/loss", out.total, prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        for k, v in out.terms.items():
            self.log(f"{stage}/{k}", v, batch_size=bs, sync_dist=stage != "train")
        return out, r, g

    def training_step(self, batch: ClipBatch, batch_idx: int) -> Tensor:
        out, _, g = self._step(batch.downscale_targets(self.hparams.train_downscale), "train")
        self.log("train/num_gaussians", float(g.num_gaussians), batch_size=batch.batch_size)
        return out.total

    def validation_step(self, batch: ClipBatch, batch_idx: int) -> None:
        _, r, g = self._step(batch, "val")
        target = batch.rgb.reshape(r.rgb.shape)
        self.log("val/psnr", psnr(r.rgb, target).mean(), prog_bar=True, batch_size=batch.batch_size, sync_dist=True)
        if batch_idx == 0 and self.trainer.is_global_zero:
            log_validation_visuals(self, batch, r, target, g, self.hparams.orbit_frames)

    # ---- test: the evaluation protocol (docs/evaluation.md) -------------------------------------------------

    def depth_error(self, g: Gaussians, batch: ClipBatch) -> dict[str, Tensor] | None:  # values [B]
        """The report's geometry line (``depth_report``); None without metric depth or when pruned."""
        if batch.src_depth is None or not batch.depth_is_metric or self.hparams.prune_keep is not None:
            return None
        return depth_report(self.decoder, g, batch, self.hparams.input_depth_noise)

    def on_test_start(self) -> None:
        self.report = EvalReport(self.eval_config).to(self.device)

    @torch.no_grad()
    def score(self, batch: ClipBatch, report: EvalReport, scene_ids: list[str] | None = None) -> Gaussians:
        """The evaluation protocol on one batch (``lightning test`` and ``LearningCurve``): render every
        target, add the student and its baselines to ``report``; returns the Gaussians."""
        g = self(batch)
        rgb = self.render_targets(g, batch).rgb.reshape(batch.rgb.shape)
        read = read_input_depth(batch, self.decoder.is_dynamic, self.hparams.input_depth_noise)
        report.add(batch, rgb, scene_ids=scene_ids, geometry=self.depth_error(g, batch), input_depth=read)
        return g

    def test_step(self, batch: ClipBatch, batch_idx: int) -> None:
        assert self.report is not None
        ids = [f"{m.get('index', f'r{self.global_rank}_b{batch_idx}_{b}')}" for b, m in enumerate(batch.meta)]
        g = self.score(batch, self.report, ids or None)
        if self.hparams.export_ply:
            export_test_scenes(g, batch, ids, self.test_dir / "ply")

    def on_test_epoch_end(self) -> None:
        assert self.report is not None
        records = self.report.gather()
        if self.trainer.is_global_zero:
            summary = self.report.write(self.test_dir, records)
            print(format_table(summary))
        else:
            summary = summarize(records, self.eval_config.parallax_bins)
        for k, v in summary.items():
            self.log(f"test/{k}", v, sync_dist=False, rank_zero_only=True)

    @property
    def test_dir(self) -> Path:
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "test"

    # ---- optimisation and scale-out -------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = adamw(self.decoder.parameters(), hp.lr, hp.betas, hp.weight_decay)
        total = self.trainer.max_steps if self._trainer is not None else -1
        if hp.lr_schedule == "cosine" and (total is None or total < 0):
            raise ValueError("lr_schedule='cosine' needs trainer.max_steps (the step where the schedule ends)")
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, hp.warmup_steps, hp.lr_schedule, total, hp.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_model(self) -> None:
        """Shard every decoder block with FSDP2 when run under ModelParallelStrategy."""
        if self.device_mesh is not None:
            shard_decoder(self.decoder, self.device_mesh)

    # ---- checkpoints (lyra.models.checkpoints reads and checks them) -----------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[DECODER_RECORD] = {"class": type(self.decoder).__name__, "config": dict(self.decoder.config)}
        self._refuse_non_finite(checkpoint.get("state_dict", {}).items(), "the checkpoint is not written")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Also without a checkpoint every step: stop at the step that broke the weights.
        self._refuse_non_finite(self.named_parameters(), "training stopped")

    def _refuse_non_finite(self, named: Any, consequence: str) -> None:
        several = self._trainer is not None and self.trainer.world_size > 1
        refuse_non_finite(named, self.global_step, consequence, self.trainer.strategy if several else None)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        path = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        where = f"checkpoint {path}" if path else "the checkpoint"
        # ModelParallelStrategy (FSDP2) has already loaded the weights into the sharded model and taken
        # them out of the dict: check them where they now are.
        state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
        sharded = (not isinstance(state, dict) and self._trainer is not None
                   and isinstance(self.trainer.strategy, ModelParallelStrategy))
        check_student_checkpoint(checkpoint, self.decoder, dict(self.named_parameters()) if sharded else None, where)
        saved = checkpoint.get("optimizer_states")
        if saved and self._trainer is not None and self.trainer.state.fn == "fit":
            built = self.configure_optimizers()
            names = {id(p): n for n, p in self.named_parameters()}
            check_optimizer_state(saved, [built["optimizer"]], names, where)
