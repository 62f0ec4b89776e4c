"""Hybrid Mamba student backbone: Mamba-2 (SSD) layers with a few attention layers at the output end.

Kept import-light (the plugin entry point lives in this package): the torch modules are loaded on
first access, e.g. ``from mamba4net.plugins.hybrid_mamba import HybridMambaBackbone``.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "HybridMambaParams": ".config",
    "HybridMambaBackbone": ".model",
    "HybridLayer": ".model",
    "Mamba2Mixer": ".mixer",
    "Mamba2State": ".mixer",
    "CausalSelfAttention": ".attention",
    "KVCache": ".attention",
    "ssd_scan_chunked": ".ssd",
    "ssd_scan_ref": ".ssd",
    "ssd_step": ".ssd",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
