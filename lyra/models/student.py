"""``StudentModule``: a Gaussian decoder trained by rendering against the teacher's RGB."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from lyra.data.clip import ClipBatch
from lyra.eval.report import EvalConfig, EvalReport, format_table, summarize
from lyra.losses.rendering import LossOutput, RenderingLoss
from lyra.models.decoders import GaussianDecoder
from lyra.models.decoders.input_depth import perturb_depth
from lyra.models.init_weights import TIME_EMBEDDINGS, first_non_finite, load_decoder_weights
from lyra.models.visuals import log_validation_visuals
from lyra.render.gaussians import Gaussians
from lyra.render.ply import save_ply
from lyra.render.renderer import GaussianRenderer, Renders


def _same_setting(a: Any, b: Any) -> bool:
    """Decoder settings as stored in a checkpoint vs the config (floats compared to rounding)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_setting(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_setting(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
        return numbers and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def median_log_error(
    pred: Tensor,  # [B, ...] depths
    target: Tensor,  # [B, ...] depths, 0 = unknown (not counted)
) -> Tensor:  # [B] median |log(pred / target)| over known targets, NaN where none
    err = (pred.clamp_min(1e-6).log() - target.clamp_min(1e-6).log()).abs().flatten(1)
    return torch.where(target.flatten(1) > 0, err, torch.full_like(err, float("nan"))).nanmedian(dim=1).values


class StudentModule(L.LightningModule):
    """The student: decoder -> Gaussians -> renderer -> images -> loss against the teacher's RGB.

    Args:
        decoder: a ``GaussianDecoder`` (static or dynamic).
        renderer: renders the Gaussians at the target cameras (default: white background,
            backend "auto", colour + expected depth).
        loss: image loss on the renders (default: MSE + depth, no LPIPS).
        lr: AdamW learning rate (Lyra: 1e-4).
        betas: AdamW betas (Lyra: 0.9, 0.999).
        weight_decay: AdamW weight decay (Lyra: 0.01); never applied to parameters with fewer than
            two dims (norms, biases, Mamba's ``A_log``, ``D`` and ``dt_bias``).
        warmup_steps: linear learning-rate warm-up steps (Lyra: 100).
        lr_schedule: after warm-up, ``"constant"`` (Lyra) or ``"cosine"`` down to ``min_lr_ratio``
            x lr at the trainer's last step (needs ``trainer.max_steps``).
        min_lr_ratio: the cosine schedule's final learning rate as a fraction of ``lr``.
        prune_keep: keep this fraction of Gaussians by opacity (Lyra's pruning stages: 0.2).
        init_from: start from these decoder weights: a ``save_pretrained`` folder or a Lightning
            checkpoint (also a static decoder's into a dynamic one, whose time embeddings then
            start at zero; also one without input-image Gaussians into one with them, which start at the
            lifted image). Unlike ``--ckpt_path`` it starts a new run (step 0, fresh optimiser).
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
        image_loss_moves_depth: whether the image terms (MSE, LPIPS, rendered depth) move the
            Gaussians along their rays. ``False``: only the per-Gaussian depth term places them
            (it needs ``loss.gaussian_depth_weight > 0`` and metric clip depth). Meant to keep the
            image terms from trading depth accuracy for a blend of misplaced copies; on the
            procedural teacher it changed neither the depth error nor the held-out scores beyond
            the seed spread (docs/benchmarks.md, "Student quality", E16).
        input_depth_noise: for decoders built with ``input_depth``: the std of a smooth log-normal
            error put on the input frame's depth before the decoder reads it, fixed per scene
            (:func:`~lyra.models.decoders.input_depth.perturb_depth`). The procedural teacher's depth
            is exact; a real pipeline's comes from a monocular estimate. 0: as given. Training,
            validation and test only: ``predict_step`` (scene generation) reads the depth as given.
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
        lr_schedule: Literal["constant", "cosine"] = "constant",
        min_lr_ratio: float = 0.1,
        prune_keep: float | None = None,
        init_from: str | None = None,
        gradient_checkpointing: bool = False,
        skip_init_clips: int = 0,
        train_downscale: int = 1,
        evaluation: EvalConfig | None = None,
        export_ply: bool = False,
        orbit_frames: int = 16,
        image_loss_moves_depth: bool = True,
        input_depth_noise: float = 0.0,
    ) -> None:
        super().__init__()
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        self.save_hyperparameters(ignore=["decoder", "renderer", "loss", "evaluation"])
        self.decoder = decoder
        self.renderer = renderer if renderer is not None else GaussianRenderer()
        self.loss = loss if loss is not None else RenderingLoss()
        if not image_loss_moves_depth and not self.loss.weights["gaussian_depth"] > 0:
            raise ValueError("image_loss_moves_depth=False leaves nothing to place the Gaussians along their rays: "
                             "set loss.gaussian_depth_weight > 0 (it needs clips with metric depth)")
        if input_depth_noise < 0:
            raise ValueError(f"input_depth_noise must be >= 0, got {input_depth_noise}")
        self.eval_config = EvalConfig(**evaluation) if isinstance(evaluation, dict) else (evaluation or EvalConfig())
        self.report: EvalReport | None = None
        if init_from is not None:
            load_decoder_weights(self.decoder, init_from)
        if gradient_checkpointing:
            self.decoder.enable_gradient_checkpointing()

    def on_fit_start(self) -> None:
        n = self.hparams.skip_init_clips
        if not n or self.global_step > 0 or self.trainer.ckpt_path is not None:
            return  # a resumed run keeps its weights
        if getattr(self.decoder, "_lyra_sharded", False):
            raise ValueError("skip_init_clips needs an unsharded decoder; fit the skip once on one process and "
                             "start the sharded run from it with init_from")
        peek = getattr(self.trainer.datamodule, "peek_clips", None)
        if peek is None:
            raise ValueError("skip_init_clips needs a data module with peek_clips(split, n) (ClipDataModule)")
        clips = peek("train", n)
        latents = torch.cat([c.latents for c in clips]).to(self.device)
        rgb = torch.cat([c.rgb for c in clips]).to(self.device)
        err = self.decoder.fit_latent_skip(latents, rgb)
        self.print(f"latent skip fitted on {n} clips: RMS colour error {err:.3f} (pre-activation)")

    # ---- forward --------------------------------------------------------------------------------

    def forward(self, batch: ClipBatch, perturb_depth: bool = True) -> Gaussians:
        B = batch.batch_size
        target_time = batch.time.reshape(B, -1) if self.decoder.is_dynamic else None
        g = self.decoder(batch.latents, batch.src_c2w, batch.src_K, time=batch.src_time, target_time=target_time,
                         **self.decoder_inputs(batch, perturb_depth))
        if self.hparams.prune_keep is not None:
            g = g.prune_fraction(self.hparams.prune_keep)
        return g

    def decoder_inputs(self, batch: ClipBatch, perturb: bool = True) -> dict[str, Tensor]:
        """What the decoder reads besides latents and cameras, as its settings ask: the input image's
        (dynamic: the input video's) depth and pixels. ``perturb=False``: the depth as given."""
        cfg = self.decoder.config
        extra = {"input_depth": self.input_depth(batch, perturb)} if getattr(cfg, "input_depth", False) else {}
        if getattr(cfg, "input_image_gaussians", False):
            extra["input_image"] = batch.input_rgb if self.decoder.is_dynamic else batch.input_rgb[:, 0]
        return extra

    def input_depth(self, batch: ClipBatch, perturb: bool = True) -> Tensor:  # [B, H, W], dynamic [B, T, H, W]
        """The input image's depth for decoders built with ``input_depth``: the first source frame's
        (trajectory 0, frame 0; for GEN3C clips the monocular depth its 3D cache was built from), or
        for a dynamic decoder the input video's (trajectory 0, every frame), with ``input_depth_noise``
        applied (one error field per scene, the same on every frame) unless ``perturb`` is False:
        the noise stands in for an estimator's error in training and evaluation; ``predict_step``
        (scene generation) reads the depth it is given."""
        if batch.src_depth is None:
            raise ValueError("the decoder reads the input frame's depth (input_depth=True) but the clips carry no "
                             "depth; use a teacher that writes depth (procedural, GEN3C with output_depth='cache') "
                             "or a decoder built without input_depth")
        depth = batch.src_depth[:, 0] if self.decoder.is_dynamic else batch.src_depth[:, 0, :1]  # [B, T or 1, H, W]
        noise = self.hparams.input_depth_noise
        if noise > 0 and perturb:  # one error field per scene, the same at every step and in every evaluation
            seeds = [int(c.double().abs().sum().item() * 1e3) % (1 << 31) for c in batch.src_c2w]
            T = depth.shape[1]
            depth = perturb_depth(depth.flatten(0, 1), noise, [s for s in seeds for _ in range(T)]).reshape(depth.shape)
        return depth if self.decoder.is_dynamic else depth[:, 0]

    def render_targets(self, g: Gaussians, batch: ClipBatch) -> Renders:  # fields [B, V*F, H, W(, 3)]
        B, V, F, H, W, _ = batch.rgb.shape
        return self.renderer(g, batch.c2w.reshape(B, V * F, 4, 4), batch.K.reshape(B, V * F, 3, 3), H, W)

    def _step(self, batch: ClipBatch, stage: str) -> tuple[LossOutput, Renders, Gaussians]:
        g = self(batch)
        # Means are ray origin + distance x direction: detaching them stops only the distance.
        shown = g if self.hparams.image_loss_moves_depth else dataclasses.replace(
            g, means=g.means.detach(), check_values=False)
        r = self.render_targets(shown, batch)
        B, V, F = batch.rgb.shape[:3]
        depth = batch.depth.reshape(B, V * F, *batch.depth.shape[-2:]) if batch.depth is not None else None
        aligned = aligned_target = None
        if (self.loss.weights["gaussian_depth"] > 0 and batch.src_depth is not None
                and self.hparams.prune_keep is None):  # pruned Gaussians no longer lie on a grid
            aligned, aligned_target = self._gaussian_depth_pairs(g, batch)
        out = self.loss(r.rgb, batch.rgb.reshape(r.rgb.shape), r.depth, depth, r.alpha, g.opacities,
                        depth_is_metric=batch.depth_is_metric, gaussian_depth=aligned,
                        gaussian_depth_target=aligned_target)
        if not torch.isfinite(out.total):
            raise FloatingPointError(f"non-finite {stage} loss ({ {k: float(v) for k, v in out.terms.items()} }); "
                                     "lower the learning rate or check the clip data for NaNs")
        bs = batch.batch_size
        self.log(f"{stage}/loss", out.total, prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        for k, v in out.terms.items():
            self.log(f"{stage}/{k}", v, batch_size=bs, sync_dist=stage != "train")
        return out, r, g

    def _gaussian_depth_pairs(self, g: Gaussians, batch: ClipBatch) -> tuple[Tensor, Tensor]:
        """Each Gaussian's depth in its source frame and the clip's depth there ([B, (M,) V, F, gh, gw]).
        For a dynamic decoder, a target time's Gaussians are compared only in the source frames
        shot at that time (elsewhere the scene may have moved): other frames get target 0 (unknown)."""
        aligned = self.decoder.gaussian_depths(g, batch.src_c2w, batch.src_depth.shape[-2:])
        target = self.decoder.grid_depth(batch.src_depth)
        if self.decoder.is_dynamic:
            B = batch.batch_size
            frames = self.decoder.gaussian_frame_indices(batch.src_time.shape[2]).to(batch.src_time.device)
            src_t = batch.src_time[:, :, frames]  # [B, V, F]
            same = (src_t[:, None] - batch.time.reshape(B, -1)[:, :, None, None]).abs() < 1e-6  # [B, M, V, F]
            target = torch.where(same[..., None, None], target[:, None], torch.zeros_like(target[:, None]))
        return aligned, target

    @torch.no_grad()
    def depth_error(self, g: Gaussians, batch: ClipBatch) -> dict[str, Tensor] | None:  # values [B]
        """Per sample, the median |log(depth / clip depth)| of the grid Gaussians on their source
        pixels (NaN where no pixel has depth): ``depth_log_error``. A decoder that reads the input
        depth also gets, on the cells that depth reaches, the same for the input depth it was given
        (``input_depth_log_error``, after ``input_depth_noise``) and for its Gaussians there
        (``depth_log_error_on_input``): below the first, the student corrected its input from the
        views. None without metric source depth or with pruned Gaussians."""
        if batch.src_depth is None or not batch.depth_is_metric or self.hparams.prune_keep is not None:
            return None
        pred, target = self._gaussian_depth_pairs(g, batch)
        out = {"depth_log_error": median_log_error(pred, target)}
        if getattr(self.decoder.config, "input_depth", False):
            target_time = batch.time.reshape(batch.batch_size, -1) if self.decoder.is_dynamic else None
            prior = self.decoder.input_depth_prior(batch.src_c2w, batch.src_K, self.input_depth(batch),
                                                   batch.src_time, target_time)
            reached = torch.where(prior > 0, target, torch.zeros_like(target))
            out["input_depth_log_error"] = median_log_error(prior, reached)
            out["depth_log_error_on_input"] = median_log_error(pred, reached)
        return out

    def training_step(self, batch: ClipBatch, batch_idx: int) -> Tensor:
        out, _, g = self._step(batch.downscale_targets(self.hparams.train_downscale), "train")
        self.log("train/num_gaussians", float(g.num_gaussians), batch_size=batch.batch_size)
        return out.total

    def validation_step(self, batch: ClipBatch, batch_idx: int) -> None:
        _, r, g = self._step(batch, "val")
        target = batch.rgb.reshape(r.rgb.shape)
        mse = ((r.rgb.clamp(0, 1) - target) ** 2).flatten(2).mean(-1)
        self.log("val/psnr", (-10 * torch.log10(mse.clamp_min(1e-10))).mean(), prog_bar=True,
                 batch_size=batch.batch_size, sync_dist=True)
        if batch_idx == 0 and self.trainer.is_global_zero:
            log_validation_visuals(self, batch, r, target, g, self.hparams.orbit_frames)

    # ---- test: the evaluation protocol (docs/evaluation.md) -------------------------------------

    def on_test_start(self) -> None:
        self.report = EvalReport(self.eval_config).to(self.device)

    def test_step(self, batch: ClipBatch, batch_idx: int) -> None:
        g = self(batch)
        rgb = self.render_targets(g, batch).rgb.reshape(batch.rgb.shape)
        assert self.report is not None
        ids = [f"{m.get('index', f'r{self.global_rank}_b{batch_idx}_{b}')}" for b, m in enumerate(batch.meta)]
        self.report.add(batch, rgb, scene_ids=ids or None, geometry=self.depth_error(g, batch))
        if self.hparams.export_ply:
            self._export(g, batch, ids)

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

    def _export(self, g: Gaussians, batch: ClipBatch, ids: list[str]) -> None:
        out = self.test_dir / "ply"
        g = g.detach().to("cpu")
        for b in range(batch.batch_size):
            held = batch.meta[b].get("heldout_name") if batch.meta else None
            name = f"scene_{ids[b] if ids else b}" + (f"_without_{held}" if held else "")
            if self.decoder.is_dynamic:
                times = batch.time[b].reshape(-1).tolist()
                for m, t in enumerate(times):
                    save_ply(out / name / f"t{m:03d}_{t:.3f}.ply", g[b, m])
            else:
                save_ply(out / f"{name}.ply", g[b])

    # ---- optimisation -----------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay, no_decay = [], []
        for p in self.decoder.parameters():
            if p.requires_grad:
                # Norm scales, biases and Mamba's A_log / D / dt_bias are all 1-D; decaying them
                # pulls the SSM's time constants and skips towards zero for no benefit.
                (no_decay if p.ndim < 2 else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr, betas=tuple(hp.betas))
        warm = max(1, hp.warmup_steps)
        total = self.trainer.max_steps if self._trainer is not None else -1
        if hp.lr_schedule == "cosine" and (total is None or total < 0):
            raise ValueError("lr_schedule='cosine' needs trainer.max_steps (the step where the schedule ends)")

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if hp.lr_schedule == "constant":
                return 1.0
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return hp.min_lr_ratio + (1 - hp.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_model(self) -> None:
        """Shard every decoder block with FSDP2 when run under ModelParallelStrategy."""
        mesh = self.device_mesh
        if mesh is None or getattr(self.decoder, "_lyra_sharded", False):
            return  # no model parallelism, or already sharded (test after fit)
        from torch.distributed.fsdp import fully_shard

        dp_mesh = mesh["data_parallel"]
        for block in self.decoder.blocks.blocks:
            fully_shard(block, mesh=dp_mesh)
        fully_shard(self.decoder, mesh=dp_mesh)
        self.decoder._lyra_sharded = True

    # ---- checkpoints ---------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["lyra_decoder"] = {"class": type(self.decoder).__name__, "config": dict(self.decoder.config)}
        self._refuse_non_finite(checkpoint.get("state_dict", {}).items(), "the checkpoint is not written")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Also without a checkpoint every step: stop at the step that broke the weights.
        self._refuse_non_finite(self.named_parameters(), "training stopped")

    def _refuse_non_finite(self, named: Any, consequence: str) -> None:
        """Never keep training on, or write, weights holding NaN / Inf (all ranks agree first)."""
        bad = first_non_finite(named)
        ok = bad is None
        if self._trainer is not None and self.trainer.world_size > 1:
            ok = self.trainer.strategy.reduce_boolean_decision(ok, all=True)
        if not ok:
            what = f"{bad[0]} contains {bad[1]}" if bad else "another rank's weights hold NaN or Inf"
            raise FloatingPointError(
                f"non-finite weights after training step {self.global_step}: {what} (the first such parameter); "
                f"{consequence}, earlier checkpoints are kept. Resume from the last good one (--ckpt_path last) "
                "with a lower learning rate or stronger gradient clipping, or check the clips for extreme values")

    def _checkpoint_name(self) -> str:
        path = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        return f"checkpoint {path}" if path else "the checkpoint"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        where = self._checkpoint_name()
        fix = ("use the config the checkpoint was trained with, or start a new run from its weights with "
               "--model.init_args.init_from")
        if not isinstance(checkpoint, dict):
            raise ValueError(f"{where} is not a Lightning checkpoint of a StudentModule (it is not a dict)")
        state = checkpoint.get("state_dict")
        if not isinstance(state, dict):
            if not self._strategy_loads_weights():
                raise ValueError(f"{where} is not a Lightning checkpoint of a StudentModule (it has no state_dict)")
            # ModelParallelStrategy (FSDP2) has already loaded the weights into the sharded model and
            # taken them out of the dict: check them where they now are.
            state = dict(self.named_parameters())
        saved = checkpoint.get("lyra_decoder", {}).get("class")
        if saved is None and any(k.startswith("decoder.") for k in state):  # written without lyra's record
            timed = any(k.startswith(tuple(f"decoder.{p}" for p in TIME_EMBEDDINGS)) for k in state)
            if timed != bool(self.decoder.is_dynamic):
                saved = "DynamicGaussianDecoder" if timed else "StaticGaussianDecoder"
        if saved is not None and saved != type(self.decoder).__name__:
            raise ValueError(f"{where} holds a {saved} but the model config builds a {type(self.decoder).__name__}; "
                             f"use the config the checkpoint was trained with (model.init_args.decoder.class_path: "
                             f"lyra.models.decoders.{saved}), or start a new run from its weights with "
                             "model.init_args.init_from")
        saved_cfg = checkpoint.get("lyra_decoder", {}).get("config", {})
        mismatched = {k: (v, self.decoder.config.get(k)) for k, v in saved_cfg.items()
                      if not k.startswith("_") and not _same_setting(v, self.decoder.config.get(k))}
        if mismatched:
            raise ValueError(f"decoder settings differ from the checkpoint (checkpoint, config): {mismatched}; "
                             f"{where}: {fix}")
        bad = first_non_finite(state.items())
        if bad is not None:
            raise ValueError(f"{where} holds non-finite weights ({bad[0]} contains {bad[1]}); resume from an earlier "
                             "checkpoint of the run (its checkpoints/ folder), or start a new run")
        self._check_optimizer_state(checkpoint, where)

    def _strategy_loads_weights(self) -> bool:
        from lightning.pytorch.strategies import ModelParallelStrategy

        return self._trainer is not None and isinstance(self.trainer.strategy, ModelParallelStrategy)

    def _check_optimizer_state(self, checkpoint: dict[str, Any], where: str) -> None:
        """On resume, the saved optimizer state must be finite and fit this model's parameters (torch
        would load moments of another shape and fail, or broadcast them, at the first step)."""
        saved = checkpoint.get("optimizer_states")
        if not saved or self._trainer is None or self.trainer.state.fn != "fit":
            return
        fix = ("resume from another checkpoint of the run, or start a new run from these weights with "
               "--model.init_args.init_from (a fresh optimizer)")
        built = self.configure_optimizers()
        optimizers = [built["optimizer"] if isinstance(built, dict) else built]
        if len(saved) != len(optimizers):
            raise ValueError(f"the optimizer state in {where} does not fit this model: it holds {len(saved)} "
                             f"optimizers, this model has {len(optimizers)}; {fix}")
        names = {id(p): n for n, p in self.named_parameters()}
        for opt, st in zip(optimizers, saved):
            groups, saved_groups = opt.param_groups, st.get("param_groups", [])
            if len(saved_groups) != len(groups):
                raise ValueError(f"the optimizer state in {where} does not fit this model: this model's optimizer has "
                                 f"{len(groups)} parameter groups, the checkpoint's has {len(saved_groups)}; {fix}")
            params: dict[Any, Tensor] = {}
            for i, (a, b) in enumerate(zip(saved_groups, groups)):
                if len(a.get("params", [])) != len(b["params"]):
                    raise ValueError(f"the optimizer state in {where} does not fit this model: parameter group {i} "
                                     f"holds {len(a.get('params', []))} parameters, this model's {len(b['params'])}; "
                                     f"{fix}")
                params.update(zip(a["params"], b["params"]))
            for pid, values in st.get("state", {}).items():
                p = params.get(pid)
                if p is None:
                    raise ValueError(f"the optimizer state in {where} has state for parameter id {pid}, which none "
                                     f"of its parameter groups lists; {fix}")
                name = names.get(id(p), f"parameter {pid}")
                for key, v in values.items():
                    if not isinstance(v, Tensor):
                        continue
                    bad = first_non_finite([(key, v)])
                    if bad is not None:
                        raise ValueError(f"the optimizer state in {where} holds non-finite values: {key} of {name} "
                                         f"contains {bad[1]}; {fix}")
                    if v.ndim and tuple(v.shape) != tuple(p.shape):
                        raise ValueError(f"the optimizer state in {where}: {key} of {name} has shape "
                                         f"{tuple(v.shape)}, which does not fit the parameter's shape "
                                         f"{tuple(p.shape)}; {fix}")

    # ---- predict: Gaussians of generated scenes (lyra.inference: `lyra generate`, `lightning predict`) --

    def predict_step(
        self,
        batch: ClipBatch,
        batch_idx: int = 0,
        dataloader_idx: int = 0,
        time_chunk: int | None = None,
    ) -> dict[str, Any]:
        """The Gaussians of every sample of ``batch``, detached and moved to the CPU.

        Static decoders: ``gaussians`` of batch shape [B] (pruned like ``forward``). Dynamic decoders:
        [B, M], one set per target time: ``meta[b]["target_times"]`` when every sample lists them
        (``lyra.inference.clip_batch`` does), else the target frames' times (as ``forward``). They are
        decoded ``time_chunk`` target times per decoder pass (else ``meta[0]["time_chunk"]``, else all
        at once): fewer per pass bounds the decoder's peak memory; the result changes only by float
        rounding (the batch size changes the order of reductions).
        Returns ``{"gaussians", "target_time" ([B, M] or None), "meta"}``.
        """
        with torch.no_grad():
            if not self.decoder.is_dynamic:
                return {"gaussians": self(batch, perturb_depth=False).detach().to("cpu"), "target_time": None,
                        "meta": batch.meta}
            B, meta = batch.batch_size, batch.meta or []
            if meta and all("target_times" in m for m in meta):
                target = torch.tensor([list(m["target_times"]) for m in meta], dtype=batch.src_time.dtype,
                                      device=batch.src_time.device)
            else:
                target = batch.time.reshape(B, -1)
            M = target.shape[1]
            chunk = int(time_chunk or (meta[0].get("time_chunk") if meta else None) or M)
            if chunk < 1:
                raise ValueError(f"time_chunk must be >= 1, got {chunk}")
            parts, inputs = [], self.decoder_inputs(batch, perturb=False)
            for lo in range(0, M, chunk):
                g = self.decoder(batch.latents, batch.src_c2w, batch.src_K, time=batch.src_time,
                                 target_time=target[:, lo:lo + chunk], **inputs)
                if self.hparams.prune_keep is not None:
                    g = g.prune_fraction(self.hparams.prune_keep)
                parts.append(g.detach().to("cpu"))
            if len(parts) > 1:
                fields = ("means", "quats", "scales", "opacities", "colors")
                parts = [Gaussians(*(torch.cat([getattr(p, n) for p in parts], dim=1) for n in fields),
                                   check_values=False)]
            return {"gaussians": parts[0], "target_time": target.detach().to("cpu"), "meta": meta}
