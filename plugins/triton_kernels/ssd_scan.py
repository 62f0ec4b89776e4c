"""SSD (Mamba-2) chunked scan in Triton: a fused forward and a fused backward kernel.

Same op and semantics as :func:`mamba4net.plugins.hybrid_mamba.ssd.ssd_scan_chunked` (its readable
twin is ``ssd_scan_ref`` there): per batch b, head h (of group g) and time t::

    S_t = exp(dt_t * A) * S_{t-1} + dt_t * x_t B_t^T          S: (P, N)
    y_t = S_t C_t + D * x_t

One program per (batch, head) walks the chunks of Q steps in order, keeping the (P, N) state in
registers. Inside a chunk (cs = running sum of a = dt * A, L_ij = exp(cs_i - cs_j) for j <= i)::

    y     = ((C B^T) * L * dt_j) x  +  exp(cs)_i * C S0^T  +  D x        (Q, P)
    S_end = exp(cs_last) S0  +  (x * exp(cs_last - cs) dt)^T B          (P, N)

The backward kernel walks the chunks in reverse with dS (the gradient of the state at a chunk's end)
and the start states the forward saved (b, h, chunks, P, N); the derivation is written beside each
line. Padded steps (past the sequence end) load dt = x = B = C = 0, so they change nothing.

All arithmetic in float32 (``tl.dot`` in IEEE precision, so GPU results match the reference);
outputs are cast to the input dtypes by the wrapper. Never compiled here (no GPU in CI): tests run it
under ``TRITON_INTERPRET=1``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _ssd_fwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, s0_ptr,  # inputs
    y_ptr, st_ptr, fin_ptr,  # outputs: y (b, l, h, p), start states (b, h, c, p, n), final (b, h, p, n)
    L, H, HG, P, N, NCHUNKS,
    sx_b, sx_l, sx_h, sdt_b, sdt_l, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    HAS_S0: tl.constexpr, Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid // H
    h = pid % H
    g = h // HG
    oq = tl.arange(0, Q)
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    mp = op < P
    mn = on < N
    A = tl.load(A_ptr + h).to(tl.float32)
    Dh = tl.load(D_ptr + h * P + op, mask=mp, other=0.0).to(tl.float32)  # (BP,)
    pn = op[:, None] * N + on[None, :]  # offsets into a contiguous (P, N) state
    mpn = mp[:, None] & mn[None, :]
    if HAS_S0:
        state = tl.load(s0_ptr + pid * P * N + pn, mask=mpn, other=0.0).to(tl.float32)
    else:
        state = tl.zeros((BP, BN), dtype=tl.float32)
    causal = oq[:, None] >= oq[None, :]  # (Q, Q): [i, j] = j <= i
    for c in range(NCHUNKS):
        t = c * Q + oq
        mt = t < L
        x = tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + op[None, :],
                    mask=mt[:, None] & mp[None, :], other=0.0).to(tl.float32)  # (Q, BP)
        dt = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h, mask=mt, other=0.0).to(tl.float32)  # (Q,)
        Bm = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + g * sB_g + on[None, :],
                     mask=mt[:, None] & mn[None, :], other=0.0).to(tl.float32)  # (Q, BN)
        Cm = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + g * sC_g + on[None, :],
                     mask=mt[:, None] & mn[None, :], other=0.0).to(tl.float32)  # (Q, BN)
        tl.store(st_ptr + (pid * NCHUNKS + c) * P * N + pn, state, mask=mpn)  # state entering chunk c

        a = dt * A
        cs = tl.cumsum(a, 0)  # (Q,)
        cs_last = tl.sum(a, 0)
        # exp only where j <= i (cs_i - cs_j <= 0 there): no overflow above the diagonal
        decay = tl.where(causal, tl.exp(tl.where(causal, cs[:, None] - cs[None, :], 0.0)), 0.0)
        CB = tl.dot(Cm, tl.trans(Bm), input_precision="ieee")  # (Q, Q): C_i . B_j
        scores = CB * decay * dt[None, :]
        y = tl.dot(scores, x, input_precision="ieee")  # intra-chunk (Q, BP)
        y += tl.exp(cs)[:, None] * tl.dot(Cm, tl.trans(state), input_precision="ieee")  # from S0
        y += Dh[None, :] * x
        tl.store(y_ptr + ((b * L + t[:, None]) * H + h) * P + op[None, :], y,
                 mask=mt[:, None] & mp[None, :])

        w = tl.exp(cs_last - cs) * dt  # (Q,): weight of step j in the chunk's end state
        state = tl.exp(cs_last) * state + tl.dot(tl.trans(x * w[:, None]), Bm, input_precision="ieee")
    tl.store(fin_ptr + pid * P * N + pn, state, mask=mpn)


@triton.jit
def _ssd_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, st_ptr, dy_ptr, dfin_ptr,  # inputs
    dx_ptr, ddt_ptr, dB_ptr, dC_ptr, ds0_ptr, dA_ptr, dD_ptr,  # outputs (float32, contiguous)
    L, H, HG, P, N, NCHUNKS,
    sx_b, sx_l, sx_h, sdt_b, sdt_l, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    HAS_DFIN: tl.constexpr, Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):
    # dB, dC are written per head (b, l, h, n) and summed over the heads of a group by the wrapper;
    # dA (b, h) and dD (b, h, p) are per-program partial sums.
    pid = tl.program_id(0)
    b = pid // H
    h = pid % H
    g = h // HG
    oq = tl.arange(0, Q)
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    mp = op < P
    mn = on < N
    A = tl.load(A_ptr + h).to(tl.float32)
    Dh = tl.load(D_ptr + h * P + op, mask=mp, other=0.0).to(tl.float32)
    pn = op[:, None] * N + on[None, :]
    mpn = mp[:, None] & mn[None, :]
    if HAS_DFIN:
        dS = tl.load(dfin_ptr + pid * P * N + pn, mask=mpn, other=0.0).to(tl.float32)
    else:
        dS = tl.zeros((BP, BN), dtype=tl.float32)  # dLoss/dS at the end of the current chunk
    dA_acc = tl.zeros((Q,), dtype=tl.float32)
    dD_acc = tl.zeros((BP,), dtype=tl.float32)
    causal = oq[:, None] >= oq[None, :]
    for ci in range(NCHUNKS):
        c = NCHUNKS - 1 - ci
        t = c * Q + oq
        mt = t < L
        mtp = mt[:, None] & mp[None, :]
        mtn = mt[:, None] & mn[None, :]
        x = tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + op[None, :], mask=mtp, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h, mask=mt, other=0.0).to(tl.float32)
        Bm = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + g * sB_g + on[None, :], mask=mtn, other=0.0).to(tl.float32)
        Cm = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + g * sC_g + on[None, :], mask=mtn, other=0.0).to(tl.float32)
        yoff = ((b * L + t[:, None]) * H + h) * P + op[None, :]  # (b, l, h, p) contiguous
        dy = tl.load(dy_ptr + yoff, mask=mtp, other=0.0).to(tl.float32)  # (Q, BP)
        S0 = tl.load(st_ptr + (pid * NCHUNKS + c) * P * N + pn, mask=mpn, other=0.0)  # (BP, BN)

        a = dt * A
        cs = tl.cumsum(a, 0)
        cs_last = tl.sum(a, 0)
        e_cs = tl.exp(cs)  # (Q,)
        w = tl.exp(cs_last - cs) * dt  # (Q,)
        decay = tl.where(causal, tl.exp(tl.where(causal, cs[:, None] - cs[None, :], 0.0)), 0.0)
        CB = tl.dot(Cm, tl.trans(Bm), input_precision="ieee")  # (Q, Q)
        DYX = tl.dot(dy, tl.trans(x), input_precision="ieee")  # (Q, Q): dy_i . x_j
        M = decay * dt[None, :]  # (Q, Q): L_ij dt_j
        dBx = tl.dot(Bm, tl.trans(dS), input_precision="ieee")  # (Q, BP): row j = dS B_j
        CS0 = tl.dot(Cm, tl.trans(S0), input_precision="ieee")  # (Q, BP): row i = S0 C_i

        # y_i = sum_j CB_ij M_ij x_j + e_cs_i S0 C_i + D x_i ;  S_end = e^cs_last S0 + sum_j w_j x_j B_j^T
        dx = tl.dot(tl.trans(CB * M), dy, input_precision="ieee") + w[:, None] * dBx + Dh[None, :] * dy
        dCB = DYX * M  # dLoss/dCB_ij
        dC = tl.dot(dCB, Bm, input_precision="ieee") + e_cs[:, None] * tl.dot(dy, S0, input_precision="ieee")
        dB = tl.dot(tl.trans(dCB), Cm, input_precision="ieee") + w[:, None] * tl.dot(x, dS, input_precision="ieee")
        r = tl.sum(x * dBx, 1)  # (Q,): x_j . (dS B_j)
        Z = CB * decay * DYX  # (Q, Q): d/d(dt_j) of the intra term, before summing over i
        ddt = tl.sum(Z, 0) + tl.exp(cs_last - cs) * r
        # gradient with respect to the running sums cs (then to a = dt A by a reverse cumsum)
        Zd = Z * dt[None, :]  # dLoss/dlog L_ij
        dcs = tl.sum(Zd, 1) - tl.sum(Zd, 0) + e_cs * tl.sum(dy * CS0, 1) - w * r
        dcs_last = tl.sum(w * r, 0) + tl.exp(cs_last) * tl.sum(tl.sum(dS * S0, 1), 0)
        dcs += tl.where(oq == Q - 1, dcs_last, 0.0)
        da = tl.sum(dcs, 0) - tl.cumsum(dcs, 0) + dcs  # da_k = sum_{i >= k} dcs_i
        ddt += da * A
        dA_acc += da * dt
        dD_acc += tl.sum(dy * x, 0)

        tl.store(dx_ptr + yoff, dx, mask=mtp)
        tl.store(ddt_ptr + (b * L + t) * H + h, ddt, mask=mt)
        noff = ((b * L + t[:, None]) * H + h) * N + on[None, :]  # (b, l, h, n) contiguous
        tl.store(dB_ptr + noff, dB, mask=mtn)
        tl.store(dC_ptr + noff, dC, mask=mtn)
        dS = tl.exp(cs_last) * dS + tl.dot(tl.trans(dy * e_cs[:, None]), Cm, input_precision="ieee")
    tl.store(ds0_ptr + pid * P * N + pn, dS, mask=mpn)
    tl.store(dA_ptr + pid, tl.sum(dA_acc, 0))
    tl.store(dD_ptr + pid * P + op, dD_acc, mask=mp)


def _block(n: int) -> int:
    """Power-of-two tile size >= n and >= 16 (``tl.dot`` needs 16 on GPUs)."""
    return max(16, triton.next_power_of_2(n))


def _chunk_tile(chunk_size: int) -> int:
    """The kernel's chunk length: a power of two in [16, 128]. The result does not depend on it."""
    return min(128, _block(chunk_size))


