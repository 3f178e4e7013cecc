"""``StudentModule``: a Gaussian decoder trained by rendering against the teacher's RGB."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lyra.data.clip import ClipBatch
from lyra.losses.rendering import RenderingLoss
from lyra.models.decoders import GaussianDecoder
from lyra.models.evaluation import TestReport
from lyra.models.visuals import log_validation_visuals
from lyra.render.gaussians import Gaussians
from lyra.render.ply import save_ply


class StudentModule(L.LightningModule):
    def __init__(
        self,
        decoder: GaussianDecoder,
        loss: RenderingLoss | None = None,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.01,
        warmup_steps: int = 100,
        prune_keep: float | None = None,
        eval_lpips_net: str = "vgg",
        export_ply: bool = False,
        orbit_frames: int = 16,
    ) -> None:
        """``prune_keep``: keep this fraction of Gaussians by opacity (Lyra's pruning stages: 0.2).
        ``export_ply``: write test scenes as PLY (one per target time for dynamic decoders)."""
        super().__init__()
        self.save_hyperparameters(ignore=["decoder", "loss"])
        self.decoder = decoder
        self.loss = loss if loss is not None else RenderingLoss()
        self.report: TestReport | None = None

    # ---- forward --------------------------------------------------------------------------------

    def forward(self, batch: ClipBatch) -> Gaussians:
        B = batch.batch_size
        target_time = batch.time.reshape(B, -1) if self.decoder.is_dynamic else None
        g = self.decoder(batch.latents, batch.src_c2w, batch.src_K, time=batch.src_time, target_time=target_time)
        if self.hparams.prune_keep is not None:
            g = g.prune_fraction(self.hparams.prune_keep)
        return g

    def _step(self, batch: ClipBatch, stage: str) -> tuple[Tensor, dict[str, Tensor], Gaussians]:
        g = self(batch)
        total, terms, renders = self.loss(g, batch)
        if not torch.isfinite(total):
            raise FloatingPointError(f"non-finite {stage} loss ({ {k: float(v) for k, v in terms.items()} }); "
                                     "lower the learning rate or check the clip data for NaNs")
        bs = batch.batch_size
        self.log(f"{stage}/loss", total, prog_bar=True, batch_size=bs, sync_dist=stage != "train")
        for k, v in terms.items():
            self.log(f"{stage}/{k}", v, batch_size=bs, sync_dist=stage != "train")
        return total, renders, g

    def training_step(self, batch: ClipBatch, batch_idx: int) -> Tensor:
        total, _, g = self._step(batch, "train")
        self.log("train/num_gaussians", float(g.num_gaussians), batch_size=batch.batch_size)
        return total

    def validation_step(self, batch: ClipBatch, batch_idx: int) -> None:
        _, renders, g = self._step(batch, "val")
        mse = ((renders["rgb"].clamp(0, 1) - renders["target"]) ** 2).flatten(2).mean(-1)
        self.log("val/psnr", (-10 * torch.log10(mse.clamp_min(1e-10))).mean(), prog_bar=True,
                 batch_size=batch.batch_size, sync_dist=True)
        if batch_idx == 0 and self.trainer.is_global_zero:
            log_validation_visuals(self, batch, renders, g, self.hparams.orbit_frames)

    # ---- test: the evaluation protocol (docs/evaluation.md) -------------------------------------

    def on_test_start(self) -> None:
        out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "test"
        self.report = TestReport(out_dir, lpips_net=self.hparams.eval_lpips_net).to(self.device)

    def test_step(self, batch: ClipBatch, batch_idx: int) -> None:
        g = self(batch)
        B, V, F, H, W, _ = batch.rgb.shape
        rgb, _, _ = self.loss.render(g, batch.c2w.reshape(B, V * F, 4, 4), batch.K.reshape(B, V * F, 3, 3), H, W)
        rgb = rgb.reshape(B, V, F, H, W, 3)
        assert self.report is not None
        self.report.add(batch, rgb, batch_idx, self.global_rank)
        if self.hparams.export_ply:
            self._export(g, batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        assert self.report is not None
        summary = self.report.finish(self.trainer.strategy)
        for k, v in summary.items():
            self.log(f"test/{k}", v, sync_dist=False, rank_zero_only=True)

    def _export(self, g: Gaussians, batch: ClipBatch, batch_idx: int) -> None:
        out = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "test" / "ply"
        g = g.detach().to("cpu")
        for b in range(batch.batch_size):
            name = f"scene_r{self.global_rank}_b{batch_idx:04d}_{b}"
            if self.decoder.is_dynamic:
                times = batch.time[b].reshape(-1).tolist()
                for m, t in enumerate(times):
                    save_ply(out / name / f"t{m:03d}_{t:.3f}.ply", g[b, m])
            else:
                save_ply(out / f"{name}.ply", g[b])

    # ---- optimisation -----------------------------------------------------------------------------

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = torch.optim.AdamW(self.decoder.parameters(), lr=hp.lr, betas=tuple(hp.betas),
                                weight_decay=hp.weight_decay)
        warm = max(1, hp.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
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

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint.get("lyra_decoder", {}).get("class")
        if saved is not None and saved != type(self.decoder).__name__:
            raise ValueError(f"this checkpoint holds a {saved} but the model config builds a "
                             f"{type(self.decoder).__name__}; use the config the checkpoint was trained with "
                             f"(model.init_args.decoder.class_path: lyra.models.decoders.{saved})")
        saved_cfg = checkpoint.get("lyra_decoder", {}).get("config", {})
        mismatched = {k: (v, self.decoder.config.get(k)) for k, v in saved_cfg.items()
                      if not k.startswith("_") and self.decoder.config.get(k) != v and not isinstance(v, float)}
        if mismatched:
            raise ValueError(f"decoder settings differ from the checkpoint (checkpoint, config): {mismatched}")

