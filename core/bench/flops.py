"""FLOPs of a model's forward pass, per sample: what ``torch.utils.flop_counter`` sees (matmuls,
convolutions, attention), with kernels that declare their FLOPs (the SSD scan, whose GPU kernels the
counter cannot see into) counted by their declaration (:func:`mamba4net.core.kernels.counting_flops`).

Elementwise work (activations, norms, the scan's decay) is not counted, as torch's counter does
not count it: the figures compare models by their matmul work, the usual convention.

The benchmark's FLOP bound (:func:`flop_curve`, :func:`backbone_flops`) also counts attention
explicitly, because torch's counter does not see ``scaled_dot_product_attention`` on CPU at all and
counts the full (L x L) square on GPU: see :data:`BOUND_CONVENTION`.
"""

from __future__ import annotations

from contextlib import contextmanager
from fractions import Fraction
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from mamba4net.core.kernels import FlopTally, counting_flops

BOUND_CONVENTION = (
    "FLOPs of one backbone forward over (B, L, d) inputs: 2 per multiply-add of every matmul and "
    "linear layer (torch's FLOP counter), the SSD scan by its declared count (4 B L h p n: state "
    "update and readout), scaled_dot_product_attention as its score and value matmuls "
    "(4 B heads Lq Lk head_dim), counted at half for causal attention (is_causal=True: the masked "
    "upper triangle is not work); elementwise work (activations, norms, decays) not counted. "
    "flop_ratio = teacher FLOPs / student FLOPs at the same (B, L): the speed-up the student would "
    "have if both ran at the same FLOP rate; efficiency = measured throughput ratio / flop_ratio.")


@torch.no_grad()
def count_flops(fn: Callable[[], Any], batch_size: int) -> dict[str, float]:
    """FLOPs of one call of ``fn`` (e.g. ``lambda: model(batch)``) on ``batch_size`` samples:
    ``{"total", "per_sample"}``."""
    with counting_flops() as tally:
        fn()
    return {"total": tally.total, "per_sample": tally.total / max(1, batch_size)}


def model_flops(model, batch: dict, batch_size: int) -> dict[str, float]:
    """FLOPs per sample of a networking model (encoder, backbone, head) on a task batch."""
    was = model.training
    model.eval()
    try:
        return count_flops(lambda: model(batch), batch_size)
    finally:
        model.train(was)


def sdpa_flops(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> int:
    """Score (Q K^T) and value (P V) matmuls of ``scaled_dot_product_attention`` for q (..., Lq, e),
    k (..., Lk, e), v (..., Lk, ev), with q's heads (grouped-query K/V heads are broadcast): 2 FLOPs
    per multiply-add, half the (Lq x Lk) square when causal."""
    *lead, lq, e = q.shape
    lk, ev = k.shape[-2], v.shape[-1]
    rows = 1
    for n in lead:
        rows *= int(n)
    full = 2 * rows * lq * lk * (e + ev)
    return full // 2 if causal else full


class _CountAttention(TorchFunctionMode):
    """Counts each ``scaled_dot_product_attention`` call by :func:`sdpa_flops` instead of whatever
    torch's counter saw of it (nothing on CPU, the full square on GPU). An explicit ``attn_mask``
    is counted as the full square: the kernels compute every masked entry."""

    def __init__(self, tally: FlopTally):
        super().__init__()
        self.tally = tally

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        q, k, v = args[:3]
        mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
        causal = bool(kwargs.get("is_causal", args[5] if len(args) > 5 else False)) and mask is None
        before = self.tally.counter.get_total_flops()
        out = func(*args, **kwargs)
        seen = self.tally.counter.get_total_flops() - before
        self.tally.kernel_adjustment += sdpa_flops(q, k, v, causal) - seen
        return out


@contextmanager
def counting_bound_flops() -> Iterator[FlopTally]:
    """:func:`counting_flops` with attention counted by :func:`sdpa_flops` (see BOUND_CONVENTION)."""
    with counting_flops() as tally, _CountAttention(tally):
        yield tally


def _input_dtype(backbone) -> torch.dtype:
    p = next(backbone.parameters(), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float32


@torch.no_grad()
def backbone_flops(backbone, seq_len: int, batch_size: int = 1, device: torch.device | str = "cpu") -> int:
    """FLOPs (BOUND_CONVENTION) of one forward of ``backbone`` over random ``(B, L, d_model)`` inputs."""
    x = torch.randn(batch_size, seq_len, backbone.d_model, device=device, dtype=_input_dtype(backbone))
    with counting_bound_flops() as tally:
        backbone(x)
    return tally.total


# Lengths at which a backbone's FLOPs are counted to find its polynomial in L, and the length that
# checks the fit. Short, so that counting costs a fraction of a second even for a 30-layer LLM.
FIT_LENGTHS = (32, 64, 96)
CHECK_LENGTH = 160


def flop_curve(backbone, device: torch.device | str = "cpu") -> dict:
    """A backbone's FLOPs per sequence (batch 1) as an exact polynomial in L,
    ``c0 + c1 L + c2 L^2`` (linear layers and the scan grow with L, attention with L^2), fitted
    through exact counts at ``FIT_LENGTHS`` and checked against an exact count at
    ``CHECK_LENGTH``. Counting at L = 8192 directly would cost a whole forward pass of the
    teacher. ``{"coefficients": [c0, c1, c2], "fitted_at", "checked_at", "exact"}``; when the check
    fails (``exact`` false) the caller counts at each length instead."""
    counts = [backbone_flops(backbone, n, 1, device) for n in FIT_LENGTHS]
    coef = _quadratic_through(FIT_LENGTHS, counts)
    check = backbone_flops(backbone, CHECK_LENGTH, 1, device)
    exact = _evaluate(coef, CHECK_LENGTH) == check
    return {"coefficients": [float(c) for c in coef], "fitted_at": list(FIT_LENGTHS),
            "checked_at": CHECK_LENGTH, "exact": exact, "_fractions": coef}


def _quadratic_through(xs, ys) -> list[Fraction]:
    """Exact coefficients [c0, c1, c2] of the parabola through three points (Lagrange form)."""
    (x0, x1, x2), (y0, y1, y2) = [Fraction(x) for x in xs], [Fraction(y) for y in ys]
    c2 = ((y2 - y0) / (x2 - x0) - (y1 - y0) / (x1 - x0)) / (x2 - x1)
    c1 = (y1 - y0) / (x1 - x0) - c2 * (x0 + x1)
    c0 = y0 - c1 * x0 - c2 * x0 * x0
    return [c0, c1, c2]


def _evaluate(coef, length: int) -> Fraction:
    return coef[0] + coef[1] * length + coef[2] * length * length


def flops_at(curve: dict, seq_len: int, batch_size: int = 1) -> int:
    """FLOPs of one forward over (B, L) from a :func:`flop_curve` (exact for an exact curve)."""
    value = _evaluate(curve["_fractions"], seq_len) * batch_size
    return int(round(value))
