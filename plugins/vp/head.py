"""Regression head: last token's hidden state -> the future trajectory as normalised deltas."""

from __future__ import annotations

from torch import Tensor, nn


class RegressionHead(nn.Module):
    """``hidden`` (B, L, d_model) or (B, d_model) -> (B, fut_window, 3) offsets from the last sample.

    The last layer starts at zero, so an untrained model predicts "the head stays still", which is
    already a sensible answer, and training does not start from random trajectories.
    """

    def __init__(self, d_model: int, fut_window: int = 20, hidden: int = 256, dropout: float = 0.0):
        super().__init__()
        self.fut_window = fut_window
        if hidden > 0:
            self.net = nn.Sequential(
                nn.LayerNorm(d_model), nn.Linear(d_model, hidden), nn.GELU(), nn.Dropout(dropout),
                nn.Linear(hidden, fut_window * 3),
            )
        else:
            self.net = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, fut_window * 3))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, hidden: Tensor, batch: dict[str, Tensor] | None = None) -> Tensor:
        last = hidden[:, -1] if hidden.dim() == 3 else hidden  # (B, d_model)
        last = last.to(self.net[-1].weight.dtype)  # a bf16 backbone may feed an fp32 head
        out = self.net(last)  # (B, F*3)
        return out.view(out.shape[0], self.fut_window, 3)  # (B, F, 3)
