"""ClipDataModule: (source, target) sampling, split protocol, no duplicates across workers and ranks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import lightning
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lyra.callbacks import ClipWriter
from lyra.data.clip import ClipBatch
from lyra.data.codecs import DCTCodec
from lyra.data.datamodule import SPLIT_OFFSETS, ClipDataModule, IndexDataModule
from lyra.data.generators import ClipGenerator, GeneratedClip
from lyra.data.shards import ShardWriter
from lyra.models.teacher import TeacherModule

V, T = 4, 9


class TaggedGenerator(ClipGenerator):
    """Cheap clips whose cameras say what they are: c2w translation = (view, frame, index)."""

    def generate(self, index: int, num_frames: int, height: int, width: int) -> GeneratedClip:
        g = torch.Generator().manual_seed(self.base_seed + index)
        c2w = torch.eye(4).repeat(V, num_frames, 1, 1)
        c2w[..., 0, 3] = torch.arange(V, dtype=torch.float32)[:, None]
        c2w[..., 1, 3] = torch.arange(num_frames, dtype=torch.float32)
        c2w[..., 2, 3] = float(index)
        K = torch.tensor([[8.0, 0, 4], [0, 8.0, 4], [0, 0, 1]]).expand(V, num_frames, 3, 3).clone()
        time = torch.linspace(0, 1, num_frames).expand(V, num_frames).clone()
        rgb = torch.rand(V, num_frames, height, width, 3, generator=g)
        caption = str(index)
        if self.base_seed == 1:  # a generator that (badly) draws from the global RNG
            caption += f"/{int(torch.randint(1 << 30, ()))}"
        return GeneratedClip(c2w=c2w, K=K, time=time, rgb=rgb, gt_rgb=rgb, caption=caption)


def teacher(seed: int = 0) -> TeacherModule:
    return TeacherModule(TaggedGenerator(seed), DCTCodec(latent_channels=24), num_frames=T, height=8, width=8)


def module(global_rng: bool = False, **kwargs) -> ClipDataModule:
    args = dict(teacher=teacher(int(global_rng)), num_views=V, target_frames=3, batch_size=2, num_train_clips=10,
                num_val_clips=5, num_test_clips=3)
    return ClipDataModule(**{**args, **kwargs})


def indices_of(batches: list[ClipBatch]) -> list[int]:
    return [int(c.split("/")[0]) for b in batches for c in b.captions]


def test_targets_are_frames_of_the_source_views():
    batches = list(module(num_views=2, target_frames=4).train_dataloader())
    varied = False
    for b in batches:
        assert b.latents.shape[:2] == (2, 2) and b.src_c2w.shape == (2, 2, T, 4, 4) and b.rgb.shape[:3] == (2, 2, 4)
        views = b.src_c2w[:, :, 0, 0, 3].long()  # [B, 2] view ids
        assert bool((views.diff(dim=1) > 0).all())  # distinct, in trajectory order
        assert torch.equal(b.c2w[..., 0, 3].long(), views[..., None].expand(-1, -1, 4))
        frames = b.c2w[..., 1, 3].long()  # [B, 2, 4] frame ids, without replacement per trajectory
        assert all(len(set(f.tolist())) == 4 for f in frames.reshape(-1, 4))
        assert torch.equal(b.time, frames / (T - 1))
        varied |= not torch.equal(frames[:, 0], frames[:, 1])
        for i, cap in enumerate(b.captions):  # target pixels are the generator's, at those frames
            gen = TaggedGenerator().generate(int(cap), T, 8, 8)
            assert torch.equal(b.gt_rgb[i], gen.rgb[views[i][:, None], frames[i]])
    assert varied, "frames are drawn independently per trajectory"


def test_view_count_is_drawn_per_batch_within_the_range():
    dm = module(num_views=(1, V), batch_size=2, num_train_clips=40)
    counts = {b.latents.shape[1] for b in dm.train_dataloader()}
    assert counts <= set(range(1, V + 1)) and len(counts) > 1


def test_protocol_per_split():
    dm = module()
    loader = dm.train_dataloader()
    e0, e1 = list(loader), list(loader)  # two epochs (no trainer: the loader counts passes)
    assert sorted(indices_of(e0)) == sorted(indices_of(e1)) == list(range(10))
    assert indices_of(e0) != indices_of(e1) or not torch.equal(e0[0].c2w, e1[0].c2w)
    val = dm.val_dataloader()
    v0, v1 = list(val), list(val)
    assert all(torch.equal(a.c2w, b.c2w) for a, b in zip(v0, v1))  # the same targets every epoch
    assert indices_of(v0) == [SPLIT_OFFSETS["val"] + i for i in range(5)]
    test = list(module(num_views=(1, 3), target_frames=3).test_dataloader())
    assert indices_of(test) == [SPLIT_OFFSETS["test"] + i for i in range(3)]
    for b in test:  # fixed: the first `max` views, evenly spaced frames
        assert torch.equal(b.c2w[..., 0, 3].long(), torch.arange(3)[None, :, None].expand(len(b.captions), 3, 3))
        assert torch.equal(b.c2w[..., 1, 3].long(), torch.tensor([0, 4, 8]).expand(len(b.captions), 3, 3))


def test_test_protocol_holds_out_each_named_trajectory():
    dm = module(batch_size=1, num_test_clips=1, test_heldout=[V - 1, 1], test_target_frames=3)
    batches = list(dm.test_dataloader())
    assert len(batches) == 2 == len(dm.test_dataloader())  # one sample per held-out trajectory
    for b, held in zip(batches, [V - 1, 1]):
        rest = [v for v in range(V) if v != held]
        assert b.src_c2w.shape[1] == V - 1 and b.c2w.shape[1] == V  # the decoder never sees the held-out view
        assert torch.equal(b.src_c2w[0, :, 0, 0, 3].long(), torch.tensor(rest))
        assert torch.equal(b.c2w[0, :, 0, 0, 3].long(), torch.arange(V))  # targets: every view, clip order
        assert b.meta[0]["heldout"] == [v == held for v in range(V)]
        # The tagged cameras differ in every view and frame (no shared start view): every frame is novel.
        assert b.meta[0]["frames"] == [0, 4, 8] and b.meta[0]["truth_frames"] == [0, 1, 2]
        gen = TaggedGenerator().generate(SPLIT_OFFSETS["test"], T, 8, 8)
        assert torch.equal(b.gt_rgb[0, held], gen.rgb[held, [0, 4, 8]])  # held-out ground truth at the targets
        assert len(b.sources) == 1 and b.sources[0].num_frames == T  # all source frames, for the baselines
    with pytest.raises(ValueError, match="does not exist"):
        next(iter(module(test_heldout=[V]).test_dataloader()))
    with pytest.raises(ValueError, match="not in this clip's trajectories"):
        next(iter(module(test_heldout=["spiral"]).test_dataloader()))


def test_workers_split_indices_without_duplicates():
    dm = module(num_workers=2, batch_size=3, num_train_clips=11)
    val = indices_of(list(dm.val_dataloader()))
    assert sorted(val) == [SPLIT_OFFSETS["val"] + i for i in range(5)]
    train = indices_of(list(dm.train_dataloader()))
    # Incomplete train batches are dropped per worker (ranks must step together); none repeat.
    assert len(set(train)) == len(train) == 9 and set(train) <= set(range(11))
    assert len(dm.train_dataloader()) == 3


def _rank_worker(rank: int, world: int, init: str, out: str) -> None:
    # mp.spawn makes spawn this child's default start method; fork DataLoader workers as a
    # Lightning process (started by a plain launcher) would, instead of re-importing everything.
    mp.set_start_method("fork", force=True)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # as seed_everything would: the same main-process RNG on both ranks
        dm = module(num_workers=2, batch_size=2, num_train_clips=13, num_val_clips=7, global_rng=True)
        batches = {split: list(getattr(dm, f"{split}_dataloader")()) for split in ("train", "val")}
        seen = {split: indices_of(b) for split, b in batches.items()}
        seen["draws"] = [c.split("/")[1] for b in batches["val"] for c in b.captions]
        seen["train_len"] = len(dm.train_dataloader())
        Path(out, f"rank{rank}.json").write_text(json.dumps(seen))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # > 10 s on 2 cores: CI's second step (-m slow)
def test_two_ranks_times_two_workers_see_each_clip_once(tmp_path):
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_rank_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    val = r0["val"] + r1["val"]
    assert sorted(val) == [SPLIT_OFFSETS["val"] + i for i in range(7)]  # exactly the split, no duplicates
    train = r0["train"] + r1["train"]
    assert len(set(train)) == len(train) and set(train) <= set(range(13))
    assert len(r0["train"]) == len(r1["train"]) and r0["train_len"] == r1["train_len"]  # ranks step together
    assert not set(r0["train"]) & set(r1["train"])
    draws = r0["draws"] + r1["draws"]  # global-RNG streams differ per rank and worker
    assert len(set(draws)) == len(draws) == 7


def test_cached_shards_give_the_same_samples_as_the_teacher(tmp_path):
    t = teacher()
    w = ShardWriter(tmp_path, clips_per_shard=2)
    w.prepare({"teacher": "tagged"})
    w.add([t.make_clip(i) for i in [0, 1, 2, SPLIT_OFFSETS["test"], SPLIT_OFFSETS["test"] + 1]])
    w.finish()
    cached = ClipDataModule(source="shards", shard_dir=str(tmp_path), num_views=V, target_frames=3, batch_size=1,
                            num_train_clips=None, num_val_clips=None, num_test_clips=2)
    fly = module(batch_size=1, num_test_clips=2)
    for a, b in zip(cached.test_dataloader(), fly.test_dataloader(), strict=True):
        assert a.captions == b.captions and torch.equal(a.latents, b.latents) and torch.equal(a.c2w, b.c2w)
        assert (a.rgb - b.rgb).abs().max() <= 0.5 / 255 + 1e-6  # the cache stores uint8 images
    assert sorted(indices_of(list(cached.train_dataloader()))) == [0, 1, 2]
    with pytest.raises(ValueError, match="holds 0 val clips"):
        ClipDataModule(source="shards", shard_dir=str(tmp_path), num_val_clips=1).val_dataloader()


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="needs a teacher"):
        ClipDataModule(source="on_the_fly")
    with pytest.raises(ValueError, match="needs shard_dir"):
        ClipDataModule(source="shards")
    with pytest.raises(ValueError, match="ask for more"):
        next(iter(module(num_views=V + 1).val_dataloader()))


def test_index_module_skips_what_the_writer_stored(tmp_path):
    t = teacher()
    w = ShardWriter(tmp_path, clips_per_shard=2)
    w.prepare(t.describe(), requested=range(6))
    w.add([t.make_clip(i) for i in (1, 4, 5)])  # one shard [1, 4]; 5 stays buffered (not done)
    dm = IndexDataModule(num_clips=6)
    dm.trainer = SimpleNamespace(callbacks=[ClipWriter(str(tmp_path))])
    assert dm.pending_indices() == [0, 2, 3, 5]
    assert [int(i) for b in dm.predict_dataloader() for i in b] == [0, 2, 3, 5]
    os.remove(tmp_path / "shards" / "clips-0000000001.json")
    assert dm.pending_indices() == list(range(6))


class _Recorder(lightning.LightningModule):
    """Records what each epoch's batches were; trains nothing of interest."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[tuple[str, list]]] = {}

    def training_step(self, batch: ClipBatch, batch_idx: int):
        assert isinstance(batch, ClipBatch)
        self.seen.setdefault(self.current_epoch, []).append((batch.captions, batch.c2w[..., :2, 3].tolist()))
        return self.w * batch.rgb.mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_reshuffles_each_epoch():
    model = _Recorder()
    trainer = lightning.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=module(num_views=2, num_train_clips=6, num_val_clips=0))
    e0, e1 = model.seen[0], model.seen[1]
    assert len(e0) == len(e1) == 3
    assert sorted(c for caps, _ in e0 for c in caps) == sorted(c for caps, _ in e1 for c in caps)
    assert e0 != e1  # the trainer's epoch reached the dataset: new order / views / frames


