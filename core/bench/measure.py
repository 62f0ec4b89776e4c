"""Timing and peak memory of one callable, the two measurements every benchmark point makes.

Timing: ``warmup`` untimed calls, then up to ``repeats`` timed calls; the median is reported (all
times are kept). A per-point time budget stops the repetitions early (at least one timed call).

Peak memory of one call, measured in the running process as the *increase over a baseline*:

* CPU: ``malloc_trim(0)`` (glibc hands freed heap pages back, so earlier points' freed memory is
  not silently reused), then the peak-RSS counter is reset (``/proc/self/clear_refs`` <- ``5``);
  after the call, ``VmHWM - VmRSS before``. Linux only; elsewhere the value is ``None``.
* CUDA: ``max_memory_allocated`` after ``reset_peak_memory_stats``, minus what was allocated before.

Inputs are allocated before the baseline, so the number is what the call itself needs: weights
and inputs excluded; activations, caches and workspace included.
"""

from __future__ import annotations

import ctypes
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

CPU_MEMORY_METHOD = "peak RSS increase over the RSS before the call (malloc_trim + /proc/self/clear_refs)"
CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated increase over memory allocated before the call"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Wall times of one benchmark point, in milliseconds."""

    times_ms: list[float] = field(default_factory=list)
    warmup_ms: list[float] = field(default_factory=list)
    stopped_by_budget: bool = False

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    def as_dict(self) -> dict:
        return {
            "median_ms": round(self.median_ms, 4),
            "min_ms": round(min(self.times_ms), 4),
            "times_ms": [round(t, 4) for t in self.times_ms],
            "repeats": len(self.times_ms),
            "warmup": len(self.warmup_ms),
            "stopped_by_budget": self.stopped_by_budget,
        }


def time_call(
    fn: Callable[[], object],
    *,
    warmup: int,
    repeats: int,
    budget_s: float,
    device: torch.device,
    after: Callable[[], object] | None = None,
    memory: Callable[[Callable[[], object]], int | None] | None = None,
) -> tuple[Timing, int | None]:
    """Time ``fn``; ``after`` runs untimed after every call (e.g. to crop a KV cache back).

    ``memory``: a measurer (:func:`peak_memory`) wrapped around the last warm-up call (or the first
    timed call when ``warmup`` is 0), so memory costs no extra call. Returns (timing, peak bytes)."""
    timing, peak = Timing(), None
    start = time.perf_counter()

    def once(measure: bool) -> float:
        nonlocal peak
        sync(device)
        t0 = time.perf_counter()
        if measure and memory is not None:
            peak = memory(fn)
        else:
            fn()
        sync(device)
        ms = (time.perf_counter() - t0) * 1e3
        if after is not None:
            after()
        return ms

    for i in range(warmup):
        timing.warmup_ms.append(once(measure=i == warmup - 1))
        if time.perf_counter() - start > budget_s:
            break
    for i in range(repeats):
        timing.times_ms.append(once(measure=warmup == 0 and i == 0))
        if time.perf_counter() - start > budget_s and i + 1 < repeats:
            timing.stopped_by_budget = True
            break
    return timing, peak


# --------------------------------------------------------------------------------------------
# Peak memory
# --------------------------------------------------------------------------------------------


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def cpu_memory_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def peak_rss_increase(fn: Callable[[], object]) -> int | None:
    """Bytes by which the peak RSS during ``fn()`` exceeds the RSS just before it (Linux)."""
    _malloc_trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        fn()
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


def peak_cuda_increase(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return max(0, torch.cuda.max_memory_allocated(device) - before)


def memory_measurer(device: torch.device) -> tuple[Callable[[Callable[[], object]], int | None] | None, str]:
    """The peak-memory measurer for ``device`` and a sentence saying what it measures."""
    if device.type == "cuda":
        return (lambda fn: peak_cuda_increase(fn, device)), CUDA_MEMORY_METHOD
    if device.type == "cpu" and cpu_memory_supported():
        return peak_rss_increase, CPU_MEMORY_METHOD
    return None, f"not measured on {device.type} here (needs Linux /proc/self/clear_refs or CUDA)"