class SSDScanTriton(torch.autograd.Function):
    """Autograd wrapper of the two kernels. Inputs: x (b,l,h,p), dt (b,l,h), A (h,), B/C (b,l,g,n),
    D (h, p) float32, s0 (b,h,p,n) or None. Returns y (b,l,h,p) in x.dtype, final (b,h,p,n) fp32."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, s0, chunk_size: int):
        b, l, h, p = x.shape
        g, n = B.shape[2], B.shape[3]
        x, dt, B, C = (t.contiguous() if t.stride(-1) != 1 else t for t in (x, dt, B, C))
        q = _chunk_tile(chunk_size)
        nchunks = max(1, triton.cdiv(l, q))
        f32 = torch.float32
        y = torch.empty(b, l, h, p, device=x.device, dtype=f32)
        starts = torch.empty(b, h, nchunks, p, n, device=x.device, dtype=f32)
        final = torch.empty(b, h, p, n, device=x.device, dtype=f32)
        s0c = s0.to(f32).contiguous() if s0 is not None else final  # dummy pointer when absent
        A32, D32 = A.to(f32).contiguous(), D.to(f32).contiguous()
        _ssd_fwd_kernel[(b * h,)](
            x, dt, A32, B, C, D32, s0c, y, starts, final,
            l, h, h // g, p, n, nchunks,
            x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1),
            B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
            HAS_S0=s0 is not None, Q=q, BP=_block(p), BN=_block(n),
        )
        ctx.save_for_backward(x, dt, A32, B, C, D32, starts)
        ctx.meta = (q, nchunks, s0 is not None, s0.dtype if s0 is not None else None, A.dtype, D.dtype)
        return y.to(x.dtype), final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, dt, A32, B, C, D32, starts = ctx.saved_tensors
        q, nchunks, has_s0, s0_dtype, A_dtype, D_dtype = ctx.meta
        b, l, h, p = x.shape
        g, n = B.shape[2], B.shape[3]
        f32 = torch.float32
        dy = torch.zeros_like(x, dtype=f32) if dy is None else dy.to(f32).contiguous()
        dx = torch.empty(b, l, h, p, device=x.device, dtype=f32)
        ddt = torch.empty(b, l, h, device=x.device, dtype=f32)
        dBh = torch.empty(b, l, h, n, device=x.device, dtype=f32)
        dCh = torch.empty(b, l, h, n, device=x.device, dtype=f32)
        ds0 = torch.empty(b, h, p, n, device=x.device, dtype=f32)
        dA = torch.empty(b, h, device=x.device, dtype=f32)
        dD = torch.empty(b, h, p, device=x.device, dtype=f32)
        dfin = dfinal.to(f32).contiguous() if dfinal is not None else ds0  # dummy when absent
        _ssd_bwd_kernel[(b * h,)](
            x, dt, A32, B, C, D32, starts, dy, dfin,
            dx, ddt, dBh, dCh, ds0, dA, dD,
            l, h, h // g, p, n, nchunks,
            x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1),
            B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
            HAS_DFIN=dfinal is not None, Q=q, BP=_block(p), BN=_block(n),
        )
        dB = dBh.view(b, l, g, h // g, n).sum(3)  # heads of a group share B
        dC = dCh.view(b, l, g, h // g, n).sum(3)
        return (
            dx.to(x.dtype), ddt.to(dt.dtype), dA.sum(0).to(A_dtype), dB.to(B.dtype), dC.to(C.dtype),
            dD.sum(0).to(D_dtype), ds0.to(s0_dtype) if has_s0 else None, None,
        )


def ssd_scan_triton(
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
    """The ``ssd_scan`` op (signature of ``ssd_scan_chunked``) on the Triton kernels, with autograd.

    ``chunk_size`` is rounded up to a power of two in [16, 128] for the kernel's tiles; the result
    does not depend on it beyond rounding. D may be (h,) or (h, p); the state comes back in float32.
    """
    h, p = x.shape[2], x.shape[3]
    if D is None:
        Dhp = x.new_zeros(h, p, dtype=torch.float32)
    else:
        Dhp = (D[:, None] if D.dim() == 1 else D).expand(h, p)  # its gradient sums back over p
    y, final = SSDScanTriton.apply(x, dt, A, B, C, Dhp, initial_states, chunk_size)
    return (y, final) if return_final_states else y
