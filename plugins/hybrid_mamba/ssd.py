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


def _in_chunks(x: Tensor, dt: Tensor, B: Tensor, C: Tensor, q: int) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """x, dt, B, C in the compute dtype with the time axis padded to a whole number of chunks of q
    steps, and the number of chunks. A padded step has dt = 0: no decay, no input, so it leaves
    the state untouched and final_states stays exact."""
    pad = (-x.shape[1]) % q
    xf, dtf, Bf, Cf = (t.to(_compute_dtype(x)) for t in (x, dt, B, C))
    if pad:
        xf = F.pad(xf, (0, 0, 0, 0, 0, pad))
        dtf = F.pad(dtf, (0, 0, 0, pad))
        Bf = F.pad(Bf, (0, 0, 0, 0, 0, pad))
        Cf = F.pad(Cf, (0, 0, 0, 0, 0, pad))
    return xf, dtf, Bf, Cf, (x.shape[1] + pad) // q


# Slabs: long sequences are scanned a slab of steps at a time (each slab starts from the previous
# one's final state), so that a slab's working set stays in the CPU's cache: heads x steps x chunk
# = SLAB_ELEMENTS, 2048 steps at the VP student's shapes (measured there, 1 thread: 512 to 4096
# steps are within 10% of each other, 256 is 20% slower).
SLAB_ELEMENTS = 2**20

# The factored form (``_ssd_scan_factored``) uses chunks of at least FACTORED_CHUNK steps: its
# matmul then has K = d_state + chunk, which the CPU's GEMM runs efficiently. Measured at the VP
# student's shapes (h=16, P=N=32, 1 thread, L = 1024 to 8192): 32 is about twice as fast as 64
# (whose longer chunks also send more heads to the masked form) and 1.2x as fast as 16.
FACTORED_CHUNK = 32

