"""``ClipStream``: the samples of one split, drawn the way docs/evaluation.md and the data module's doc
say (views and frames from (seed, epoch, index), the test split from the evaluation protocol), split
across ranks and DataLoader workers, and resumable mid-epoch."""

from __future__ import annotations

import random
import zlib
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from lyra.data.clip import PER_FRAME_FIELDS, Clip, ClipBatch
from lyra.data.shards import ShardReader
from lyra.data.splits import heldout_split, target_frames

if TYPE_CHECKING:  # the config hands the data module its teacher; lyra.data sits below lyra.models
    from lyra.models.teacher import TeacherModule


Split = Literal["train", "val", "test"]
SPLIT_OFFSETS: dict[str, int] = {"train": 0, "val": 1_000_000, "test": 2_000_000}
SPLIT_SIZE = 1_000_000


def _seed(*parts: int) -> int:  # stable across processes (unlike hash())
    return zlib.crc32(np.asarray(parts, dtype=np.int64).tobytes())


class TeacherSource:
    def __init__(self, teacher: TeacherModule) -> None:
        self.teacher = teacher

    def __call__(self, index: int) -> Clip:
        return self.teacher.make_clip(index)


class ShardSource:
    def __init__(self, reader: ShardReader) -> None:
        self.reader = reader

    def __call__(self, index: int) -> Clip:
        return self.reader.load(index)


