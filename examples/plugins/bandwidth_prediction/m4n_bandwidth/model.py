"""Encoder (one token per second of throughput) and head (the next seconds from the last token)."""

from torch import nn


class ThroughputEncoder(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(1, d_model), nn.GELU(), nn.Linear(d_model, d_model))

    def forward(self, batch):
        return self.proj(batch["x"])  # (B, history, 1) -> (B, history, d_model)


class HorizonHead(nn.Module):
    def __init__(self, d_model: int, horizon: int):
        super().__init__()
        self.out = nn.Linear(d_model, horizon)

    def forward(self, hidden, batch):
        return batch["x"][:, -1] + self.out(hidden[:, -1])  # (B, horizon): a change from the last value
