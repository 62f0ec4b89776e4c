"""SSD (Mamba-2) chunked scan in Triton: a fused forward and a fused backward kernel.

Same op and semantics as :func:`mamba4net.plugins.hybrid_mamba.ssd.ssd_scan_chunked` (its readable
twin is ``ssd_scan_ref`` there): per batch b, head h (of group g) and time t::

    S_t = exp(dt_t * A) * S_{t-1} + dt_t * x_t B_t^T          S: (P, N)
    y_t = S_t C_t + D * x_t

The sequence is cut into chunks of Q steps. Inside a chunk (cs = running sum of a = dt * A,
L_ij = exp(cs_i - cs_j) for j <= i, S0 = the state entering the chunk)::

    y     = ((C B^T) * L * dt_j) x  +  exp(cs)_i * C S0^T  +  D x        (Q, P)
    S_end = exp(cs_last) S0  +  (x * exp(cs_last - cs) dt)^T B          (P, N)

Forward, three launches: every chunk's own end state (the second term of S_end; one program per
batch, head and chunk), then a short sequential pass per (batch, head) that turns them into the
states entering each chunk, then every chunk's outputs (one program per batch, head and chunk).
The backward mirrors it: each chunk's contribution to dS0, a reverse pass giving the gradient of the
state leaving each chunk, then all gradients chunk by chunk (the derivation is written beside each
line). Padded steps (past the sequence end) load dt = x = B = C = 0, so they change nothing.

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
def _load_chunk(x_ptr, dt_ptr, B_ptr, C_ptr, b, h, g, c, L,
                sx_b, sx_l, sx_h, sdt_b, sdt_l, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g, P, N,
                Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr):
    """One chunk's x (Q, BP), dt (Q,), B and C (Q, BN) in float32; zeros past the sequence end."""
    oq = tl.arange(0, Q)
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    t = c * Q + oq
    mt = t < L
    mtp = mt[:, None] & (op < P)[None, :]
    mtn = mt[:, None] & (on < N)[None, :]
    x = tl.load(x_ptr + b * sx_b + t[:, None] * sx_l + h * sx_h + op[None, :], mask=mtp, other=0.0)
    dt = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h, mask=mt, other=0.0)
    Bm = tl.load(B_ptr + b * sB_b + t[:, None] * sB_l + g * sB_g + on[None, :], mask=mtn, other=0.0)
    Cm = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + g * sC_g + on[None, :], mask=mtn, other=0.0)
    return x.to(tl.float32), dt.to(tl.float32), Bm.to(tl.float32), Cm.to(tl.float32)


@triton.jit
def _decay_matrix(cs, Q: tl.constexpr):
    """L_ij = exp(cs_i - cs_j) for j <= i, else 0 (the exponent is taken only where it is <= 0)."""
    oq = tl.arange(0, Q)
    causal = oq[:, None] >= oq[None, :]
    return tl.where(causal, tl.exp(tl.where(causal, cs[:, None] - cs[None, :], 0.0)), 0.0)


# --- forward: 1. each chunk's own end state, 2. states passed across chunks, 3. outputs ----------
@triton.jit
def _chunk_state_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, s_ptr, cslast_ptr,
    L, H, HG, P, N, NCHUNKS,
    sx_b, sx_l, sx_h, sdt_b, sdt_l, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):
    # grid (b * h, chunks): s_c = sum_j exp(cs_last - cs_j) dt_j x_j B_j^T  -> (b, h, c, P, N)
    pid = tl.program_id(0)
    c = tl.program_id(1)
    b = pid // H
    h = pid % H
    x, dt, Bm, Cm = _load_chunk(x_ptr, dt_ptr, B_ptr, C_ptr, b, h, h // HG, c, L,
                                sx_b, sx_l, sx_h, sdt_b, sdt_l, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
                                P, N, Q, BP, BN)
    a = dt * tl.load(A_ptr + h).to(tl.float32)
    cs = tl.cumsum(a, 0)
    cs_last = tl.sum(a, 0)
    w = tl.exp(cs_last - cs) * dt  # (Q,)
    s = tl.dot(tl.trans(x * w[:, None]), Bm, input_precision="ieee")  # (BP, BN)
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    idx = pid * NCHUNKS + c
    tl.store(s_ptr + idx * P * N + op[:, None] * N + on[None, :], s,
             mask=(op < P)[:, None] & (on < N)[None, :])
    tl.store(cslast_ptr + idx, cs_last)