class ClipStream(IterableDataset):
    """Yields ``ClipBatch``es of ``batch_size`` samples of ``indices``, split by rank and worker."""

    def __init__(
        self,
        indices: Sequence[int],
        source: Callable[[int], Clip],
        split: Split,
        batch_size: int,
        num_views: int | tuple[int, int],
        target_frames: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        heldout: Sequence[str | int] = (),
        reuse: int = 1,
        targets: str = "source",
        train_target_views: int | None = None,
    ) -> None:
        self.indices, self.source, self.split = list(indices), source, split
        self.heldout = list(heldout) if split == "test" else []
        self.reuse = reuse if split == "train" else 1
        self.targets, self.train_target_views = targets, train_target_views
        self.batch_size, self.target_frames, self.seed = batch_size, target_frames, seed
        self.views = (num_views, num_views) if isinstance(num_views, int) else tuple(num_views)
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.epoch = 0
        self.start_batch = 0  # batches of this epoch a resumed run already trained on (train only)

    def indices_for(self, worker_id: int, num_workers: int) -> list[int]:
        """This (rank, worker)'s clip indices, in iteration order."""
        order = list(self.indices)
        if self.split == "train":
            perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(_seed(self.seed, self.epoch)))
            order = [order[i] for i in perm.tolist()]
            order = order[: len(order) // self.world_size * self.world_size]  # same step count on every rank
        return order[self.rank :: self.world_size][worker_id :: max(num_workers, 1)]

    def _batches(self, n: int) -> int:
        if self.split == "train":
            return n * self.reuse // self.batch_size
        return -(-n * max(1, len(self.heldout)) // self.batch_size)  # one sample per held-out trajectory

    def worker_batches(self, num_workers: int) -> list[int]:
        """Batches each DataLoader worker of this rank yields in one epoch."""
        return [self._batches(len(self.indices_for(w, num_workers))) for w in range(max(num_workers, 1))]

    def __len__(self) -> int:
        return sum(self.worker_batches(self.num_workers))

    def resume_plan(self, consumed: int, num_workers: int) -> tuple[list[int], int]:
        """(batches each worker had delivered, the worker whose turn is next) after the first
        ``consumed`` batches of an epoch. A DataLoader takes one batch from each worker in turn and
        skips workers that have run out; a resumed loader starts its turns at its worker 0, so that
        worker plays the one whose turn was next (``__iter__``)."""
        counts = self.worker_batches(num_workers)
        if not 0 <= consumed <= sum(counts):
            raise ValueError(f"the checkpoint says {consumed} batches of this epoch were trained on, but an epoch "
                             f"of this training split has {sum(counts)}; the data settings changed since it was saved")
        taken, turn = [0] * len(counts), 0
        for _ in range(consumed):
            while taken[turn] >= counts[turn]:
                turn = (turn + 1) % len(counts)
            taken[turn] += 1
            turn = (turn + 1) % len(counts)
        return taken, turn

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        skip = 0
        if self.split == "train" and self.start_batch:
            taken, turn = self.resume_plan(self.start_batch, nw)
            wid = (wid + turn) % nw  # this worker continues the stream of the worker whose turn was next
            skip = taken[wid]
        if info is not None:
            # A worker's global RNGs differ per (seed, epoch, rank, worker) for any generator that
            # draws from them (the main process's are left alone); our own draws below depend on
            # the clip index only, whatever the topology.
            s = _seed(self.seed, self.epoch, self.rank, wid)
            torch.manual_seed(s), np.random.seed(s), random.seed(s)
        mine = self.indices_for(wid, nw)
        if self.split == "test":
            yield from self._test_batches(mine)
            return
        chunk: list[tuple[int, int, Clip]] = []
        for index, rep, clip in self._uses(mine, skip * self.batch_size):
            chunk.append((index, rep, clip))
            if len(chunk) == self.batch_size:
                n_views = self._num_views(chunk[0][0], chunk[0][1])
                yield ClipBatch.collate([self.sample(c, i, n_views, r) for i, r, c in chunk])
                chunk = []
        if chunk and self.split != "train":  # train drops it: every rank runs the same step count
            n_views = self._num_views(chunk[0][0], chunk[0][1])
            yield ClipBatch.collate([self.sample(c, i, n_views, r) for i, r, c in chunk])

    def _uses(self, indices: list[int], skip: int = 0):
        """(index, use, clip) in order: with ``reuse`` R, windows of R clips are loaded once and each
        clip is used R times, interleaved, so consecutive steps see different scenes. The first
        ``skip`` uses are left out (a resumed run); windows left out whole are not loaded."""
        for w in range(0, len(indices), self.reuse):
            ids = indices[w:w + self.reuse]
            if skip >= self.reuse * len(ids):
                skip -= self.reuse * len(ids)
                continue
            window = [(i, self.source(i)) for i in ids]
            for rep in range(self.reuse):
                for i, clip in window:
                    if skip:
                        skip -= 1
                        continue
                    yield i, rep, clip

    def _test_batches(self, indices: list[int]):
        items: list[tuple[Clip, Clip]] = []
        for i in indices:
            clip = self.source(i)
            if self.heldout:
                items += [heldout_split(clip, h, self.target_frames) for h in self.heldout]
            else:
                items.append(self.sample(clip, i, self.views[1]))
            while len(items) >= self.batch_size:
                yield ClipBatch.collate(items[: self.batch_size], keep_sources=True)
                items = items[self.batch_size :]
        if items:
            yield ClipBatch.collate(items, keep_sources=True)

    def _rng(self, *parts: int) -> torch.Generator:
        epoch = self.epoch if self.split == "train" else 0
        return torch.Generator().manual_seed(_seed(self.seed, epoch, *parts))

    def _num_views(self, first_index: int, use: int = 0) -> int:
        lo, hi = self.views
        if self.split == "test" or lo == hi:
            return hi
        return int(torch.randint(lo, hi + 1, (), generator=self._rng(first_index, 1, *([use] if use else []))))

    def sample(self, clip: Clip, index: int, n_views: int, use: int = 0) -> tuple[Clip, Clip]:
        V, T = clip.num_views, clip.num_frames
        if n_views > V or self.target_frames > T:
            raise ValueError(f"clip {index} has {V} views x {T} frames; num_views={self.views} / target_frames="
                             f"{self.target_frames} ask for more. Lower them or generate larger clips")
        g = self._rng(index, 2, *([use] if use else []))  # use 0 draws what a single use always drew
        if self.split == "test":
            views = torch.arange(n_views)
            frames = target_frames(T, self.target_frames).expand(n_views, -1)
        else:
            views = torch.randperm(V, generator=g)[:n_views].sort().values
        target_views = torch.arange(V) if self.targets == "all" and self.split != "test" else views
        if self.split == "train" and self.train_target_views is not None:
            if self.train_target_views > len(target_views):
                raise ValueError(f"train_target_views={self.train_target_views}, but a sample of clip {index} has "
                                 f"{len(target_views)} target trajectories; lower it or use targets='all'")
            pick = torch.randperm(len(target_views), generator=g)[: self.train_target_views].sort().values
            target_views = target_views[pick]
        if self.split != "test":
            frames = torch.stack([torch.randperm(T, generator=g)[: self.target_frames].sort().values
                                  for _ in range(len(target_views))])
        src = clip.select(views=views)
        shown = clip.select(views=target_views)
        rows = torch.arange(len(target_views))[:, None]
        tgt = replace(shown, **{k: getattr(shown, k)[rows, frames] for k in PER_FRAME_FIELDS
                                if getattr(shown, k) is not None})
        return src, tgt
