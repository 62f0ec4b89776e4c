"""``ssd_scan_c``: the ``ssd_scan`` op by this plugin's C recurrence (``ssd_scan.c``), for inference
on the CPU; every other call goes to the chunked PyTorch scan, which it equals to float rounding.

The C kernel serves calls that autograd does not record, on plain CPU tensors of the op's exact
shapes, with float32 ``x``, a head size ``p`` that is a multiple of 16 and ``D`` of shape (h,) (or
none), outside ONNX export, tracing and compilation. It splits the (batch, head) rows between
``torch.get_num_threads()`` threads (ctypes releases the GIL during the call). Anything else
(training, float64 gradient checks, half precision, broadcast or malformed shapes, which the
chunked scan then reports) is scanned by :func:`mamba4net.plugins.hybrid_mamba.ssd.ssd_scan_chunked`.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor

from mamba4net.plugins.hybrid_mamba.ssd import _needs_grad, ssd_scan_chunked  # the scan this one serves beside

from .build import load

_I, _P = ctypes.c_int64, ctypes.c_void_p
_ARGTYPES = [_I] * 5 + [_P, _I, _I, _I, _P, _I, _I, _P, _P, _I, _I, _P, _I, _I, _P, _P, _P, _I, _I]
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}  # by (process id, threads): a forked child has no threads
_pools_lock = threading.Lock()


def library() -> ctypes.CDLL | None:
    """The compiled kernel with its signature declared, or None where it cannot be built."""
    lib = load("ssd_scan")
    if lib is not None and lib.ssd_scan_f32.argtypes is None:  # declared once per loaded library
        lib.ssd_scan_f32.argtypes = _ARGTYPES
        lib.ssd_scan_f32.restype = ctypes.c_int
    return lib


def _plain_cpu(t: Tensor | None) -> bool:
    """A tensor whose data the kernel may read through its pointer: dense, on the CPU, not a
    subclass (a Parameter excepted) or a functorch wrapper."""
    if t is None:
        return True
    wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", lambda _: False)
    return (t.device.type == "cpu" and t.layout == torch.strided and type(t) in (Tensor, torch.nn.Parameter)
            and not wrapped(t))


def _shapes_ok(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
               initial_states: Tensor | None) -> bool:
    """The op's exact shapes (nothing broadcast): the kernel indexes by them without checking."""
    if x.dim() != 4 or B.dim() != 4:
        return False
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    return (
        g >= 1 and h % g == 0 and tuple(dt.shape) == (b, l, h) and tuple(A.shape) == (h,)
        and tuple(B.shape) == tuple(C.shape) == (b, l, g, n)
        and (D is None or tuple(D.shape) == (h,))
        and (initial_states is None or tuple(initial_states.shape) == (b, h, p, n))
    )


def runs_in_c(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
              initial_states: Tensor | None = None) -> bool:
    """Whether :func:`ssd_scan_c` hands these inputs to the C kernel (else to the chunked scan)."""
    tensors = (x, dt, A, B, C, D, initial_states)
    return (
        _shapes_ok(x, dt, A, B, C, D, initial_states) and x.dtype == torch.float32 and x.shape[-1] % 16 == 0
        and all(_plain_cpu(t) for t in tensors)
        and all(t is None or t.is_floating_point() for t in tensors)
        and not _needs_grad(*tensors)
        and not torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing() and not torch.compiler.is_compiling()
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
    if not runs_in_c(x, dt, A, B, C, D, initial_states):
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
        state = torch.empty((b, h, p, n), dtype=torch.float32).copy_(initial_states.detach())
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
        with _pools_lock:
            key = (os.getpid(), threads)
            pool = _pools.get(key) or _pools.setdefault(key, ThreadPoolExecutor(threads, "ssd_scan_c"))
        cuts = [b * h * i // threads for i in range(threads + 1)]
        codes = list(pool.map(rows, cuts[:-1], cuts[1:]))
    if any(codes):
        raise MemoryError(f"ssd_scan_c: the C kernel failed (codes {codes}) for x of shape {tuple(x.shape)}")
    return (y, state) if return_final_states else y
