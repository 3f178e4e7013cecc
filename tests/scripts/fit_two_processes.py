"""Fit the tiny student on 2 CPU processes (gloo); used by tests/test_distributed.py.

    python tests/scripts/fit_two_processes.py OUT_DIR STRATEGY(fsdp|ddp) MAX_STEPS [RESUME_CKPT]

Writes OUT_DIR/final.ckpt (a full, consolidated checkpoint).
"""

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.strategies import ModelParallelStrategy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import TINY_DECODER, synthetic_batch  # noqa: E402

from lyra.losses.rendering import RenderingLoss  # noqa: E402
from lyra.models.decoders import StaticGaussianDecoder  # noqa: E402
from lyra.models.student import StudentModule  # noqa: E402
from lyra.render.renderer import GaussianRenderer  # noqa: E402


class Steps(torch.utils.data.Dataset):
    def __len__(self):
        return 64

    def __getitem__(self, i):
        return torch.tensor(i)


class ByStep(StudentModule):
    """Each rank trains on the clip named by (global step, rank), so the data a step sees does not
    depend on how a resumed run restarts its data loader: only model/optimizer/scheduler state do."""

    def training_step(self, batch, batch_idx):
        clip = synthetic_batch(seed=2 * self.global_step + self.global_rank)
        return super().training_step(clip, batch_idx)


def main() -> None:
    out, kind, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    resume = sys.argv[4] if len(sys.argv) > 4 else None
    L.seed_everything(0, workers=True)
    torch.manual_seed(0)
    dec = StaticGaussianDecoder(**TINY_DECODER)
    module = ByStep(dec, GaussianRenderer(backend="torch"), RenderingLoss(), lr=1e-3, warmup_steps=1)
    strategy = (ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1, save_distributed_checkpoint=False)
                if kind == "fsdp" else "ddp")
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy=strategy, max_steps=steps, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, default_root_dir=out,
                        use_distributed_sampler=True)
    loader = torch.utils.data.DataLoader(Steps(), batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=resume)
    trainer.save_checkpoint(out / "final.ckpt")


if __name__ == "__main__":
    main()
