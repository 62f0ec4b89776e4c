"""RMSNorm (Llama layout) and the gated, grouped RMSNorm of the Mamba-2 mixer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# dtypes whose norms run torch's fused rms_norm (computed in the input dtype: identical arithmetic
# for these); half precision keeps the explicit float32 upcast below
_FUSED = (torch.float32, torch.float64)


def _fused(x: Tensor) -> bool:
    """Whether ``x`` is normed by torch's fused kernel: float32/64, and not while exporting to
    ONNX (opset 17 has no RMSNormalization; the explicit form exports as plain ops)."""
    return x.dtype in _FUSED and not torch.onnx.is_in_onnx_export()


class RMSNorm(nn.Module):
    """``weight * x / rms(x)``, computed in float32 and returned in the input dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        if _fused(x):  # torch's fused kernel: the same arithmetic in one pass
            return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


class RMSNormGated(nn.Module):
    """mamba_ssm's ``RMSNormGated`` with ``norm_before_gate=False``: ``norm(y * silu(z)) * weight``,
    where the RMS is taken over groups of ``group_size`` channels (``d_inner / ngroups``), so that
    each B/C group is normalized on its own."""

    def __init__(self, dim: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        if dim % group_size:
            raise ValueError(f"group_size={group_size} must divide dim={dim}")
        self.eps = eps
        self.group_size = group_size
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        if _fused(y) and z.dtype == y.dtype:
            gated = F.silu(z)  # a fresh tensor: scaled in place unless autograd records this
            gated = gated.mul_(y) if not torch.is_grad_enabled() else gated * y
            groups = gated.unflatten(-1, (-1, self.group_size))  # (..., ngroups, group_size)
            normed = F.rms_norm(groups, (self.group_size,), None, self.eps).flatten(-2)
            return normed.mul_(self.weight) if not torch.is_grad_enabled() else normed * self.weight
        yf = y.float() * F.silu(z.float())  # (..., dim)
        yg = yf.unflatten(-1, (-1, self.group_size))  # (..., ngroups, group_size)
        yg = yg * torch.rsqrt(yg.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * yg.flatten(-2).to(y.dtype)  # (..., dim)