@triton.jit
def _state_pass_kernel(
    contrib_ptr, cslast_ptr, init_ptr, out_ptr, final_ptr, P, N, NCHUNKS,
    HAS_INIT: tl.constexpr, REVERSE: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):
    # grid (b * h,). Forward: out[c] = state entering chunk c; S <- exp(cs_last[c]) S + s_c.
    # Backward (REVERSE): out[c] = dLoss/d(state leaving chunk c); dS <- exp(cs_last[c]) dS + u_c.
    pid = tl.program_id(0)
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    pn = op[:, None] * N + on[None, :]
    mpn = (op < P)[:, None] & (on < N)[None, :]
    if HAS_INIT:
        S = tl.load(init_ptr + pid * P * N + pn, mask=mpn, other=0.0).to(tl.float32)
    else:
        S = tl.zeros((BP, BN), dtype=tl.float32)
    for k in range(NCHUNKS):
        if REVERSE:
            c = NCHUNKS - 1 - k
        else:
            c = k
        idx = pid * NCHUNKS + c
        tl.store(out_ptr + idx * P * N + pn, S, mask=mpn)
        contrib = tl.load(contrib_ptr + idx * P * N + pn, mask=mpn, other=0.0)
        S = tl.exp(tl.load(cslast_ptr + idx)) * S + contrib
    tl.store(final_ptr + pid * P * N + pn, S, mask=mpn)


@triton.jit
def _chunk_scan_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, st_ptr, y_ptr,
    L, H, HG, P, N, NCHUNKS,
    sx_b, sx_l, sx_h, sdt_b, sdt_l, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):
    # grid (b * h, chunks): y = ((C B^T) * L * dt_j) x + exp(cs)_i C S0^T + D x  -> (b, l, h, p)
    pid = tl.program_id(0)
    c = tl.program_id(1)
    b = pid // H
    h = pid % H
    x, dt, Bm, Cm = _load_chunk(x_ptr, dt_ptr, B_ptr, C_ptr, b, h, h // HG, c, L,
                                sx_b, sx_l, sx_h, sdt_b, sdt_l, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
                                P, N, Q, BP, BN)
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    mp = op < P
    S0 = tl.load(st_ptr + (pid * NCHUNKS + c) * P * N + op[:, None] * N + on[None, :],
                 mask=mp[:, None] & (on < N)[None, :], other=0.0)  # (BP, BN)
    cs = tl.cumsum(dt * tl.load(A_ptr + h).to(tl.float32), 0)
    scores = tl.dot(Cm, tl.trans(Bm), input_precision="ieee") * _decay_matrix(cs, Q) * dt[None, :]
    y = tl.dot(scores, x, input_precision="ieee")  # intra-chunk (Q, BP)
    y += tl.exp(cs)[:, None] * tl.dot(Cm, tl.trans(S0), input_precision="ieee")  # from the start state
    y += tl.load(D_ptr + h * P + op, mask=mp, other=0.0).to(tl.float32)[None, :] * x
    t = c * Q + tl.arange(0, Q)
    tl.store(y_ptr + ((b * L + t[:, None]) * H + h) * P + op[None, :], y,
             mask=(t < L)[:, None] & mp[None, :])


