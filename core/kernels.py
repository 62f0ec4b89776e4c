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
* ``stream_decoder(backbone, batch_size, state=None) -> decoder``: streaming decisions, one token
  per stream per call: ``decoder.step(x (b, D)) -> h (b, D)`` equals the backbone's ``step``
  output; ``decoder.states()`` returns the state in the backbone's ``step`` format;
  ``decoder.reset(batch_size, state=None)`` starts new streams. A decoder may snapshot the
  weights and keep its state in place; build a new one after the weights change.
* ``kd_loss(student_logits, teacher_logits, temperature) -> scalar``:
  T^2 * KL(softmax(t/T) || softmax(s/T)) averaged over the leading dims; differentiable.

Which implementations exist, and where they run, is the plugins' business (their docstrings say).

An implementation may also declare ``flops`` (meta): a function of the op's arguments returning the
op's FLOPs. While :func:`counting_flops` is active, a call of such an implementation counts those
FLOPs instead of whatever torch's FLOP counter saw of its insides (nothing, for a custom GPU
kernel; the chunked algorithm's matmuls, for a PyTorch one), so an op counts the same whatever
implementation runs it.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from mamba4net.core.errors import ConfigError

log = logging.getLogger("mamba4net")

_overrides: dict[str, str] = {}
_cache: dict[tuple[str, str], tuple[Callable[..., Any], Callable[..., int] | None]] = {}
_tally: list | None = None  # [FlopCounterMode, extra FLOPs] while counting_flops() is active


class FlopTally:
    """What :func:`counting_flops` yields: ``total`` = torch's count plus the declared kernel FLOPs."""

    def __init__(self, counter):
        self.counter = counter
        self.kernel_adjustment = 0  # declared FLOPs of kernels minus what torch saw inside them

    @property
    def total(self) -> int:
        return int(self.counter.get_total_flops() + self.kernel_adjustment)


@contextmanager
def counting_flops() -> Iterator[FlopTally]:
    """Count the FLOPs of the torch work inside the block (``torch.utils.flop_counter``), with
    kernels that declare their FLOPs counted by their declaration."""
    global _tally
    from torch.utils.flop_counter import FlopCounterMode

    tally = FlopTally(FlopCounterMode(display=False))
    previous, _tally = _tally, tally
    try:
        with tally.counter:
            yield tally
    finally:
        _tally = previous


def _counted(fn: Callable[..., Any], flops: Callable[..., int]) -> Callable[..., Any]:
    def counted(*args, **kwargs):
        tally = _tally
        if tally is None:
            return fn(*args, **kwargs)
        before = tally.counter.get_total_flops()
        out = fn(*args, **kwargs)
        tally.kernel_adjustment += int(flops(*args, **kwargs)) - (tally.counter.get_total_flops() - before)
        return out

    return counted


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
    fn, flops = _resolve(op, device, registry)
    return _counted(fn, flops) if _tally is not None and flops is not None else fn


def _resolve(op: str, device: str, registry) -> tuple[Callable[..., Any], Callable[..., int] | None]:
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
    chosen = (component.factory(), component.meta.get("flops"))
    log.info("kernel %s on %s: %s (from plugin %s)", op, device, component.name, component.owner)
    if registry is None:
        _cache[key] = chosen
    return chosen
