"""The classification head: pooled tokens -> class logits."""

from __future__ import annotations

from torch import Tensor, nn

from mamba4net.core.protocols import Batch


class ClassifierHead(nn.Module):
    def __init__(self, d_model: int, n_classes: int, pool: str = "mean"):
        super().__init__()
        self.pool = pool
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, n_classes)

    def forward(self, hidden: Tensor, batch: Batch) -> Tensor:
        pooled = hidden.mean(1) if self.pool == "mean" else hidden[:, -1]  # (B, L, D) -> (B, D)
        return self.out(self.norm(pooled))  # (B, n_classes)