# --- backward: 1. each chunk's own contribution to dS, 2. passed backwards, 3. all gradients -------
@triton.jit
def _chunk_dstate_kernel(
    dy_ptr, dt_ptr, A_ptr, C_ptr, u_ptr,
    L, H, HG, P, N, NCHUNKS, sdt_b, sdt_l, sC_b, sC_l, sC_g,
    Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):
    # grid (b * h, chunks): u_c = sum_i exp(cs_i) dy_i C_i^T = dLoss/dS0 through this chunk's y
    pid = tl.program_id(0)
    c = tl.program_id(1)
    b = pid // H
    h = pid % H
    oq = tl.arange(0, Q)
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    t = c * Q + oq
    mt = t < L
    dy = tl.load(dy_ptr + ((b * L + t[:, None]) * H + h) * P + op[None, :],
                 mask=mt[:, None] & (op < P)[None, :], other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * sdt_b + t * sdt_l + h, mask=mt, other=0.0).to(tl.float32)
    Cm = tl.load(C_ptr + b * sC_b + t[:, None] * sC_l + (h // HG) * sC_g + on[None, :],
                 mask=mt[:, None] & (on < N)[None, :], other=0.0).to(tl.float32)
    cs = tl.cumsum(dt * tl.load(A_ptr + h).to(tl.float32), 0)
    u = tl.dot(tl.trans(dy * tl.exp(cs)[:, None]), Cm, input_precision="ieee")  # (BP, BN)
    tl.store(u_ptr + (pid * NCHUNKS + c) * P * N + op[:, None] * N + on[None, :], u,
             mask=(op < P)[:, None] & (on < N)[None, :])


@triton.jit
def _chunk_bwd_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, st_ptr, dS_ptr, dy_ptr,  # inputs
    dx_ptr, ddt_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr,  # outputs (float32, contiguous)
    L, H, HG, P, N, NCHUNKS,
    sx_b, sx_l, sx_h, sdt_b, sdt_l, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
    Q: tl.constexpr, BP: tl.constexpr, BN: tl.constexpr,
):
    # grid (b * h, chunks), given S0 (state entering the chunk) and dS (gradient of the state
    # leaving it). dB, dC are per head (b, l, h, n), summed over a group's heads by the wrapper;
    # dA (b, h, c) and dD (b, h, c, p) are per-chunk partial sums.
    pid = tl.program_id(0)
    c = tl.program_id(1)
    b = pid // H
    h = pid % H
    x, dt, Bm, Cm = _load_chunk(x_ptr, dt_ptr, B_ptr, C_ptr, b, h, h // HG, c, L,
                                sx_b, sx_l, sx_h, sdt_b, sdt_l, sB_b, sB_l, sB_g, sC_b, sC_l, sC_g,
                                P, N, Q, BP, BN)
    oq = tl.arange(0, Q)
    op = tl.arange(0, BP)
    on = tl.arange(0, BN)
    mp = op < P
    t = c * Q + oq
    mt = t < L
    mtp = mt[:, None] & mp[None, :]
    mtn = mt[:, None] & (on < N)[None, :]
    idx = pid * NCHUNKS + c
    pn = op[:, None] * N + on[None, :]
    mpn = mp[:, None] & (on < N)[None, :]
    S0 = tl.load(st_ptr + idx * P * N + pn, mask=mpn, other=0.0)  # (BP, BN)
    dS = tl.load(dS_ptr + idx * P * N + pn, mask=mpn, other=0.0)  # (BP, BN)
    yoff = ((b * L + t[:, None]) * H + h) * P + op[None, :]  # (b, l, h, p) contiguous
    dy = tl.load(dy_ptr + yoff, mask=mtp, other=0.0).to(tl.float32)  # (Q, BP)
    A = tl.load(A_ptr + h).to(tl.float32)
    Dh = tl.load(D_ptr + h * P + op, mask=mp, other=0.0).to(tl.float32)

    a = dt * A
    cs = tl.cumsum(a, 0)
    cs_last = tl.sum(a, 0)
    e_cs = tl.exp(cs)  # (Q,)
    w = tl.exp(cs_last - cs) * dt  # (Q,)
    decay = _decay_matrix(cs, Q)
    CB = tl.dot(Cm, tl.trans(Bm), input_precision="ieee")  # (Q, Q)
    DYX = tl.dot(dy, tl.trans(x), input_precision="ieee")  # (Q, Q): dy_i . x_j
    M = decay * dt[None, :]  # (Q, Q): L_ij dt_j
    dBx = tl.dot(Bm, tl.trans(dS), input_precision="ieee")  # (Q, BP): row j = dS B_j
    CS0 = tl.dot(Cm, tl.trans(S0), input_precision="ieee")  # (Q, BP): row i = S0 C_i

    # y_i = sum_j CB_ij M_ij x_j + e_cs_i S0 C_i + D x_i ;  S_end = e^cs_last S0 + sum_j w_j x_j B_j^T
    dx = tl.dot(tl.trans(CB * M), dy, input_precision="ieee") + w[:, None] * dBx + Dh[None, :] * dy
    dCB = DYX * M  # dLoss/dCB_ij
    dC = tl.dot(dCB, Bm, input_precision="ieee")
    dC += e_cs[:, None] * tl.dot(dy, S0, input_precision="ieee")
    dB = tl.dot(tl.trans(dCB), Cm, input_precision="ieee")
    dB += w[:, None] * tl.dot(x, dS, input_precision="ieee")
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

    tl.store(dx_ptr + yoff, dx, mask=mtp)
    tl.store(ddt_ptr + (b * L + t) * H + h, ddt, mask=mt)
    noff = ((b * L + t[:, None]) * H + h) * N + on[None, :]  # (b, l, h, n) contiguous
    tl.store(dB_ptr + noff, dB, mask=mtn)
    tl.store(dC_ptr + noff, dC, mask=mtn)
    tl.store(dA_ptr + idx, tl.sum(da * dt, 0))
    tl.store(dD_ptr + idx * P + op, tl.sum(dy * x, 0), mask=mp)


