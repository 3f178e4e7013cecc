"""The ``lightning`` command: LightningCLI over any lyra (or user) LightningModule / DataModule.

    lightning fit --config configs/dynamic.yaml
    lightning test --config configs/dynamic.yaml --ckpt_path path/to.ckpt
    lightning predict --config configs/generate.yaml
    lightning fit --config configs/static.yaml --config configs/stages/pruning.yaml   # overlays merge
"""

from __future__ import annotations

import os

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI


def main(args: list[str] | None = None) -> None:
    # Nothing in lyra may download weights at run time; fail loudly instead of hanging on a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
