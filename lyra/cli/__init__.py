"""The ``lightning`` command: LightningCLI over any lyra (or user) LightningModule / DataModule.

    lightning fit --config configs/dynamic.yaml
    lightning test --config configs/dynamic.yaml --ckpt_path path/to.ckpt
    lightning predict --config configs/generate.yaml
    lightning fit --config configs/static.yaml --config configs/stages/7_pruning.yaml   # overlays merge

How configs compose (docs/configs.md):
- A YAML file may start from others with a top-level ``_base_: file.yaml`` (or a list), paths
  relative to that file: the bases are merged first, then the file itself.
- YAML is parsed in jsonargparse's ``omegaconf+`` mode, so ``${...}`` interpolation is resolved
  after every file and command-line option is merged: a value stated once (frame count, image
  size) follows an overlay that changes it.
- The decoder's codec facts (latent channels, time and space factors, causal first frame) are
  linked from the data module's codec (or its cache's manifest) before anything is built, so
  they are never copied by hand and a value written in a decoder config is replaced.

``fit`` also runs the test protocol on the final weights when ``test_after_fit: true`` (the
shipped configs set it), so one command leaves a checkpoint, logs and test metrics.

Runs and their files:
- A run lives in one folder: the shipped configs log to ``<default_root_dir>/tb/version_0`` (a
  fixed version) with checkpoints in its ``checkpoints/``, so ``--ckpt_path last`` after a crash
  finds the run's ``last.ckpt``. Asking to resume when there is nothing to resume is an error, and
  so is starting a new run in a folder that holds another run's checkpoints (it would overwrite
  them).
- ``--ckpt_path FILE`` is checked before anything is built: a missing, empty or non-checkpoint
  file is named with the fix (the student checks the contents when it loads them).
- The config snapshot goes into the run's folder (``config.yaml`` for fit,
  ``config.<subcommand>.yaml`` for the others), never into the working directory.
- Clip sizes the codec and the decoder cannot both take, and a decoder config naming the
  ``GaussianDecoder`` interface, are refused before anything is built or generated.
"""

from lyra.cli.composition import ClipSize, codec_spec_from_config, expand_config_bases
from lyra.cli.lightning_cli import LyraCLI, console_main, main
from lyra.cli.runs import check_checkpoint_file, run_folder

__all__ = ["ClipSize", "LyraCLI", "check_checkpoint_file", "codec_spec_from_config", "console_main",
           "expand_config_bases", "main", "run_folder"]