def test_train_clip_reuse_uses_each_clip_several_times_interleaved():
    once = list(module(batch_size=1).train_dataloader())
    twice = list(module(batch_size=1, train_clip_reuse=2).train_dataloader())
    assert len(twice) == 2 * len(once) == len(module(batch_size=1, train_clip_reuse=2).train_dataloader())
    seen = indices_of(twice)
    assert sorted(seen) == sorted(indices_of(once) * 2)
    assert seen[:4] == [seen[0], seen[1], seen[0], seen[1]]  # a window of 2 clips, each used twice in turn
    assert indices_of(once)[:2] == seen[:2] and torch.equal(once[0].c2w, twice[0].c2w)  # first uses as before
    assert not torch.equal(twice[0].c2w, twice[2].c2w)  # the second use draws other views / frames
    with pytest.raises(ValueError, match="train_clip_reuse"):
        module(train_clip_reuse=0)


def test_targets_from_all_trajectories_include_views_the_decoder_does_not_read():
    dm = module(num_views=2, target_frames=2, batch_size=1, targets="all")
    for b in list(dm.train_dataloader())[:4]:
        src_views = b.src_c2w[0, :, 0, 0, 3].long().tolist()
        assert len(src_views) == 2 and b.latents.shape[1] == 2
        assert b.c2w[0, :, 0, 0, 3].long().tolist() == list(range(V))  # every trajectory is a target
        assert b.rgb.shape[1:3] == (V, 2)
    with pytest.raises(ValueError, match="targets"):
        module(targets="novel")


