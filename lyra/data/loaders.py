"""DataLoaders of the training stream that know their epoch and what they delivered, so a run resumed
from a checkpoint continues with the batch an uninterrupted run would have drawn next."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Callable

import numpy as np
from torch.utils.data import DataLoader

if TYPE_CHECKING:  # the config hands the data module its teacher; lyra.data sits below lyra.models
    pass



class _EpochDataLoader(DataLoader):
    """Tells its ``ClipStream`` the epoch before each pass (workers are forked after it)."""

    epoch_source: Callable[[], int | None] = staticmethod(lambda: None)
    _passes = 0

    def _set_epoch(self) -> None:
        epoch = self.epoch_source()
        self.dataset.epoch = self._passes if epoch is None else epoch
        self._passes += 1

    def __iter__(self):
        self._set_epoch()
        return super().__iter__()


# What a saved position depends on besides the epoch: the same values are needed to continue it.
LAYOUT = {"world_size": "the number of processes (trainer.devices x num_nodes)", "num_workers": "num_workers",
          "batch_size": "batch_size", "reuse": "train_clip_reuse", "seed": "seed",
          "num_clips": "num_train_clips", "indices_crc": "the training clips (num_train_clips / the cache)"}


class _ResumableLoader(_EpochDataLoader):
    """The training loader. ``state_dict`` says how far this epoch got: Lightning stores it in every
    checkpoint (``loops.fit_loop.combined_loader``) and hands it to ``load_state_dict`` on resume,
    before the first pass, which then starts after the batches already trained on. Batches are
    counted as the trainer takes them, not as workers prefetch them."""

    _consumed = 0
    _pending: dict | None = None

    def layout(self) -> dict:
        ds = self.dataset
        return {"world_size": ds.world_size, "num_workers": self.num_workers, "batch_size": ds.batch_size,
                "reuse": ds.reuse, "seed": ds.seed, "num_clips": len(ds.indices),
                "indices_crc": zlib.crc32(np.asarray(ds.indices, dtype=np.int64).tobytes())}

    def state_dict(self) -> dict:
        return {"epoch": int(self.dataset.epoch), "batches": int(self._consumed), **self.layout()}

    def load_state_dict(self, state: dict) -> None:
        self._pending = dict(state)

    def __iter__(self):
        self._set_epoch()
        start, state, self._pending = 0, self._pending, None
        if state is not None and state.get("epoch") == self.dataset.epoch:
            now = self.layout()
            changed = [k for k in LAYOUT if state.get(k) != now[k]]
            if changed:
                diff = "; ".join(f"{LAYOUT[k]}: checkpoint {state.get(k)}, now {now[k]}" for k in changed)
                raise ValueError(f"cannot continue the training data where the checkpoint left it: {diff}. Resume "
                                 "with the data settings the checkpoint was trained with, or start a new run from "
                                 "its weights with --model.init_args.init_from <checkpoint>")
            start = int(state["batches"])
            self.dataset.resume_plan(start, self.num_workers)  # refuses a position past the epoch's end
        self.dataset.start_batch = start  # before the workers start: they get a copy of the dataset
        self._consumed = start
        return _Counted(super(_EpochDataLoader, self).__iter__(), self)


class _Counted:
    """Iterator over a loader's batches that counts the ones handed out (``_ResumableLoader``)."""

    def __init__(self, it, loader: _ResumableLoader) -> None:
        self.it, self.loader = it, loader

    def __iter__(self):
        return self

    def __next__(self):
        batch = next(self.it)
        self.loader._consumed += 1
        return batch

    def __len__(self) -> int:
        return len(self.it)
