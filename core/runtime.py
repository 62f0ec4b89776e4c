"""The process's runtime settings from a validated config: torch threads, kernel choices, device."""

from __future__ import annotations

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


def apply_runtime(loaded) -> torch.device:
    """Set torch's thread count and the kernel overrides of ``runtime``; return its device."""
    rt = loaded.cfg.runtime
    if rt.threads:
        torch.set_num_threads(rt.threads)
    set_kernel_overrides(rt.kernels)
    return pick_device(rt.device)
