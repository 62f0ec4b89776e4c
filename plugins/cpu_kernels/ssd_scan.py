"""``ssd_scan_c``: the ``ssd_scan`` op by this plugin's C recurrence (``ssd_scan.c``), for inference
on the CPU; every other call goes to the chunked PyTorch scan, which it equals to float rounding.

The C kernel serves calls that autograd does not record, with float32 ``x``, a head size ``p``
that is a multiple of 16 and ``D`` of shape (h,) (or none), outside ONNX export and compilation.
It splits the (batch, head) rows between ``torch.get_num_threads()`` threads (ctypes releases the
GIL during the call). Anything else (training, float64 gradient checks, half precision, other
shapes) is scanned by :func:`mamba4net.plugins.hybrid_mamba.ssd.ssd_scan_chunked`.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from mamba4net.plugins.hybrid_mamba.ssd import ssd_scan_chunked

from .build import load

_L, _P = ctypes.c_long, ctypes.c_void_p
_ARGTYPES = [_L] * 5 + [_P, _L, _L, _L, _P, _L, _L, _P, _P, _L, _L, _P, _L, _L, _P, _P, _P, _L, _L]
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}  # by (process id, threads): a forked child has no threads


def library() -> ctypes.CDLL | None:
    """The compiled kernel with its signature declared, or None where it cannot be built."""
    lib = load("ssd_scan")
    if lib is not None and lib.ssd_scan_f32.argtypes is None:  # declared once per loaded library
        lib.ssd_scan_f32.argtypes = _ARGTYPES
        lib.ssd_scan_f32.restype = ctypes.c_int
    return lib


def runs_in_c(x: Tensor, D: Tensor | None, *tensors: Tensor | None) -> bool:
    """Whether :func:`ssd_scan_c` hands these inputs to the C kernel (else to the chunked scan)."""
    return (
        x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[-1] % 16 == 0
        and (D is None or D.dim() == 1)
        and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, D, *tensors)))
        and not torch.onnx.is_in_onnx_export() and not torch.compiler.is_compiling()
        and library() is not None
    )


def _inner_contiguous(t: Tensor, dims: int) -> Tensor:
    """``t`` with its last ``dims`` dimensions laid out contiguously (a copy only when they are not)."""
    tail = t.shape[t.dim() - dims:]
    want, step = [], 1
    for size in reversed(tail):
        want.insert(0, step)
        step *= size
    have = t.stride()[t.dim() - dims:]
    return t if all(s == w or n == 1 for s, w, n in zip(have, want, tail)) else t.contiguous()


def ssd_scan_c(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """The ``ssd_scan`` op (signature and shapes: :mod:`mamba4net.plugins.hybrid_mamba.ssd`);
    ``chunk_size`` is used only by the chunked fallback."""
    if not runs_in_c(x, D, dt, A, B, C, initial_states):
        return ssd_scan_chunked(x, dt, A, B, C, chunk_size, D, initial_states, return_final_states)
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    x = _inner_contiguous(x, 1)  # (b, l, h, p): p contiguous, e.g. a view into the mixer's xBC
    dt = _inner_contiguous(dt.float(), 1)  # (b, l, h)
    B, C = _inner_contiguous(B.float(), 2), _inner_contiguous(C.float(), 2)  # (b, l, g, n)
    A = A.detach().float().contiguous()
    D = None if D is None else D.detach().float().contiguous()
    if initial_states is None:
        state = torch.zeros((b, h, p, n), dtype=torch.float32)
    else:  # a fresh copy: the kernel overwrites it with the final state
        state = initial_states.detach().to(torch.float32, copy=True).contiguous()
    y = torch.empty((b, l, h, p), dtype=torch.float32)
    fn = library().ssd_scan_f32

    def rows(first: int, last: int) -> int:
        return fn(l, h, p, g, n, x.data_ptr(), x.stride(0), x.stride(1), x.stride(2),
                  dt.data_ptr(), dt.stride(0), dt.stride(1), A.data_ptr(),
                  B.data_ptr(), B.stride(0), B.stride(1), C.data_ptr(), C.stride(0), C.stride(1),
                  None if D is None else D.data_ptr(), state.data_ptr(), y.data_ptr(), first, last)

    threads = min(torch.get_num_threads(), b * h)
    if threads <= 1:
        codes = [rows(0, b * h)]
    else:  # contiguous ranges of (batch, head) rows, one per thread
        key = (os.getpid(), threads)
        pool = _pools.get(key) or _pools.setdefault(key, ThreadPoolExecutor(threads, "ssd_scan_c"))
        cuts = [b * h * i // threads for i in range(threads + 1)]
        codes = list(pool.map(rows, cuts[:-1], cuts[1:]))
    if any(codes):
        raise MemoryError(f"ssd_scan_c: the C kernel failed (codes {codes}) for x of shape {tuple(x.shape)}")
    return (y, state) if return_final_states else y
