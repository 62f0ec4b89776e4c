"""Trajectory encoder: one token per history step (paper eq. 2 ends in a projection to d_model)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TrajectoryEncoder(nn.Module):
    """``batch["history"]`` (B, H, 3) -> tokens (B, H, d_model).

    Per step: MLP(features) + learned position embedding, then a linear projection to ``d_model``.
    ``features`` are the 3 normalised offsets from the last observed sample; with ``absolute=True``
    the 3 absolute normalised angles (``batch["history_abs"]``) are appended (6 features).
    """

    def __init__(self, d_model: int, hidden: int = 64, his_window: int = 10, absolute: bool = False):
        super().__init__()
        self.d_model, self.his_window, self.absolute = d_model, his_window, absolute
        in_features = 6 if absolute else 3
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.pos = nn.Parameter(torch.zeros(his_window, hidden))
        nn.init.normal_(self.pos, std=0.02)
        self.act = nn.GELU()
        self.proj = nn.Linear(hidden, d_model)  # eq. 2: the linear projection to the backbone width

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x = batch["history"]  # (B, H, 3)
        if self.absolute:
            x = torch.cat([x, batch["history_abs"]], dim=-1)  # (B, H, 6)
        if x.shape[1] != self.his_window:
            raise ValueError(f"history has {x.shape[1]} steps, encoder was built for {self.his_window}")
        x = x.to(self.proj.weight.dtype)
        h = self.mlp(x) + self.pos  # (B, H, hidden)
        return self.proj(self.act(h))  # (B, H, d_model)
