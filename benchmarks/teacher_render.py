"""Time ProceduralWorld.sample_clip: V trajectories x T frames at H x W (default 6 x 17 x 128 x 128).

Prints wall time and process CPU time per clip (the machine may be shared: CPU time / threads is
the better estimate of an idle-machine wall time), plus the 1-minute load average. On a busy
machine OpenMP's spin-waiting inflates multi-thread timings many times over; run with
``OMP_WAIT_POLICY=PASSIVE`` (printed below) to measure without that artefact.

    python benchmarks/teacher_render.py --threads 2 --seeds 0 1 2 --dynamic
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from lyra.data.procedural import ProceduralWorld


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--dynamic", action="store_true")
    parser.add_argument("--no-shadows", action="store_true")
    parser.add_argument("--repeats", type=int, default=2, help="renders per seed; the fastest counts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={torch.get_num_threads()} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')} "
          f"load_avg_1min={os.getloadavg()[0]:.2f} "
          f"clip=6x{args.frames}x{args.size}x{args.size} dynamic={args.dynamic}")
    walls = []
    for seed in args.seeds:
        world = ProceduralWorld(seed, dynamic=args.dynamic, shadows=not args.no_shadows)
        best_wall, best_cpu = float("inf"), float("inf")
        for _ in range(args.repeats):
            w0, c0 = time.perf_counter(), time.process_time()
            world.sample_clip(args.frames, args.size, args.size)
            best_wall = min(best_wall, time.perf_counter() - w0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        walls.append(best_wall)
        print(f"seed={seed} objects={world.scene.num_objects} wall={best_wall:.3f}s cpu={best_cpu:.3f}s "
              f"cpu/threads={best_cpu / args.threads:.3f}s")
    print(f"median wall over seeds: {sorted(walls)[len(walls) // 2]:.3f}s "
          f"(load_avg_1min now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
