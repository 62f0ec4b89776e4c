"""Entry point of the ``triton_kernels`` plugin: GPU kernels for the kernel registry.

Registers the project's Triton kernels (SSD scan forward/backward, SSD step, fused KD loss) and
adapters to mamba-ssm's and causal-conv1d's kernels; see :mod:`.registry` for priorities and when
each is available. Import-light: neither triton nor mamba_ssm is imported here.
"""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl

from mamba4net.plugins.hybrid_mamba.kernels import FLOPS  # the ops' FLOPs, whoever implements them

from .registry import KERNELS

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


@hookimpl
def mamba4net_register_kernels(register):
    for name, op, factory, priority, available in KERNELS:
        extra = {"flops": FLOPS[op]} if op in FLOPS else {}
        register(name, factory, op=op, priority=priority, available=available, **extra)
