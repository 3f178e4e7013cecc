"""ClipWriter: streams the clips of ``lightning predict`` into a resumable shard cache.

With ``lightning predict --config configs/generate.yaml`` the ``TeacherModule`` returns ``Clip``s
for the clip indices of an ``IndexDataModule``; this callback buffers them into safetensors shards
(``lyra.data.shards``). Restarting a killed run with the same config finishes it: ``setup`` drops
the partial shard and any shard whose sha256 no longer matches its record (``lyra cache verify``
lists those), ``IndexDataModule`` asks ``completed_indices`` which clips to skip, and every clip
index ends up stored exactly once. A cache whose records come from another teacher config is
refused, also when its manifest was lost.

Set ``return_predictions: false`` in the predict config (generate.yaml does) or Lightning keeps
every clip in memory until the end as well.
"""

from __future__ import annotations

from typing import Any

import lightning
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_warn

from lyra.data.clip import Clip
from lyra.data.shards import ShardWriter


class ClipWriter(BasePredictionWriter):
    def __init__(self, output_dir: str = "outputs/clips", clips_per_shard: int = 4) -> None:
        super().__init__(write_interval="batch")
        self.output_dir, self.clips_per_shard = str(output_dir), clips_per_shard
        self.writer = ShardWriter(self.output_dir, clips_per_shard)  # validates clips_per_shard now

    def completed_indices(self) -> set[int]:
        """Clip indices already stored in complete shards (read from disk, any process)."""
        return ShardWriter(self.output_dir).completed_indices()

    def setup(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        describe = getattr(pl_module, "describe", None)
        config = describe() if callable(describe) else {"module": type(pl_module).__qualname__}
        self.writer = ShardWriter(self.output_dir, self.clips_per_shard)
        # The indices this run must produce (IndexDataModule says); the cache is complete once stored.
        requested = getattr(trainer.datamodule, "clip_indices", ())
        # Rank 0 alone removes the debris of a killed run, before any rank starts writing.
        if trainer.is_global_zero:
            self.writer.prepare(config, requested, cleanup=True)
        trainer.strategy.barrier("ClipWriter.setup")
        if not trainer.is_global_zero:
            self.writer.prepare(config, requested, cleanup=False)
        if trainer.predict_loop.return_predictions:
            rank_zero_warn("ClipWriter: trainer.predict keeps every clip in memory too; "
                           "pass return_predictions=False (`return_predictions: false` in the config)")

    def write_on_batch_end(
        self,
        trainer: lightning.Trainer,
        pl_module: lightning.LightningModule,
        prediction: Any,
        batch_indices: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        clips = [prediction] if isinstance(prediction, Clip) else list(prediction)
        self.writer.add(clips)

    def on_predict_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule) -> None:
        self.writer.flush()

    def teardown(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule, stage: str) -> None:
        # Runs after a successful predict only, also when nothing was left to generate (then the
        # predict loop, and on_predict_end with it, is skipped). No barrier: records are the truth
        # and the manifest's `complete` is recomputed from them by whichever rank writes last.
        if stage == "predict":
            self.writer.finish()
