"""Teacher throughput: clips/s generated on the fly (ProceduralGenerator + DCTCodec) vs read from the cache.

Times, for V x T x H x W clips (default 6 x 17 x 128 x 128):

1. ``TeacherModule.make_clip`` (ray tracing + encode + decode), one clip at a time;
2. writing those clips as shards (``ShardWriter``);
3. ``ShardReader.load`` of every clip (first pass verifies sha256 checksums, second pass does not);
4. ``ClipDataModule`` train batches (sampling views / target frames) from both sources.

    python benchmarks/teacher.py --clips 8 --threads 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from lyra.data.codecs import DCTCodec
from lyra.data.datamodule import ClipDataModule
from lyra.data.generators import ProceduralGenerator
from lyra.data.shards import ShardReader, ShardWriter
from lyra.models.teacher import TeacherModule


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:8.2f} clips/s  ({seconds / n * 1000:8.1f} ms/clip)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--views", type=int, default=6)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers for step 4")
    parser.add_argument("--clips-per-shard", type=int, default=4)
    parser.add_argument("--dynamic", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    teacher = TeacherModule(ProceduralGenerator(seed=0, dynamic=args.dynamic, num_views=args.views), DCTCodec(),
                            num_frames=args.frames, height=args.size, width=args.size)
    latent_shape = teacher.codec.latent_shape(args.frames, args.size, args.size)
    print(f"threads={torch.get_num_threads()} load_avg_1min={os.getloadavg()[0]:.2f} clip={args.views}x"
          f"{args.frames}x{args.size}x{args.size} latents={latent_shape} clips={args.clips}")

    t0 = time.perf_counter()
    clips = [teacher.make_clip(i) for i in range(args.clips)]
    print(f"on the fly   make_clip          {rate(args.clips, time.perf_counter() - t0)}")

    with tempfile.TemporaryDirectory() as root:
        t0 = time.perf_counter()
        writer = ShardWriter(root, args.clips_per_shard)
        writer.prepare(teacher.describe(), requested=range(args.clips))
        writer.add(clips)
        writer.finish()
        seconds = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in (writer.shard_dir).glob("*.safetensors"))
        print(f"cache write  ShardWriter        {rate(args.clips, seconds)}  {size / args.clips / 2**20:.1f} MiB/clip")
        reader = ShardReader(root)
        for label in ("load + sha256", "load (verified)"):
            t0 = time.perf_counter()
            for i in reader.indices:
                reader.load(i)
            print(f"from cache   {label:<18} {rate(args.clips, time.perf_counter() - t0)}")

        common = dict(num_views=args.views, target_frames=min(9, args.frames), batch_size=1,
                      num_workers=args.workers, num_val_clips=1, num_test_clips=1)
        modules = (("on the fly", ClipDataModule(teacher=teacher, num_train_clips=args.clips, **common)),
                   ("from cache", ClipDataModule(source="shards", shard_dir=root, num_train_clips=None, **common)))
        for label, dm in modules:
            t0 = time.perf_counter()
            n = sum(b.batch_size for b in dm.train_dataloader())
            print(f"{label}   ClipDataModule     {rate(n, time.perf_counter() - t0)}  (workers={args.workers})")
    print(f"load_avg_1min now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
