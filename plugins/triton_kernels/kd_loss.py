"""Fused temperature-softmax KL distillation loss in Triton, the ``kd_loss`` op.

    loss = T^2 * mean_rows KL(softmax(t / T) || softmax(s / T))

Readable twin: :func:`mamba4net.plugins.losses.terms.kd_loss_ref`. One program per row of logits.

Forward, one pass over the row (online softmax, as in flash attention): running maxima m_s, m_t,
running sums z_s = sum exp(s/T - m_s), z_t = sum exp(t/T - m_t) and w = sum exp(t/T - m_t) (t - s)/T,
rescaled whenever a maximum grows. Then with lse = m + log z::

    KL = sum_c p_t,c (t_c - s_c)/T - lse_t + lse_s = w / z_t - lse_t + lse_s

The row's lse_s, lse_t and KL are saved. Backward, one more pass over the row (g = upstream grad)::

    d loss / d s_c = g * T / rows * (p_s,c - p_t,c)
    d loss / d t_c = g * T / rows * p_t,c * (log p_t,c - log p_s,c - KL)     (only if t needs it)
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _kd_fwd_kernel(s_ptr, t_ptr, kl_ptr, lse_s_ptr, lse_t_ptr, NCOL, s_row, t_row, inv_T,
                   BLOCK: tl.constexpr):
    row = tl.program_id(0)
    oc = tl.arange(0, BLOCK)
    neg_inf = float("-inf")
    m_s = tl.full((), neg_inf, tl.float32)
    m_t = tl.full((), neg_inf, tl.float32)
    z_s = tl.zeros((), tl.float32)
    z_t = tl.zeros((), tl.float32)
    w = tl.zeros((), tl.float32)
    for start in range(0, NCOL, BLOCK):
        cols = start + oc
        mask = cols < NCOL
        s = tl.load(s_ptr + row * s_row + cols, mask=mask, other=0.0).to(tl.float32) * inv_T
        t = tl.load(t_ptr + row * t_row + cols, mask=mask, other=0.0).to(tl.float32) * inv_T
        new_ms = tl.maximum(m_s, tl.max(tl.where(mask, s, neg_inf), 0))
        new_mt = tl.maximum(m_t, tl.max(tl.where(mask, t, neg_inf), 0))
        z_s = z_s * tl.exp(m_s - new_ms) + tl.sum(tl.where(mask, tl.exp(s - new_ms), 0.0), 0)
        e_t = tl.where(mask, tl.exp(t - new_mt), 0.0)
        scale_t = tl.exp(m_t - new_mt)
        z_t = z_t * scale_t + tl.sum(e_t, 0)
        w = w * scale_t + tl.sum(e_t * (t - s), 0)
        m_s = new_ms
        m_t = new_mt
    lse_s = m_s + tl.log(z_s)
    lse_t = m_t + tl.log(z_t)
    tl.store(kl_ptr + row, w / z_t - lse_t + lse_s)
    tl.store(lse_s_ptr + row, lse_s)
    tl.store(lse_t_ptr + row, lse_t)


@triton.jit
def _kd_bwd_kernel(s_ptr, t_ptr, kl_ptr, lse_s_ptr, lse_t_ptr, ds_ptr, dt_ptr, NCOL, s_row, t_row,
                   inv_T, scale, WANT_DT: tl.constexpr, BLOCK: tl.constexpr):
    # scale = upstream grad * T / rows; ds, dt are contiguous (rows, NCOL) float32
    row = tl.program_id(0)
    oc = tl.arange(0, BLOCK)
    lse_s = tl.load(lse_s_ptr + row)
    lse_t = tl.load(lse_t_ptr + row)
    kl = tl.load(kl_ptr + row)
    for start in range(0, NCOL, BLOCK):
        cols = start + oc
        mask = cols < NCOL
        logp_s = tl.load(s_ptr + row * s_row + cols, mask=mask, other=0.0).to(tl.float32) * inv_T - lse_s
        logp_t = tl.load(t_ptr + row * t_row + cols, mask=mask, other=0.0).to(tl.float32) * inv_T - lse_t
        p_t = tl.exp(logp_t)
        tl.store(ds_ptr + row * NCOL + cols, scale * (tl.exp(logp_s) - p_t), mask=mask)
        if WANT_DT:
            tl.store(dt_ptr + row * NCOL + cols, scale * p_t * (logp_t - logp_s - kl), mask=mask)


def _rows(x: Tensor) -> Tensor:
    """(..., C) -> (rows, C) with unit stride along C (a view when possible)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


class KDLossTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, student_logits: Tensor, teacher_logits: Tensor, temperature: float):
        s, t = _rows(student_logits), _rows(teacher_logits)
        rows, ncol = s.shape
        dev, f32 = s.device, torch.float32
        kl = torch.empty(rows, device=dev, dtype=f32)
        lse_s = torch.empty(rows, device=dev, dtype=f32)
        lse_t = torch.empty(rows, device=dev, dtype=f32)
        block = min(4096, max(16, triton.next_power_of_2(ncol)))
        _kd_fwd_kernel[(rows,)](s, t, kl, lse_s, lse_t, ncol, s.stride(0), t.stride(0),
                                1.0 / temperature, BLOCK=block)
        ctx.save_for_backward(s, t, kl, lse_s, lse_t)
        ctx.meta = (temperature, block, student_logits.shape, teacher_logits.shape,
                    student_logits.dtype, teacher_logits.dtype)
        return kl.mean() * temperature * temperature

    @staticmethod
    def backward(ctx, grad):
        s, t, kl, lse_s, lse_t = ctx.saved_tensors
        temperature, block, s_shape, t_shape, s_dtype, t_dtype = ctx.meta
        rows, ncol = s.shape
        want_dt = ctx.needs_input_grad[1]
        ds = torch.empty(rows, ncol, device=s.device, dtype=torch.float32)
        dt = torch.empty_like(ds) if want_dt else ds  # dummy pointer when not wanted
        scale = float(grad) * temperature / rows
        _kd_bwd_kernel[(rows,)](s, t, kl, lse_s, lse_t, ds, dt, ncol, s.stride(0), t.stride(0),
                                1.0 / temperature, scale, WANT_DT=want_dt, BLOCK=block)
        ds = ds.view(s_shape).to(s_dtype)
        dt = dt.view(t_shape).to(t_dtype) if want_dt else None
        return ds, dt, None


def kd_loss_triton(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """The ``kd_loss`` op: T^2 * KL(softmax(t/T) || softmax(s/T)) averaged over leading dims."""
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"kd_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    return KDLossTriton.apply(student_logits, teacher_logits, float(temperature))
