"""Entry point of the ``hybrid_mamba`` plugin: the student backbone and its SSD kernels.

Import-light: no torch work at import; the model is imported when a config asks for it.
"""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl

from .config import HybridMambaParams
from .kernels import CUDA_KERNELS, FLOPS, KERNELS

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def build_student(params: HybridMambaParams):
    """``factory(params) -> HybridMambaBackbone`` (a ``StreamingBackbone``)."""
    from .model import HybridMambaBackbone

    return HybridMambaBackbone(params)


def _everywhere(device: str) -> bool:
    return True


def _cuda(device: str) -> bool:
    return device == "cuda"


@hookimpl
def mamba4net_register_students(register):
    register("hybrid_mamba", build_student, params=HybridMambaParams)


@hookimpl
def mamba4net_register_kernels(register):
    for name, op, factory, priority in KERNELS:
        register(name, factory, op=op, priority=priority, available=_everywhere, **_flops(op))
    for name, op, factory, priority in CUDA_KERNELS:
        register(name, factory, op=op, priority=priority, available=_cuda, **_flops(op))


def _flops(op: str) -> dict:
    return {"flops": FLOPS[op]} if op in FLOPS else {}
