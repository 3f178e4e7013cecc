"""The ``lightning`` command: LightningCLI over any lyra (or user) LightningModule / DataModule.

    lightning fit --config configs/dynamic.yaml
    lightning test --config configs/dynamic.yaml --ckpt_path path/to.ckpt
    lightning predict --config configs/generate.yaml
    lightning fit --config configs/static.yaml --config configs/stages/pruning.yaml   # overlays merge

``fit`` also runs the test protocol on the final weights when ``test_after_fit: true`` (the
shipped configs set it), so one command leaves a checkpoint, logs and test metrics.
"""

from __future__ import annotations

import os

from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI


class LyraCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="after `fit`, run `test` with the final weights (fit subcommand only)")

    def after_fit(self) -> None:
        if self.config.get(self.subcommand, {}).get("test_after_fit"):
            self.trainer.test(self.model, datamodule=self.datamodule)


def main(args: list[str] | None = None) -> None:
    # Nothing in lyra may download weights at run time; fail loudly instead of hanging on a hub.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    LyraCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
