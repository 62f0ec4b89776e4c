"""What this plugin registers, with when each implementation may be chosen (import-light).

Priorities of every implementation of an op (higher wins among the available ones):

    mamba-ssm / causal-conv1d (CUDA, when the package is installed)   30
    this plugin's Triton kernels (CUDA, or TRITON_INTERPRET=1)         20
    hybrid_mamba's chunked PyTorch scan, PyTorch conv / step / KD      10 or 0
    the sequential reference scan                                       0

Availability never imports the optional packages: ``importlib.util.find_spec`` only looks them up.
On a CPU, the Triton kernels are available only when ``TRITON_INTERPRET=1`` was set before Triton
was imported (the interpreter: exact but very slow; meant for tests). Setting it makes them the
CPU choice, so leave it unset outside tests.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, Callable

SSD_SCAN, SSD_STEP, CAUSAL_CONV1D, KD_LOSS = "ssd_scan", "ssd_step", "causal_conv1d", "kd_loss"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def triton_available(device: str) -> bool:
    """Triton kernels run on CUDA devices, or on the CPU under the interpreter."""
    if not _installed("triton"):
        return False
    if device == "cuda":
        return True
    return device == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"


def mamba_ssm_available(device: str) -> bool:
    """mamba-ssm's kernels: CUDA only, and only where the package is installed."""
    return device == "cuda" and _installed("mamba_ssm")


def causal_conv1d_available(device: str) -> bool:
    return device == "cuda" and _installed("causal_conv1d")


# --- factories: each imports its implementation when the registry first asks for it -------------
def ssd_scan_triton() -> Callable[..., Any]:
    from .ssd_scan import ssd_scan_triton as fn

    return fn


def ssd_step_triton() -> Callable[..., Any]:
    from .ssd_step import ssd_step_triton as fn

    return fn


def kd_loss_triton() -> Callable[..., Any]:
    from .kd_loss import kd_loss_triton as fn

    return fn


def ssd_scan_mamba_ssm() -> Callable[..., Any]:
    from .mamba_ssm_ops import ssd_scan_mamba_ssm as fn

    return fn


def ssd_step_mamba_ssm() -> Callable[..., Any]:
    from .mamba_ssm_ops import ssd_step_mamba_ssm as fn

    return fn


def causal_conv1d_cuda() -> Callable[..., Any]:
    from .mamba_ssm_ops import causal_conv1d_cuda as fn

    return fn


# (registered name, op, factory, priority, availability): plugin.py registers exactly these.
KERNELS: list[tuple[str, str, Callable[[], Callable[..., Any]], int, Callable[[str], bool]]] = [
    ("ssd_scan_mamba_ssm", SSD_SCAN, ssd_scan_mamba_ssm, 30, mamba_ssm_available),
    ("ssd_step_mamba_ssm", SSD_STEP, ssd_step_mamba_ssm, 30, mamba_ssm_available),
    ("causal_conv1d_cuda", CAUSAL_CONV1D, causal_conv1d_cuda, 30, causal_conv1d_available),
    ("ssd_scan_triton", SSD_SCAN, ssd_scan_triton, 20, triton_available),
    ("ssd_step_triton", SSD_STEP, ssd_step_triton, 20, triton_available),
    ("kd_loss_triton", KD_LOSS, kd_loss_triton, 20, triton_available),
]
