"""Kernel selection: the best available implementation of an op for a device.

Implementations are registered by plugins (hook ``mamba4net_register_kernels``) with an ``op``, a
``priority`` and an optional ``available(device) -> bool``. ``runtime.kernels: {op: name}`` in the
config overrides the choice. Every choice is logged once per process; ``mamba4net plugins`` lists
every implementation with its op and priority.

The ops, and the signature every implementation of an op has:

* ``ssd_scan(x, dt, A, B, C, chunk_size, D=None, initial_states=None, return_final_states=False)``
  -> ``y`` or ``(y, final_states)``; x (b,l,h,p), dt (b,l,h) after softplus, A (h,) < 0,
  B/C (b,l,g,n), D (h,) or (h,p), states (b,h,p,n); differentiable.
* ``ssd_step(state, x, dt, A, B, C, D=None) -> (y, new_state)``: one token, x (b,h,p), dt (b,h),
  B/C (b,g,n); never writes into ``state``.
* ``causal_conv1d(x, weight, bias) -> out``: depthwise causal conv, x/out (b,l,c), weight (c,k),
  bias (c,) or None.
* ``kd_loss(student_logits, teacher_logits, temperature) -> scalar``:
  T^2 * KL(softmax(t/T) || softmax(s/T)) averaged over the leading dims; differentiable.

Which implementations exist, and where they run, is the plugins' business (their docstrings say).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from mamba4net.core.errors import ConfigError

log = logging.getLogger("mamba4net")

_overrides: dict[str, str] = {}
_cache: dict[tuple[str, str], Callable[..., Any]] = {}


def set_kernel_overrides(overrides: dict[str, str] | None) -> None:
    """Force ``{op: implementation name}``; cleared with ``None`` or ``{}``."""
    _overrides.clear()
    _overrides.update(overrides or {})
    _cache.clear()


def _is_available(component, device: str) -> bool:
    check = component.meta.get("available")
    if check is None:
        return True
    try:
        return bool(check(device))
    except Exception:  # an availability probe must never take the run down
        return False


def available_kernels(op: str, device: str, registry=None) -> list[str]:
    """Names of the implementations of ``op`` usable on ``device``, best first."""
    from mamba4net.registry import default_registry

    reg = (registry or default_registry()).kind("kernels")
    impls = [c for c in reg.where(op=op) if _is_available(c, device)]
    impls.sort(key=lambda c: (-c.meta["priority"], c.name))
    return [c.name for c in impls]


def resolve_kernel(op: str, device: str = "cpu", registry=None) -> Callable[..., Any]:
    """The callable implementing ``op`` on ``device`` ("cpu", "cuda", ...)."""
    key = (op, device)
    if registry is None and key in _cache:
        return _cache[key]
    from mamba4net.registry import default_registry

    reg = (registry or default_registry()).kind("kernels")
    if op in _overrides:
        name = _overrides[op]
        if name not in reg or reg.get(name).meta.get("op") != op:
            known = ", ".join(c.name for c in reg.where(op=op)) or "none"
            raise ConfigError(f"runtime.kernels.{op}: unknown kernel '{name}'; known for {op}: {known}")
        component = reg.get(name)
        if not _is_available(component, device):
            raise ConfigError(f"runtime.kernels.{op}: kernel '{name}' is not available on {device}")
    else:
        names = available_kernels(op, device, registry)
        if not names:
            raise ConfigError(f"no kernel implements op '{op}' on device '{device}'")
        component = reg.get(names[0])
    fn = component.factory()
    log.info("kernel %s on %s: %s (from plugin %s)", op, device, component.name, component.owner)
    if registry is None:
        _cache[key] = fn
    return fn
