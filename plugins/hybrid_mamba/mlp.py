"""The SwiGLU MLP of each layer, with Llama's parameter names (gate_proj, up_proj, down_proj)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_intermediate: int, bias: bool = False):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_intermediate, bias=bias)
        self.up_proj = nn.Linear(d_model, d_intermediate, bias=bias)
        self.down_proj = nn.Linear(d_intermediate, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:  # (..., d_model) -> (..., d_model)
        if torch.is_grad_enabled():
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        gated = F.silu(self.gate_proj(x), inplace=True)  # inference: no temporaries
        return self.down_proj(gated.mul_(self.up_proj(x)))
