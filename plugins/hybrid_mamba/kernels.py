"""The SSD kernels this plugin registers, and how the model looks its kernels up.

Import-light (no torch at import): ``plugin.py`` imports this module while plugins load. Each factory
imports its implementation when the kernel registry first asks for it.

Ops and their call signatures (every implementation of an op has the same one):

* ``ssd_scan(x, dt, A, B, C, chunk_size, D=None, initial_states=None, return_final_states=False)``
  -> ``y`` or ``(y, final_states)``; see :mod:`.ssd`.
* ``ssd_step(state, x, dt, A, B, C, D=None) -> (y, new_state)``.
* ``causal_conv1d(x, weight, bias) -> out``: depthwise causal conv, x/out (b, l, c), weight (c, k).
* ``stream_decoder(backbone, batch_size, state=None) -> decoder``: a streaming decoder over the
  backbone's weights (``decoder.step(x (b, D)) -> h (b, D)``, ``decoder.states()``); see :mod:`.decode`.

Implementations registered here, by priority: ``ssd_scan_torch_chunked`` (10) and
``ssd_scan_torch_ref`` (0, the sequential reference); ``ssd_step_torch`` (0);
``causal_conv1d_torch`` (0); ``stream_decoder_cuda_graph`` (20, CUDA devices only: the fused
step recorded and replayed as CUDA graphs, see :mod:`.graph_decode`), ``stream_decoder_torch_fused``
(10: prepacked weights, state updated in place) and ``stream_decoder_torch_ref`` (0:
``backbone.step``). The triton_kernels plugin adds faster ones (see its ``registry``); the ops'
signatures are listed in :mod:`mamba4net.core.kernels`.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("mamba4net")

SSD_SCAN = "ssd_scan"
SSD_STEP = "ssd_step"
CAUSAL_CONV1D = "causal_conv1d"
STREAM_DECODER = "stream_decoder"


# --- FLOPs of the ops, whatever runs them (kernel meta ``flops``; see mamba4net.core.kernels) ---------
def ssd_scan_flops(x, dt, A, B, C, chunk_size=None, D=None, initial_states=None, return_final_states=False) -> int:
    """The scan in its recurrent form, counted like matmuls (2 per multiply-add; elementwise work
    such as the decay is not counted, as torch's FLOP counter does not count it): per token and
    head, the state update dt x B^T (p x n) and the readout C h (p x n): ``4 * b * l * h * p * n``."""
    b, l, h, p = x.shape
    return 4 * b * l * h * p * B.shape[-1]


def ssd_step_flops(state, x, dt, A, B, C, D=None) -> int:
    """One token of :func:`ssd_scan_flops`: ``4 * b * h * p * n``."""
    b, h, p = x.shape
    return 4 * b * h * p * B.shape[-1]


FLOPS = {SSD_SCAN: ssd_scan_flops, SSD_STEP: ssd_step_flops}


def ssd_scan_torch_chunked() -> Callable[..., Any]:
    """Chunked SSD in PyTorch: the default on every device."""
    from .ssd import ssd_scan_chunked

    return ssd_scan_chunked


def ssd_scan_torch_ref() -> Callable[..., Any]:
    """Sequential per-timestep recurrence: slow, for tests and debugging."""
    from .ssd import ssd_scan_ref

    return ssd_scan_ref


def ssd_step_torch() -> Callable[..., Any]:
    """One-token recurrent update in PyTorch."""
    from .ssd import ssd_step

    return ssd_step


def causal_conv1d_torch() -> Callable[..., Any]:
    """Depthwise causal conv as k shifted fused multiply-adds (time-major, no transposes)."""
    from .mixer import causal_depthwise_conv

    return causal_depthwise_conv


def stream_decoder_torch_fused() -> Callable[..., Any]:
    """Prepacked weights, preallocated state updated in place: the decision path's default."""
    from .decode import fused_decoder

    return fused_decoder


def stream_decoder_cuda_graph() -> Callable[..., Any]:
    """The fused step recorded once per ring slot and replayed as CUDA graphs (CUDA devices)."""
    from .graph_decode import graph_decoder

    return graph_decoder


def stream_decoder_torch_ref() -> Callable[..., Any]:
    """``backbone.step`` as it is: the reference the fused decoder is tested against."""
    from .decode import reference_decoder

    return reference_decoder


# (registered name, op, factory, priority): plugin.py registers exactly these.
KERNELS: list[tuple[str, str, Callable[[], Callable[..., Any]], int]] = [
    ("ssd_scan_torch_chunked", SSD_SCAN, ssd_scan_torch_chunked, 10),
    ("ssd_scan_torch_ref", SSD_SCAN, ssd_scan_torch_ref, 0),
    ("ssd_step_torch", SSD_STEP, ssd_step_torch, 0),
    ("causal_conv1d_torch", CAUSAL_CONV1D, causal_conv1d_torch, 0),
    ("stream_decoder_torch_fused", STREAM_DECODER, stream_decoder_torch_fused, 10),
    ("stream_decoder_torch_ref", STREAM_DECODER, stream_decoder_torch_ref, 0),
]

# Implementations that run on CUDA devices only: (registered name, op, factory, priority).
CUDA_KERNELS: list[tuple[str, str, Callable[[], Callable[..., Any]], int]] = [
    ("stream_decoder_cuda_graph", STREAM_DECODER, stream_decoder_cuda_graph, 20),
]

_FALLBACK = {SSD_SCAN: ssd_scan_torch_chunked, SSD_STEP: ssd_step_torch, CAUSAL_CONV1D: causal_conv1d_torch,
             STREAM_DECODER: stream_decoder_torch_fused}
_warned = False


def get_kernel(op: str, device_type: str, overrides: dict[str, Callable[..., Any]] | None = None):
    """The callable for ``op`` on ``device_type``: an explicit override (tests) first, else the
    project's kernel registry (:func:`mamba4net.core.kernels.resolve_kernel`, which honours
    ``runtime.kernels`` and caches its choice)."""
    if overrides and op in overrides:
        return overrides[op]
    try:
        from mamba4net.core.kernels import resolve_kernel
    except ImportError as exc:  # the engine is absent (a bare checkout of this plugin)
        global _warned
        if not _warned:
            log.warning("kernel registry unavailable (%s); using this plugin's PyTorch kernels", exc)
            _warned = True
        return _FALLBACK[op]()
    return resolve_kernel(op, device_type)
