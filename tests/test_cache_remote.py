"""A clip cache read through fsspec URLs (object storage: s3://, gs://; tested with file:// and
memory://), split over 2 nodes x 2 DataLoader workers with every clip read exactly once."""

from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace

import fsspec
import numpy as np
import pytest
import torch

from lyra.data.codecs import DCTCodec
from lyra.data.datamodule import SPLIT_OFFSETS, ClipDataModule
from lyra.data.generators import ProceduralGenerator
from lyra.data.shard_store import read_manifest
from lyra.data.shards import ShardReader, ShardWriter
from lyra.models.teacher import TeacherModule

TRAIN, VAL = 16, 5


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A local cache of 16 train + 5 val clips (2 views, 5 frames, 32x32), 3 clips per shard."""
    root = tmp_path_factory.mktemp("cache")
    teacher = TeacherModule(ProceduralGenerator(seed=2, num_views=2, num_objects=(2, 3)), DCTCodec(latent_channels=24),
                            num_frames=5, height=32, width=32)
    indices = [*range(TRAIN), *range(SPLIT_OFFSETS["val"], SPLIT_OFFSETS["val"] + VAL)]
    w = ShardWriter(root, clips_per_shard=3)
    w.prepare(teacher.describe(), indices)
    w.add([teacher.make_clip(i) for i in indices])
    w.finish()
    return root


@pytest.fixture
def memory_cache(cache):
    """The same cache uploaded to fsspec's in-memory filesystem (stands in for a bucket)."""
    fs = fsspec.filesystem("memory")
    name = f"lyra-cache-{uuid.uuid4().hex[:8]}"
    fs.put(str(cache), f"/{name}", recursive=True)
    yield f"memory://{name}"
    fs.rm(f"/{name}", recursive=True)


def same_clip(a, b) -> bool:
    da, db = a.to_numpy_dict(), b.to_numpy_dict()
    return da.keys() == db.keys() and all(
        np.array_equal(da[k], db[k]) if isinstance(da[k], np.ndarray) else da[k] == db[k] for k in da)


@pytest.mark.parametrize("scheme", ["file", "memory"])
def test_a_cache_reads_the_same_through_a_url(scheme, cache, memory_cache):
    url = f"file://{cache}" if scheme == "file" else memory_cache
    local, remote = ShardReader(cache), ShardReader(url)
    assert remote.indices == local.indices and len(remote) == TRAIN + VAL
    assert read_manifest(url)["config"] == read_manifest(cache)["config"]
    for i in (0, 7, SPLIT_OFFSETS["val"] + 4, 15, 7):  # across shards, and a shard already verified
        assert same_clip(remote.load(i), local.load(i)), i
    with pytest.raises(KeyError, match="clip 99 is not in"):
        remote.load(99)


def test_a_corrupt_remote_shard_is_named_by_its_url(memory_cache):
    fs = fsspec.filesystem("memory")
    path = f"/{memory_cache.removeprefix('memory://')}/shards/clips-0000000003.safetensors"
    blob = bytearray(fs.cat_file(path))
    blob[-50] ^= 0x01
    fs.pipe_file(path, bytes(blob))
    reader = ShardReader(memory_cache)
    reader.load(0)  # another shard: fine
    with pytest.raises(ValueError, match=rf"{memory_cache}/shards/clips-0000000003.safetensors is corrupt"):
        reader.load(4)


def test_a_missing_remote_cache_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"memory://no-such-cache/manifest.json not found"):
        ShardReader("memory://no-such-cache")


def _indices(batches) -> list[int]:
    return [m["index"] for b in batches for m in b.meta]


def test_two_nodes_times_two_workers_read_every_clip_once(memory_cache):
    """Each (node, worker) reads its own part of the cache straight from the URL: together every
    train and val clip exactly once (16 train clips, batch 2: no remainder is dropped)."""
    seen = {"train": [], "val": []}
    for rank in range(2):  # one process per node, as Lightning's global rank / world size give it
        dm = ClipDataModule(source="shards", shard_dir=memory_cache, num_views=2, target_frames=2, batch_size=2,
                            num_workers=2, num_train_clips=None, num_val_clips=None, num_test_clips=0)
        dm.trainer = SimpleNamespace(global_rank=rank, world_size=2, current_epoch=0)
        dm.setup("fit")
        train = list(dm.train_dataloader())
        assert len(train) == len(dm.train_dataloader()) == TRAIN // 2 // 2
        seen["train"] += _indices(train)
        seen["val"] += _indices(dm.val_dataloader())
        assert all(torch.isfinite(b.rgb).all() for b in train)
    assert sorted(seen["train"]) == list(range(TRAIN))
    assert sorted(seen["val"]) == [SPLIT_OFFSETS["val"] + i for i in range(VAL)]


SOAK = Path(__file__).parent / "scripts" / "soak.py"


@pytest.mark.slow
def test_soak_200_clips_through_predict_and_fit_keeps_memory_flat(tmp_path):
    """200 clips generated into a cache, then one pass of fit over all of them with 2 workers: every
    clip trained on once, and resident memory after the first 10 batches ~ at the end (a leak per
    clip or step would add up over 200). The numbers are in docs/benchmarks.md ("Soak")."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(SOAK), str(tmp_path), "200"], capture_output=True, text=True,
                          timeout=1500)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(result)
    assert result["predict"]["batches"] == 200 and ShardReader(tmp_path / "clips").indices == list(range(200))
    fit = result["fit"]
    assert fit["steps"] == 200 and fit["distinct_clips"] == 200 and fit["workers_max"] == 2
    for stage in ("predict", "fit"):
        r = result[stage]
        for start, end in (("rss_start_mb", "rss_end_mb"), ("with_workers_start_mb", "with_workers_end_mb")):
            assert r[end] <= 1.05 * r[start] + 30, f"{stage}: {start} {r[start]} MB -> {end} {r[end]} MB"