def _block(n: int) -> int:
    """Power-of-two tile size >= n and >= 16 (``tl.dot`` needs 16 on GPUs)."""
    return max(16, triton.next_power_of_2(n))


def _chunk_tile(chunk_size: int) -> int:
    """The kernel's chunk length: a power of two in [16, 128]. The result does not depend on it."""
    return min(128, _block(chunk_size))


def _strides(x: Tensor, dt: Tensor, B: Tensor, C: Tensor) -> tuple[int, ...]:
    return (x.stride(0), x.stride(1), x.stride(2), dt.stride(0), dt.stride(1),
            B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2))


class SSDScanTriton(torch.autograd.Function):
    """Autograd wrapper of the kernels. Inputs: x (b,l,h,p), dt (b,l,h), A (h,), B/C (b,l,g,n),
    D (h, p), s0 (b,h,p,n) or None. Returns y (b,l,h,p) in x.dtype, final (b,h,p,n) in float32.

    Launches: chunk states (grid b*h x chunks), state passing (b*h, sequential over chunks, P*N
    per step), chunk outputs (b*h x chunks); the backward mirrors them."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, s0, chunk_size: int):
        b, l, h, p = x.shape
        g, n = B.shape[2], B.shape[3]
        x, dt, B, C = (t.contiguous() if t.stride(-1) != 1 else t for t in (x, dt, B, C))
        q = _chunk_tile(chunk_size)
        nc = max(1, triton.cdiv(l, q))
        f32, dev = torch.float32, x.device
        A32, D32 = A.to(f32).contiguous(), D.to(f32).contiguous()
        dims = (l, h, h // g, p, n, nc)
        tiles = dict(Q=q, BP=_block(p), BN=_block(n))
        strides = _strides(x, dt, B, C)

        chunk_s = torch.empty(b, h, nc, p, n, device=dev, dtype=f32)  # each chunk's own end state
        cs_last = torch.empty(b, h, nc, device=dev, dtype=f32)  # its total log-decay
        _chunk_state_kernel[(b * h, nc)](x, dt, A32, B, C, chunk_s, cs_last, *dims, *strides, **tiles)
        starts = torch.empty_like(chunk_s)  # the state entering each chunk
        final = torch.empty(b, h, p, n, device=dev, dtype=f32)
        s0c = s0.to(f32).contiguous() if s0 is not None else final  # dummy pointer when absent
        _state_pass_kernel[(b * h,)](chunk_s, cs_last, s0c, starts, final, p, n, nc,
                                     HAS_INIT=s0 is not None, REVERSE=False,
                                     BP=tiles["BP"], BN=tiles["BN"])
        y = torch.empty(b, l, h, p, device=dev, dtype=f32)
        _chunk_scan_kernel[(b * h, nc)](x, dt, A32, B, C, D32, starts, y, *dims, *strides, **tiles)

        ctx.save_for_backward(x, dt, A32, B, C, D32, starts, cs_last)
        ctx.meta = (q, nc, s0 is not None, s0.dtype if s0 is not None else None, A.dtype, D.dtype)
        return y.to(x.dtype), final

    @staticmethod
    def backward(ctx, dy, dfinal):
        x, dt, A32, B, C, D32, starts, cs_last = ctx.saved_tensors
        q, nc, has_s0, s0_dtype, A_dtype, D_dtype = ctx.meta
        b, l, h, p = x.shape
        g, n = B.shape[2], B.shape[3]
        f32, dev = torch.float32, x.device
        dims = (l, h, h // g, p, n, nc)
        tiles = dict(Q=q, BP=_block(p), BN=_block(n))
        strides = _strides(x, dt, B, C)
        dy = torch.zeros_like(x, dtype=f32) if dy is None else dy.to(f32).contiguous()

        u = torch.empty(b, h, nc, p, n, device=dev, dtype=f32)  # dLoss/dS0 through each chunk's y
        _chunk_dstate_kernel[(b * h, nc)](dy, dt, A32, C, u, *dims, dt.stride(0), dt.stride(1),
                                          C.stride(0), C.stride(1), C.stride(2), **tiles)
        dS_end = torch.empty_like(u)  # dLoss/d(state leaving each chunk)
        ds0 = torch.empty(b, h, p, n, device=dev, dtype=f32)
        dfin = dfinal.to(f32).contiguous() if dfinal is not None else ds0  # dummy when absent
        _state_pass_kernel[(b * h,)](u, cs_last, dfin, dS_end, ds0, p, n, nc,
                                     HAS_INIT=dfinal is not None, REVERSE=True,
                                     BP=tiles["BP"], BN=tiles["BN"])
        dx = torch.empty(b, l, h, p, device=dev, dtype=f32)
        ddt = torch.empty(b, l, h, device=dev, dtype=f32)
        dBh = torch.empty(b, l, h, n, device=dev, dtype=f32)
        dCh = torch.empty(b, l, h, n, device=dev, dtype=f32)
        dA = torch.empty(b, h, nc, device=dev, dtype=f32)
        dD = torch.empty(b, h, nc, p, device=dev, dtype=f32)
        _chunk_bwd_kernel[(b * h, nc)](x, dt, A32, B, C, D32, starts, dS_end, dy,
                                       dx, ddt, dBh, dCh, dA, dD, *dims, *strides, **tiles)
        dB = dBh.view(b, l, g, h // g, n).sum(3)  # heads of a group share B
        dC = dCh.view(b, l, g, h // g, n).sum(3)
        return (
            dx.to(x.dtype), ddt.to(dt.dtype), dA.sum((0, 2)).to(A_dtype), dB.to(B.dtype),
            dC.to(C.dtype), dD.sum((0, 2)).to(D_dtype), ds0.to(s0_dtype) if has_s0 else None, None,
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
