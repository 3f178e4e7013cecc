"""Shared pieces of the benchmark scripts: the machine line and memory readings.

The scripts run from the repository root as ``python benchmarks/<name>.py`` (the script's folder
is on ``sys.path``). Everything they measure is lyra's own code: the evaluation protocol and
its baselines live in ``lyra.eval``, training in ``StudentModule`` + ``Trainer``.
"""

from __future__ import annotations

import os
import platform
import resource

import torch


def machine_line(threads: int) -> str:
    load = os.getloadavg()
    return (f"# torch {torch.__version__}, {threads} threads of {os.cpu_count()} cores, "
            f"{platform.machine()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
            f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def current_rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**3


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
