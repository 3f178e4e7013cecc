"""Progress bars (tqdm, on stderr) for the long stages of ``lyra generate``, and per-stage timings
with peak memory.

Peak memory is a high-water mark: on the CPU the process's peak resident set size
(``resource.getrusage``, never reset, so each stage reports the peak *so far*); on CUDA the
allocator's ``max_memory_allocated``, reset at the start of every stage (so each stage reports its
own peak). Nothing here changes what is computed.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from typing import Iterable, Iterator, TypeVar

import torch
from tqdm import tqdm

T = TypeVar("T")
_enabled = True


def set_progress(enabled: bool) -> None:
    """Turn every progress bar of lyra.inference on or off (``--quiet``)."""
    global _enabled
    _enabled = bool(enabled)


def progress_enabled() -> bool:
    return _enabled


def bar(iterable: Iterable[T] | None = None, total: int | None = None, desc: str = "", unit: str = "it"):
    """A tqdm bar (disabled by ``set_progress(False)``); usable as an iterable wrapper or with update()."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not _enabled, leave=False, file=sys.stderr,
                dynamic_ncols=True)


def cpu_peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def cuda_peak_mb(device: torch.device | str | None = None) -> float | None:
    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


class StageLog:
    """Wall time and peak memory per named stage, in order: ``with log.stage("teacher"): ...``."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.stages: dict[str, dict[str, float | None]] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if cuda:
                torch.cuda.synchronize(self.device)
            self.stages[name] = {
                "seconds": round(time.perf_counter() - start, 3),
                "cpu_peak_rss_mb": round(cpu_peak_rss_mb(), 1),
                "cuda_peak_allocated_mb": round(cuda_peak_mb(self.device), 1) if cuda else None,
            }

    def summary(self) -> dict:
        cuda = [s["cuda_peak_allocated_mb"] for s in self.stages.values() if s["cuda_peak_allocated_mb"] is not None]
        return {"stages": self.stages, "total_seconds": round(sum(s["seconds"] for s in self.stages.values()), 3),
                "cpu_peak_rss_mb": round(cpu_peak_rss_mb(), 1),
                "cuda_peak_allocated_mb": max(cuda) if cuda else None}

    def report(self) -> str:
        """One line per stage and the peak, for the end of a run."""
        lines = [f"  {name:<10} {s['seconds']:8.2f} s   peak RSS {s['cpu_peak_rss_mb']:8.1f} MiB"
                 + (f"   peak CUDA {s['cuda_peak_allocated_mb']:.1f} MiB" if s["cuda_peak_allocated_mb"] is not None
                    else "") for name, s in self.stages.items()]
        total = self.summary()
        tail = f"peak memory: CPU RSS {total['cpu_peak_rss_mb']:.1f} MiB"
        if total["cuda_peak_allocated_mb"] is not None:
            tail += f", CUDA allocated {total['cuda_peak_allocated_mb']:.1f} MiB"
        return "\n".join(lines + [f"  {'total':<10} {total['total_seconds']:8.2f} s", tail])
