"""One-token SSD state update in Triton (streaming inference), the ``ssd_step`` op.

Readable twin: :func:`mamba4net.plugins.hybrid_mamba.ssd.ssd_step`. Per batch b and head h::

    S' = exp(dt * A) * S + dt * x B^T        S: (P, N)
    y  = S' C + D * x

One program per (batch, head); the state is read once and written once (to a new tensor: the op is
functional, the caller's state is never modified). Forward only: streaming does not train.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _ssd_step_kernel(
    s_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, y_ptr, out_ptr,
    H, HG, P, N, sx_b, sdt_b, sB_b, sC_b,
    BP: tl.constexpr, BN: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid // H
    h = pid % H
    g = h // HG
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    mp = op < P
    mn = on < N
    pn = op[:, None] * N + on[None, :]
    mpn = mp[:, None] & mn[None, :]
    S = tl.load(s_ptr + pid * P * N + pn, mask=mpn, other=0.0).to(tl.float32)  # (BP, BN)
    x = tl.load(x_ptr + b * sx_b + h * P + op, mask=mp, other=0.0).to(tl.float32)  # (BP,)
    dt = tl.load(dt_ptr + b * sdt_b + h).to(tl.float32)
    A = tl.load(A_ptr + h).to(tl.float32)
    Bv = tl.load(B_ptr + b * sB_b + g * N + on, mask=mn, other=0.0).to(tl.float32)  # (BN,)
    Cv = tl.load(C_ptr + b * sC_b + g * N + on, mask=mn, other=0.0).to(tl.float32)  # (BN,)
    Dv = tl.load(D_ptr + h * P + op, mask=mp, other=0.0).to(tl.float32)  # (BP,)
    S = tl.exp(dt * A) * S + (dt * x)[:, None] * Bv[None, :]
    y = tl.sum(S * Cv[None, :], 1) + Dv * x  # (BP,)
    tl.store(out_ptr + pid * P * N + pn, S, mask=mpn)
    tl.store(y_ptr + pid * P + op, y, mask=mp)


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def ssd_step_triton(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """state (b,h,p,n), x (b,h,p), dt (b,h), A (h,), B/C (b,g,n), D (h,) or (h,p) ->
    (y (b,h,p) in x.dtype, new state in state.dtype)."""
    b, h, p = x.shape
    g, n = B.shape[1], B.shape[2]
    f32 = torch.float32
    x, dt, B, C = (t.contiguous() for t in (x, dt, B, C))
    if D is None:
        Dhp = torch.zeros(h, p, device=x.device, dtype=f32)
    else:
        Dhp = (D[:, None] if D.dim() == 1 else D).expand(h, p).to(f32).contiguous()
    s = state.contiguous()
    y = torch.empty(b, h, p, device=x.device, dtype=f32)
    new = torch.empty(b, h, p, n, device=x.device, dtype=f32)
    _ssd_step_kernel[(b * h,)](
        s, x, dt, A.to(f32).contiguous(), B, C, Dhp, y, new,
        h, h // g, p, n, x.stride(0), dt.stride(0), B.stride(0), C.stride(0),
        BP=_block(p), BN=_block(n),
    )
    return y.to(x.dtype), new.to(state.dtype)
