"""State-space duality (SSD, Mamba-2) scan in plain PyTorch: a chunked kernel, its reference, a step.

The recurrence, per batch b, head h (of group g = h // (nheads / ngroups)) and time t::

    S_t = exp(dt_t * A) * S_{t-1} + dt_t * x_t B_t^T          S: (headdim P, d_state N)
    y_t = S_t C_t + D * x_t

Semantics match mamba_ssm's ``mamba_chunk_scan_combined(..., dt_softplus=False)``: ``dt`` arrives
already as ``softplus(dt_raw + dt_bias)`` (clamped by the caller), ``A`` is negative. Every op
computes in float32 (float64 for float64 inputs) and returns ``y`` in ``x.dtype``; states come back
in that compute dtype.

Shapes: x (b, l, h, p), dt (b, l, h), A (h,), B/C (b, l, g, n), D (h,) or (h, p),
initial_states / final_states (b, h, p, n).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _compute_dtype(x: Tensor) -> torch.dtype:
    """float32 for half/bfloat16/float32 inputs, float64 for float64 (e.g. under gradcheck)."""
    return torch.promote_types(x.dtype, torch.float32)


def _needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd will record this call (in-place shortcuts are only safe when it won't)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _d_term(D: Tensor, x: Tensor) -> Tensor:
    """``D * x`` for D of shape (h,) or (h, p) and x of shape (..., h, p)."""
    return x * (D[:, None] if D.dim() == 1 else D).to(x.dtype)


# Largest (heads x steps x chunk) block of intra-chunk scores computed at once: 2**19 floats = 2 MiB,
# so that the (h, Q, Q) decay/score tensors of one slab stay in the CPU's cache. Measured at the VP
# student's shapes (h=16, P=N=32, 1 thread, L=8192): about 2x faster than one block of 8192 steps.
SLAB_ELEMENTS = 2**19


def ssd_scan_chunked(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None = None,
    initial_states: Tensor | None = None,
    return_final_states: bool = False,
    *,
    slab_steps: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked SSD: the quadratic (attention-like) form inside each chunk of Q = chunk_size steps,
    a linear recurrence of the (N, P) states across chunks. O(l * Q * (N + P)) work per head, all of
    it in batched matmuls; the only Python loop runs over the l / Q chunk boundaries.

    Long sequences are cut into slabs of ``slab_steps`` steps (a multiple of Q; by default sized by
    ``SLAB_ELEMENTS``) scanned one after the other, each starting from the previous slab's final
    state: the same arithmetic, with a working set that fits in cache."""
    q = chunk_size
    if slab_steps is None:
        slab_steps = SLAB_ELEMENTS // (x.shape[2] * q)
    slab = max(q, slab_steps // q * q)
    l = x.shape[1]
    if l <= slab:
        return _ssd_scan_slab(x, dt, A, B, C, q, D, initial_states, return_final_states)
    ys, state = [], initial_states
    for s in range(0, l, slab):
        e = min(l, s + slab)
        y, state = _ssd_scan_slab(x[:, s:e], dt[:, s:e], A, B[:, s:e], C[:, s:e], q, D, state, True)
        ys.append(y)  # (b, e - s, h, p)
    y = torch.cat(ys, dim=1)  # (b, l, h, p)
    return (y, state) if return_final_states else y


def _ssd_scan_slab(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None,
    initial_states: Tensor | None,
    return_final_states: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    """``ssd_scan_chunked`` on one slab, all chunks at once.

    Written for CPU memory traffic: tensors stay in the time-major layout they arrive in wherever a
    matmul can read them that way, and elementwise steps are fused (addcmul, in-place) where autograd
    allows."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = h // g  # heads per group: head i reads B/C group i // hg
    q = chunk_size
    out_dtype, ct = x.dtype, _compute_dtype(x)

    # Pad the time axis to a whole number of chunks. A padded step has dt = 0: no decay, no input,
    # so it leaves the state untouched and final_states stays exact.
    pad = (-l) % q
    xf, dtf, Bf, Cf = (t.to(ct) for t in (x, dt, B, C))
    if pad:
        xf = F.pad(xf, (0, 0, 0, 0, 0, pad))
        dtf = F.pad(dtf, (0, 0, 0, pad))
        Bf = F.pad(Bf, (0, 0, 0, 0, 0, pad))
        Cf = F.pad(Cf, (0, 0, 0, 0, 0, pad))
    c = (l + pad) // q

    # Log-decays a = dt * A <= 0 and their running sums inside each chunk.
    dt_t = dtf.view(b, c, q, h)  # time-major
    a_cs_t = (dt_t * A.to(ct)).cumsum(2)  # (b, c, q, h): sum_{k <= i} a_k
    a_cs = a_cs_t.transpose(2, 3).contiguous()  # (b, c, h, q): head-major copy (small)
    B_c = Bf.view(b, c, q, g, n).transpose(2, 3)  # (b, c, g, q, n) view
    C_c = Cf.view(b, c, q, g, n).transpose(2, 3)  # (b, c, g, q, n) view

    # 1. Intra-chunk (diagonal blocks):
    #    y_i = sum_{j <= i} (C_i . B_j) exp(a_cs_i - a_cs_j) dt_j x_j  (+ D x_i on the diagonal)
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    decay = a_cs[..., :, None] - a_cs[..., None, :]  # (b, c, h, q, q): [i, j]
    CB = C_c @ B_c.transpose(-1, -2)  # (b, c, g, q, q): [i, j] = C_i . B_j, shared by hg heads
    if _needs_grad(x, dt, A, B, C, D, initial_states):
        decay = decay.masked_fill_(~causal, -torch.inf).exp_()  # 0 above the diagonal
        scores = decay.view(b, c, g, hg, q, q) * CB[:, :, :, None]  # (b, c, g, hg, q, q)
    else:  # inference: in place, and clamp + multiply is cheaper than a broadcast masked_fill
        decay = decay.clamp_max_(0.0).exp_().mul_(causal.to(ct))  # 0 above the diagonal
        scores = decay.view(b, c, g, hg, q, q).mul_(CB[:, :, :, None])  # (b, c, g, hg, q, q)
    scores.mul_(dt_t.transpose(2, 3).reshape(b, c, g, hg, 1, q))  # * dt_j
    if D is not None and D.dim() == 1:  # the skip term D x_i rides on the diagonal
        scores.diagonal(dim1=-2, dim2=-1).add_(D.to(ct).view(g, hg, 1))
    x_h = xf.view(b, c, q, g, hg, p).permute(0, 1, 3, 4, 2, 5)  # (b, c, g, hg, q, p) view
    y_diag = scores @ x_h  # (b, c, g, hg, q, p)

    # 2. Each chunk's own contribution to the state at its end, as (N, hg*P) per group so that one
    #    matmul serves all heads of a group: s_c = sum_j B_j^T exp(a_cs_last - a_cs_j) dt_j x_j
    w = torch.exp(a_cs_t[:, :, -1:] - a_cs_t) * dt_t  # (b, c, q, h)
    xw = xf.view(b, c, q, h, p) * w[..., None]  # (b, c, q, h, p)
    xw = xw.view(b, c, q, g, hg * p).transpose(2, 3)  # (b, c, g, q, hg*p) view
    chunk_states = (B_c.transpose(-1, -2) @ xw).view(b, c, g, n, hg, p)  # (b, c, g, n, hg, p)

    # 3. Inter-chunk recurrence: S_{k+1} = exp(a_cs_last[k]) S_k + s_k.
    chunk_decay = torch.exp(a_cs[..., -1]).view(b, c, g, 1, hg, 1)  # (b, c, g, 1, hg, 1)
    if initial_states is None:
        state = x.new_zeros((b, g, n, hg, p), dtype=ct)
    else:  # (b, h, p, n) -> (b, g, n, hg, p)
        state = initial_states.to(ct).view(b, g, hg, p, n).permute(0, 1, 4, 2, 3)
    starts = []
    # unbind, not [:, k]: the backward of c selects would zero-fill c full-size gradients
    for s_k, d_k in zip(chunk_states.unbind(1), chunk_decay.unbind(1)):
        starts.append(state)
        state = torch.addcmul(s_k, state, d_k)
    start_states = torch.stack(starts, dim=1)  # (b, c, g, n, hg, p): state entering each chunk

    # 4. Off-diagonal blocks: y_i += exp(a_cs_i) * C_i . S_start, added in the time-major layout.
    y_off = C_c @ start_states.view(b, c, g, n, hg * p)  # (b, c, g, q, hg*p)
    y_off = y_off.view(b, c, g, q, hg, p).permute(0, 1, 3, 2, 4, 5)  # (b, c, q, g, hg, p) view
    y = torch.addcmul(
        y_diag.permute(0, 1, 4, 2, 3, 5), y_off, torch.exp(a_cs_t).view(b, c, q, g, hg, 1)
    )  # (b, c, q, g, hg, p)

    y = y.reshape(b, c * q, h, p)[:, :l]  # (b, l, h, p)
    if D is not None and D.dim() == 2:
        y = y + _d_term(D, xf[:, :l])
    y = y.to(out_dtype)
    if return_final_states:
        final = state.permute(0, 1, 3, 4, 2).reshape(b, h, p, n)  # (b, g, n, hg, p) -> (b, h, p, n)
        return y, final
    return y


def ssd_scan_ref(
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
    """The recurrence written out one time step at a time (``chunk_size`` is ignored)."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    ct = _compute_dtype(x)
    xf, dtf, Af = x.to(ct), dt.to(ct), A.to(ct)
    Bh = B.to(ct).repeat_interleave(h // g, dim=2)  # (b, l, h, n): head h reads group h // (h/g)
    Ch = C.to(ct).repeat_interleave(h // g, dim=2)  # (b, l, h, n)
    if initial_states is None:
        state = x.new_zeros((b, h, p, n), dtype=ct)
    else:
        state = initial_states.to(ct)
    ys = []
    for t in range(l):
        decay = torch.exp(dtf[:, t] * Af)  # (b, h)
        inp = (dtf[:, t, :, None] * xf[:, t])[..., None] * Bh[:, t, :, None, :]  # (b, h, p, n)
        state = state * decay[:, :, None, None] + inp
        y_t = (state * Ch[:, t, :, None, :]).sum(-1)  # (b, h, p)
        if D is not None:
            y_t = y_t + _d_term(D, xf[:, t])
        ys.append(y_t)
    y = (torch.stack(ys, dim=1) if ys else xf.new_zeros((b, 0, h, p))).to(x.dtype)  # (b, l, h, p)
    return (y, state) if return_final_states else y


def ssd_step(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """One token: state (b, h, p, n), x (b, h, p), dt (b, h), B/C (b, g, n) -> (y (b, h, p), state).

    Functional: returns a new state tensor (in ``state.dtype``) and never writes into ``state``.
    """
    b, h, p = x.shape
    g = B.shape[1]
    ct = torch.promote_types(_compute_dtype(x), state.dtype)
    xf, dtf = x.to(ct), dt.to(ct)
    Bh = B.to(ct).repeat_interleave(h // g, dim=1)  # (b, h, n)
    Ch = C.to(ct).repeat_interleave(h // g, dim=1)  # (b, h, n)
    decay = torch.exp(dtf * A.to(ct))  # (b, h)
    inp = (dtf[:, :, None] * xf)[..., None] * Bh[:, :, None, :]  # dt x B^T: (b, h, p, n)
    new = state.to(ct) * decay[:, :, None, None] + inp
    y = (new @ Ch[..., None]).squeeze(-1)  # (b, h, p, n) @ (b, h, n, 1) -> (b, h, p)
    if D is not None:
        y = y + _d_term(D, xf)
    return y.to(x.dtype), new.to(state.dtype)
