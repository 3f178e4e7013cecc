"""DataModules: ``ClipDataModule`` (student training data) and ``IndexDataModule`` (teacher predict).

Splits come from disjoint clip-index ranges, hence disjoint scene seeds: train ``[0, 1e6)``, val
``[1e6, 2e6)``, test ``[2e6, 3e6)`` (``SPLIT_OFFSETS``). A cache holds whichever ranges were
generated into it (``IndexDataModule(start=1_000_000)`` writes val clips).

Each sample is a (source, target) pair of one clip: the source keeps the chosen views with every
frame (latents + source cameras), the target the same views with ``target_frames`` frames per
trajectory (drawn without replacement, independently per trajectory). Sampling protocol per split:

- train: views and frames drawn from ``(seed, epoch, index)``; index order shuffled per epoch;
- val: drawn from ``(seed, index)`` only, so every epoch sees the same targets;
- test: the evaluation protocol (``lyra.data.splits``, docs/evaluation.md): for every clip and
  every trajectory named in ``test_heldout``, the decoder reads all other trajectories and the
  targets are ``test_target_frames`` evenly spaced frames of every trajectory, the held-out one
  flagged in the sample's meta. With no ``test_heldout``: the first ``max`` views, same frames.

The number of views is drawn once per *batch* (samples of a batch must stack). Indices are split
by (rank, world size, DataLoader worker) with no duplicates; train drops the < world_size
remainder and incomplete batches so every rank runs the same number of steps, val / test keep
every clip (ranks may then differ by one batch).

The training stream is resumable: its loader's ``state_dict`` (the epoch and the batches this rank
consumed in it) goes into Lightning checkpoints, and a run resumed with ``--ckpt_path`` continues
the epoch with the next batch an uninterrupted run would have drawn: every draw depends on
(seed, epoch, index) only, each DataLoader worker skips what it already delivered (without loading
those clips) and the workers take their turns where the interrupted run left them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Sequence

import lightning
import torch
from torch.utils.data import DataLoader

from lyra.data.clip import Clip
from lyra.data.loaders import _EpochDataLoader, _ResumableLoader
from lyra.data.shard_store import read_manifest
from lyra.data.shards import ShardReader
from lyra.data.stream import (
    SPLIT_OFFSETS,
    SPLIT_SIZE,
    ClipStream,
    ShardSource,
    Split,
    TeacherSource,
)

if TYPE_CHECKING:  # the config hands the data module its teacher; lyra.data sits below lyra.models
    from lyra.models.teacher import TeacherModule

__all__ = ["SPLIT_OFFSETS", "ClipDataModule", "IndexDataModule"]


class ClipDataModule(lightning.LightningDataModule):
    def __init__(
        self,
        source: Literal["on_the_fly", "shards"] = "on_the_fly",
        teacher: TeacherModule | None = None,
        shard_dir: str | None = None,
        num_views: int | tuple[int, int] = 6,
        target_frames: int = 9,
        batch_size: int = 1,
        num_workers: int = 0,
        num_train_clips: int | None = 1000,
        num_val_clips: int | None = 4,
        num_test_clips: int | None = 8,
        seed: int = 0,
        test_heldout: Sequence[str | int] = (),
        test_target_frames: int | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        train_clip_reuse: int = 1,
        targets: Literal["source", "all"] = "source",
        train_target_views: int | None = None,
        root: str | None = None,
    ) -> None:
        """Clips for the student: train / val / test splits of a teacher's clips.

        Args:
            source: ``"on_the_fly"`` (the teacher renders every clip when asked) or ``"shards"``
                (a clip cache written by ``lightning predict`` with ``ClipWriter``).
            teacher: the ``TeacherModule`` that makes clips (on the fly) or made the cache.
            shard_dir: the clip cache folder (``source="shards"``).
            num_views: trajectories per sample, an int or a ``(min, max)`` range drawn per batch.
            target_frames: frames per trajectory the student renders and matches in a step.
            batch_size: samples (scenes) per batch.
            num_workers: DataLoader worker processes.
            num_train_clips, num_val_clips, num_test_clips: clips per split (``None``: every clip
                of that split in the cache, or every clip of a teacher whose generator holds a
                finite number, ``num_clips``, as ``CaptureSource`` does). Splits use disjoint
                index ranges, hence scenes (a finite generator repeats its clips in every range).
            seed: seed of the view / frame sampling.
            test_heldout: trajectories (names, or view indices) held out in the test split; each
                gives its own sample per clip (docs/evaluation.md). Empty: no held-out view.
            test_target_frames: evenly spaced target frames per trajectory in the test split
                (default ``target_frames``; 5 of 17 frames = every 4th).
            num_frames, height, width: the clip size this run expects (``None``: whatever the
                source holds). Checked against the teacher now and against a cache's manifest at
                setup, so a curriculum stage that changes the size fails before training when the
                cache holds another one.
            train_clip_reuse: every training clip gives this many samples (other views and target
                frames each time), interleaved over windows of that many clips: a teacher that
                renders on the fly, or a cache read, is paid once per that many samples.
            targets: which trajectories the train / val targets come from: ``"source"`` (the ones
                the decoder reads, as in the paper) or ``"all"`` (every trajectory of the clip, so
                with ``num_views`` below the clip's count some targets are views the decoder never
                saw: direct supervision of novel views).
            train_target_views: training samples render only this many of those target trajectories,
                drawn at random per sample (``None``: all of them). A dynamic decoder decodes one
                Gaussian set per target view, so the step's cost falls with it: fewer targets per
                step, more steps per CPU hour (docs/experiments.md, E49). Validation and test keep all.
            root: a folder of real captures for a teacher whose generator reads them
                (``lyra.data.captures.CaptureSource``): it replaces that generator's ``root``, so
                one option points a config at another folder. ``None``: leave the generator as built.
        """
        super().__init__()
        if source == "on_the_fly" and teacher is None:
            raise ValueError("source='on_the_fly' needs a teacher (TeacherModule); or use source='shards' + shard_dir")
        if source == "shards" and not shard_dir:
            raise ValueError("source='shards' needs shard_dir (a cache written by `lightning predict` + ClipWriter)")
        if source not in ("on_the_fly", "shards"):
            raise ValueError(f"source must be 'on_the_fly' or 'shards', got {source!r}")
        lo, hi = (num_views, num_views) if isinstance(num_views, int) else tuple(num_views)
        if not 1 <= lo <= hi:
            raise ValueError(f"num_views must be an int >= 1 or a (min, max) range with 1 <= min <= max, "
                             f"got {num_views}")
        for name, v in (("target_frames", target_frames), ("batch_size", batch_size)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        counts = {"train": num_train_clips, "val": num_val_clips, "test": num_test_clips}
        for split, n in counts.items():
            if n is not None and not 0 <= n <= SPLIT_SIZE:
                raise ValueError(f"num_{split}_clips must lie in [0, {SPLIT_SIZE}] (splits use disjoint index "
                                 f"ranges of that size), got {n}")
            if n is None and source == "on_the_fly" and not hasattr(type(teacher.generator), "num_clips"):
                raise ValueError(f"num_{split}_clips=None (all clips) needs source='shards' or a generator with a "
                                 "finite number of clips (CaptureSource); give a count")
        self.source, self.teacher, self.shard_dir = source, teacher, shard_dir
        self.num_views, self.target_frames, self.batch_size = (lo, hi), target_frames, batch_size
        if test_target_frames is not None and test_target_frames < 1:
            raise ValueError(f"test_target_frames must be a positive int, got {test_target_frames}")
        self.test_target_frames = test_target_frames or target_frames
        self.test_heldout = list(test_heldout or [])
        if not isinstance(train_clip_reuse, int) or train_clip_reuse < 1:
            raise ValueError(f"train_clip_reuse must be a positive int, got {train_clip_reuse!r}")
        self.train_clip_reuse = train_clip_reuse
        if targets not in ("source", "all"):
            raise ValueError(f"targets must be 'source' or 'all', got {targets!r}")
        self.targets = targets
        if train_target_views is not None and (not isinstance(train_target_views, int) or train_target_views < 1):
            raise ValueError(f"train_target_views must be a positive int or None (all), got {train_target_views!r}")
        if targets == "source" and train_target_views is not None and train_target_views > lo:
            raise ValueError(f"train_target_views={train_target_views}, but with targets='source' a sample may have "
                             f"only {lo} target trajectories (num_views={num_views}); lower it or use targets='all'")
        self.train_target_views = train_target_views
        self.num_workers, self.counts, self.seed = num_workers, counts, seed
        self._reader: ShardReader | None = None
        if root is not None:
            if teacher is None or not hasattr(teacher.generator, "root"):
                what = type(teacher.generator).__name__ if teacher is not None else "no teacher"
                raise ValueError(f"root={root!r} names a capture folder, but the teacher's generator ({what}) reads "
                                 "no captures; use a teacher with generator lyra.data.captures.CaptureSource")
            teacher.generator.root = root
        self.expected_size = {"num_frames": num_frames, "height": height, "width": width}
        if teacher is not None:
            self._check_size(teacher.describe(), f"the teacher ({type(teacher.generator).__name__})")

    def _check_size(self, described: dict, what: str) -> None:
        wrong = {k: (described.get(k), v) for k, v in self.expected_size.items()
                 if v is not None and described.get(k) != v}
        if wrong:
            got = ", ".join(f"{k} {a} (expected {b})" for k, (a, b) in wrong.items())
            raise ValueError(f"{what} makes clips of another size: {got}. Generate clips of the expected size "
                             "(the same config overlays with `lightning predict`) or change the expected size")

    def describe_clips(self) -> dict:
        """What the clips are: the teacher's description (generator, codec, clip size), also for a
        cache (its manifest holds the teacher's). ``StudentModule`` records it in the decoder."""
        if self.teacher is not None:
            return self.teacher.describe()

        return read_manifest(self.shard_dir)["config"]

    def setup(self, stage: str) -> None:
        if self.source == "shards":
            self._check_size(self.describe_clips(), f"the cache {self.shard_dir}")

    def split_indices(self, split: Split) -> list[int]:
        lo, n = SPLIT_OFFSETS[split], self.counts[split]
        if self.source == "on_the_fly":
            return list(range(lo, lo + (self.teacher.generator.num_clips if n is None else n)))
        self._reader = self._reader or ShardReader(self.shard_dir)
        found = [i for i in self._reader.indices if lo <= i < lo + SPLIT_SIZE]
        if n is not None and len(found) < n:
            raise ValueError(f"{self.shard_dir} holds {len(found)} {split} clips (indices {lo}..{lo + SPLIT_SIZE - 1}) "
                             f"but num_{split}_clips={n}; generate more (IndexDataModule start={lo}) or lower it")
        return found if n is None else found[:n]

    def peek_clips(self, split: Split, n: int) -> list[Clip]:
        """The first ``n`` clips of a split, whole (every view and frame), e.g. to initialise weights."""
        indices = self.split_indices(split)[:n]
        source = TeacherSource(self.teacher) if self.source == "on_the_fly" else ShardSource(self._reader)
        return [source(i) for i in indices]

    def _rank(self) -> tuple[int, int]:
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def dataset(self, split: Split) -> ClipStream:
        indices = self.split_indices(split)
        if not indices:
            raise ValueError(f"the {split} split is empty: set num_{split}_clips > 0 (or generate {split} clips "
                             f"into the cache with IndexDataModule start={SPLIT_OFFSETS[split]})")
        source = TeacherSource(self.teacher) if self.source == "on_the_fly" else ShardSource(self._reader)
        rank, world = self._rank()
        frames = self.test_target_frames if split == "test" else self.target_frames
        return ClipStream(indices, source, split, self.batch_size, self.num_views, frames,
                          self.seed, rank, world, self.num_workers, heldout=self.test_heldout,
                          reuse=self.train_clip_reuse, targets=self.targets,
                          train_target_views=self.train_target_views)

    def _loader(self, split: Split) -> DataLoader:
        kind = _ResumableLoader if split == "train" else _EpochDataLoader
        loader = kind(self.dataset(split), batch_size=None, num_workers=self.num_workers)
        loader.epoch_source = lambda: self.trainer.current_epoch if self.trainer is not None else None
        return loader

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        if self.counts["val"] == 0:
            return []  # num_val_clips=0: no validation
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class IndexDataModule(lightning.LightningDataModule):
    """Clip indices ``start .. start + num_clips - 1`` for ``TeacherModule`` predict runs, minus those
    any callback with ``completed_indices()`` (``ClipWriter``) already stored: restarts resume."""

    def __init__(self, num_clips: int = 8, start: int = 0, batch_size: int = 1) -> None:
        super().__init__()
        if num_clips < 0 or start < 0 or batch_size < 1:
            raise ValueError(f"need num_clips >= 0, start >= 0, batch_size >= 1; "
                             f"got {num_clips}, {start}, {batch_size}")
        self.clip_indices = range(start, start + num_clips)
        self.batch_size = batch_size

    def pending_indices(self) -> list[int]:
        done: set[int] = set()
        for cb in self.trainer.callbacks if self.trainer is not None else []:
            if callable(getattr(cb, "completed_indices", None)):
                done |= cb.completed_indices()
        return [i for i in self.clip_indices if i not in done]

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.pending_indices(), batch_size=self.batch_size, shuffle=False)
