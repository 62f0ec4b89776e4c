"""Patch embedding: an image becomes a sequence of patch tokens of the backbone's width."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mamba4net.core.protocols import Batch


class PatchEmbed(nn.Module):
    """image (B, C, H, W) -> patches (B, N, C*p*p) -> linear -> (+ position) -> tokens (B, N, d_model),
    patches in row-major order (N = H/p * W/p)."""

    def __init__(self, channels: int, patch: int, tokens: int, d_model: int, positional: bool = True):
        super().__init__()
        self.patch = patch
        self.proj = nn.Linear(channels * patch * patch, d_model)
        self.pos = nn.Parameter(torch.zeros(tokens, d_model)) if positional else None
        if self.pos is not None:
            nn.init.normal_(self.pos, std=0.02)

    def forward(self, batch: Batch) -> Tensor:
        x = batch["image"]  # (B, C, H, W)
        p = self.patch
        b, c, h, w = x.shape
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)  # (B, H/p, W/p, C, p, p)
        tokens = self.proj(x.reshape(b, (h // p) * (w // p), c * p * p))  # (B, N, d_model)
        return tokens if self.pos is None else tokens + self.pos
