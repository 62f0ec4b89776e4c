"""The process's runtime settings from a validated config: torch threads, kernel choices, device,
and the thread count of streaming decisions."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch

from mamba4net.core.errors import Mamba4netError
from mamba4net.core.kernels import set_kernel_overrides


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Mamba4netError(f"runtime.device is '{name}' but no CUDA device is available")
    return device


_decision_threads = 1  # runtime.decision_threads of the config applied last


def decision_thread_count() -> int:
    """The thread count of streaming decisions (``runtime.decision_threads`` of the config applied last)."""
    return _decision_threads


@contextmanager
def decision_threads(n: int | None = None) -> Iterator[None]:
    """Torch's intra-op threads set to ``n`` (default: the config's ``runtime.decision_threads``,
    1 unless set) for the block, then back. A streaming decision is a few hundred tiny ops: on a
    CPU one thread is fastest, and a machine's other work cannot stall it on a thread barrier."""
    n = n or _decision_threads
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def apply_runtime(loaded) -> torch.device:
    """Set torch's thread count, the decision path's thread count and the kernel overrides of
    ``runtime``; return its device."""
    global _decision_threads
    rt = loaded.cfg.runtime
    _decision_threads = rt.decision_threads
    if rt.threads:
        torch.set_num_threads(rt.threads)
    set_kernel_overrides(rt.kernels)
    return pick_device(rt.device)