# The factored form writes exp(a_i - a_j) = exp(a_i - a_end) * exp(a_end - a_j). In float32 both
# factors and their products stay exact to rounding while the log-decay across a chunk stays below
# DECAY_LIMIT (e**60 ~ 1e26; anything the factors lose to underflow is below 1e-38 * e**60 ~ 1e-12
# in absolute terms). Heads whose decay across some chunk exceeds it are scanned by the masked form.
DECAY_LIMIT = 60.0
SUBNORMAL_LOG = -87.0  # exp() of less is below float32's smallest normal number (1.2e-38)


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
    """Chunked SSD: the quadratic (attention-like) form inside each chunk, a linear recurrence of
    the (N, P) states across chunks. O(l * Q * (N + P)) work per head, nearly all of it in batched
    matmuls; the only Python loop runs over the chunk boundaries.

    Two exact forms of the same arithmetic, which differ only by float rounding:

    * the factored form (:func:`_ssd_scan_factored`), used for every head whose log-decay across a
      chunk stays below ``DECAY_LIMIT``: chunks of ``max(chunk_size, FACTORED_CHUNK)`` steps (at
      most the sequence), and per chunk and B/C group one matmul ``[C | CB] @ [S ; dt x]`` shared by
      all heads of the group (no per-head (Q, Q) matrices);
    * the masked form (:func:`_ssd_scan_slab`), chunks of ``chunk_size``, with the decay between
      every two steps of a chunk computed explicitly (any decay): for the other heads, if any.

    Long sequences are cut into slabs of ``slab_steps`` steps (a multiple of the chunk; by default
    sized by ``SLAB_ELEMENTS``) scanned one after the other, each starting from the previous slab's
    final state: the same arithmetic, with a working set that fits in cache."""
    l, h = x.shape[1], x.shape[2]
    q = max(chunk_size, min(FACTORED_CHUNK, l))
    if slab_steps is None:
        slab_steps = SLAB_ELEMENTS // (h * q)
    slab = max(q, slab_steps // q * q)
    if l <= slab:
        return _ssd_scan_mixed(x, dt, A, B, C, q, chunk_size, D, initial_states, return_final_states)
    ys, state = [], initial_states
    for s in range(0, l, slab):
        e = min(l, s + slab)
        y, state = _ssd_scan_mixed(x[:, s:e], dt[:, s:e], A, B[:, s:e], C[:, s:e], q, chunk_size, D, state, True)
        ys.append(y)  # (b, e - s, h, p)
    y = torch.cat(ys, dim=1)  # (b, l, h, p)
    return (y, state) if return_final_states else y


def _ssd_scan_mixed(x, dt, A, B, C, q, chunk_size, D, initial_states, return_final_states):
    """One slab: the factored form for every head, then the masked form for the heads whose decay
    is too strong for the factored one (their rows of ``y`` replaced; the factored form's final
    state is exact for every head, see ``_ssd_scan_factored``)."""
    y, final, strong = _ssd_scan_factored(x, dt, A, B, C, q, D, initial_states)
    if strong.any():
        heads = strong.nonzero().flatten()  # (k,)
        groups = heads // (x.shape[2] // B.shape[2])  # each of these heads reads its own B/C group
        y_k = _ssd_scan_slab(
            x[:, :, heads], dt[:, :, heads], A[heads], B[:, :, groups], C[:, :, groups], chunk_size,
            None if D is None else D[heads], None if initial_states is None else initial_states[:, heads], False,
        )  # (b, l, k, p)
        y = y.index_copy_(2, heads, y_k) if not _needs_grad(x, dt, A, B, C, D, initial_states) \
            else y.index_copy(2, heads, y_k)
    return (y, final) if return_final_states else y


def _ssd_scan_factored(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    chunk_size: int,
    D: Tensor | None,
    initial_states: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The scan with the intra-chunk decay factored per step, one slab, all chunks at once.
    Returns ``(y, final_states, strong)``: ``strong`` (h,) marks the heads whose log-decay across
    some chunk exceeds ``DECAY_LIMIT``; their ``y`` is not exact (the caller replaces it), their
    final state is.

    With a_cs the running sum of a = dt * A inside a chunk and a_end its value at the chunk's last
    step, the decay between steps j <= i of a chunk is exp(a_cs_i - a_cs_j) = v_i * u_j with
    v_i = exp(a_cs_i - a_end) >= 1 and u_j = exp(a_end - a_cs_j) <= 1. So, per head::

        y_i = v_i * (C_i . S'  +  sum_{j <= i} (C_i . B_j) u_j dt_j x_j)  +  D x_i

    where S' = exp(a_end) * S_start is the state entering the chunk decayed to its end; and the
    chunk's state at its end is S_end = S' + sum_j B_j^T u_j dt_j x_j. The bracket is one matmul
    per chunk and B/C group, ``[C | CB (masked)] (Q, N + Q) @ [S' ; u dt x] (N + Q, heads * P)``,
    shared by the group's heads; only v, u and exp(a_end) depend on the head."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = h // g  # heads per group: head i reads B/C group i // hg
    hp = hg * p
    q = chunk_size
    out_dtype, ct = x.dtype, _compute_dtype(x)
    grad = _needs_grad(x, dt, A, B, C, D, initial_states)

    xf, dtf, Bf, Cf, c = _in_chunks(x, dt, B, C, q)

    # Log-decays: seg_i = a_end - a_cs_i <= 0 (the decay from step i to the chunk's end).
    dt_t = dtf.view(b, c, q, h)  # time-major
    a_cs = (dt_t * A.to(ct)).cumsum(2)  # (b, c, q, h)
    a_end = a_cs[:, :, -1:]  # (b, c, 1, h)
    seg = a_end - a_cs  # (b, c, q, h)
    strong = (seg[:, :, 0] < -DECAY_LIMIT).flatten(0, 1).any(0)  # (h,): seg is smallest at step 0
    # Tiny decays set to 0 (as subnormal floats they would slow every multiplication they enter
    # tenfold): u_j below exp(-DECAY_LIMIT), which only strong heads reach; exp(a_end) below
    # float32's smallest normal exp(SUBNORMAL_LOG), which v_i <= exp(DECAY_LIMIT) scales by at most
    # exp(DECAY_LIMIT + SUBNORMAL_LOG) ~ 1e-12.
    u_dt = (seg.exp() * dt_t).masked_fill_(seg < -DECAY_LIMIT, 0.0)  # (b, c, q, h)
    v = torch.exp(seg.neg().clamp_max_(DECAY_LIMIT))  # (b, c, q, h): v_i, clamped for strong heads
    d = torch.exp(a_end).masked_fill(a_end < SUBNORMAL_LOG, 0.0)  # (b, c, 1, h)
    d = d.view(b, c, g, hg, 1).expand(b, c, g, hg, p).reshape(b, c, g, 1, hp)  # per column of a state

    # Left factor [C_i | C_i . B_j for j <= i]: (b, c, g, q, n + q).
    B_c = Bf.view(b, c, q, g, n).transpose(2, 3)  # (b, c, g, q, n) view
    C_c = Cf.view(b, c, q, g, n).transpose(2, 3)  # (b, c, g, q, n) view
    causal = torch.ones(q, q, dtype=torch.bool, device=x.device).tril()
    CB = (C_c @ B_c.transpose(-1, -2)).masked_fill_(~causal, 0.0)  # (b, c, g, q, q)
    left = torch.cat([C_c, CB], dim=-1)  # (b, c, g, q, n + q)

    # Right factor rows n..: u_j dt_j x_j, grouped (b, c, g, q, hg * p).
    x6 = xf.view(b, c, q, g, hg, p).transpose(2, 3)  # (b, c, g, q, hg, p) view
    w6 = u_dt.view(b, c, q, g, hg, 1).transpose(2, 3)  # (b, c, g, q, hg, 1) view
    if grad:
        xw = (x6 * w6).reshape(b, c, g, q, hp)
    else:  # written straight into the right factor, whose rows :n the recurrence fills below
        right = torch.empty((b, c, g, n + q, hp), dtype=ct, device=x.device)
        xw = right[:, :, :, n:]  # (b, c, g, q, hp) view
        torch.mul(x6, w6, out=xw.view(b, c, g, q, hg, p))
    s = B_c.transpose(-1, -2) @ xw  # (b, c, g, n, hp): each chunk's own input to its end state

    # Across chunks: S_start_{k+1} = exp(a_end_k) * S_start_k + s_k; the right factor takes
    # S'_k = exp(a_end_k) * S_start_k.
    if initial_states is None:
        start = torch.zeros((b, g, n, hp), dtype=ct, device=x.device)
    else:  # (b, h, p, n) -> (b, g, n, hg * p)
        start = initial_states.to(ct).view(b, g, hg, p, n).permute(0, 1, 4, 2, 3).reshape(b, g, n, hp)
    if grad:
        starts = []
        for k in range(c):
            starts.append(start)
            start = torch.addcmul(s[:, k], start, d[:, k])
        right = torch.cat([torch.stack(starts, dim=1) * d, xw], dim=-2)  # (b, c, g, n + q, hp)
    else:  # the states entering the chunks go straight into the right factor, then decay in place
        states = right[:, :, :, :n]  # (b, c, g, n, hp) view
        states[:, 0] = start
        # unbound once: one view per chunk from a single op, not three selects per step
        s_k, st_k, d_k = s.unbind(1), states.unbind(1), d.unbind(1)
        for k in range(c - 1):
            torch.addcmul(s_k[k], st_k[k], d_k[k], out=st_k[k + 1])
        start = torch.addcmul(s_k[-1], st_k[-1], d_k[-1])
        states.mul_(d)
    final = start.view(b, g, n, hg, p).permute(0, 1, 3, 4, 2).reshape(b, h, p, n)

    y = left @ right  # (b, c, g, q, hp)
    if g > 1:  # back to the time-major layout
        y = y.view(b, c, g, q, hg, p).transpose(2, 3)
    y = y.reshape(b, c * q, h, p)  # (b, l + pad, h, p)
    v = v.view(b, c * q, h, 1)
    if D is None:
        y = y * v if grad else y.mul_(v)
    else:
        Dv = (D[:, None] if D.dim() == 1 else D).to(ct)  # (h, 1) or (h, p)
        y = torch.addcmul(xf * Dv, y, v) if grad else y.mul_(v).addcmul_(xf, Dv)
    return y[:, :l].to(out_dtype), final, strong


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
    """The masked form on one slab, all chunks at once: the decay between every two steps of a
    chunk computed explicitly as an (h, Q, Q) matrix, exact for any decay.

    Written for CPU memory traffic: tensors stay in the time-major layout they arrive in wherever a
    matmul can read them that way, and elementwise steps are fused (addcmul, in-place) where autograd
    allows."""
    b, l, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    hg = h // g  # heads per group: head i reads B/C group i // hg
    q = chunk_size
    out_dtype, ct = x.dtype, _compute_dtype(x)

    xf, dtf, Bf, Cf, c = _in_chunks(x, dt, B, C, q)

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