def test_train_target_views_renders_a_random_subset_of_the_targets_in_training_only():
    dm = module(num_views=2, target_frames=1, batch_size=1, targets="all", train_target_views=2)
    drawn = set()
    for b in dm.train_dataloader():
        views = b.c2w[0, :, 0, 0, 3].long().tolist()  # the teacher writes the view id into the camera
        assert len(views) == 2 and views == sorted(views) and set(views) <= set(range(V))
        assert b.rgb.shape[1:3] == (2, 1) and b.latents.shape[1] == 2  # the decoder still reads 2 views
        drawn.add(tuple(views))
    assert len(drawn) > 1  # drawn per sample, not fixed
    val = next(iter(dm.val_dataloader()))
    assert val.c2w[0, :, 0, 0, 3].long().tolist() == list(range(V))  # validation keeps every target
    same = module(num_views=2, target_frames=1, batch_size=1, targets="all")
    assert next(iter(same.train_dataloader())).rgb.shape[1] == V  # None: all, as before
    with pytest.raises(ValueError, match="train_target_views"):
        module(train_target_views=0)
    with pytest.raises(ValueError, match="train_target_views=9"):
        next(iter(module(num_views=2, train_target_views=9).train_dataloader()))
    with pytest.raises(ValueError, match="train_target_views=3"):  # 'source' targets: refused when built
        module(num_views=2, train_target_views=3)
    with pytest.raises(ValueError, match="train_target_views=9"):  # 'all': the clip's trajectories decide
        next(iter(module(num_views=2, targets="all", train_target_views=9).train_dataloader()))
