"""Entry point of the ``cpu_kernels`` plugin: C kernels for the CPU (see the package docstring).

Import-light: nothing is compiled or loaded until the registry asks whether a kernel is available
on a device (the first such question per machine builds the library, in well under a second)."""

from __future__ import annotations

from typing import Any, Callable

from mamba4net.core.hookspecs import hookimpl

from mamba4net.plugins.hybrid_mamba.kernels import FLOPS, SSD_SCAN  # the op's FLOPs, whoever implements it

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def ssd_scan_c_available(device: str) -> bool:
    """On the CPU, where the C kernel builds (or was built before) on this machine."""
    if device != "cpu":
        return False
    from .ssd_scan import library

    return library() is not None


def ssd_scan_c() -> Callable[..., Any]:
    from .ssd_scan import ssd_scan_c as fn

    return fn


@hookimpl
def mamba4net_register_kernels(register):
    register("ssd_scan_c", ssd_scan_c, op=SSD_SCAN, priority=15, available=ssd_scan_c_available,
             flops=FLOPS[SSD_SCAN])
