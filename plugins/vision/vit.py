"""A small ViT teacher backbone: pre-norm Transformer encoder blocks over the patch tokens.

    tokens (B, L, D) -> [h = h + attn(norm1(h)) ; h = h + mlp(norm2(h))] x n_layers -> norm -> (B, L, D)

Attention is bidirectional (every patch sees every patch). Written out rather than taken from
``nn.TransformerEncoderLayer``, whose fused inference path torch's FLOP counter cannot see into.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .config import ViTParams


class ViTBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_mlp: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_mlp), nn.GELU(), nn.Linear(d_mlp, d_model))

    def forward(self, h: Tensor) -> Tensor:
        b, l, d = h.shape
        q, k, v = self.qkv(self.norm1(h)).view(b, l, 3, self.n_heads, d // self.n_heads).unbind(2)  # (B, L, H, hd)
        attn = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                              dropout_p=self.dropout if self.training else 0.0)  # (B, H, L, hd)
        h = h + self.proj(attn.transpose(1, 2).reshape(b, l, d))
        return h + self.mlp(self.norm2(h))


class ViTBackbone(nn.Module):
    def __init__(self, params: ViTParams):
        super().__init__()
        self.d_model = params.d_model
        d_mlp = int(params.d_model * params.mlp_ratio)
        self.layers = nn.ModuleList(ViTBlock(params.d_model, params.n_heads, d_mlp, params.dropout)
                                    for _ in range(params.n_layers))
        self.norm = nn.LayerNorm(params.d_model)

    def forward(self, inputs_embeds: Tensor) -> Tensor:
        h = inputs_embeds  # (B, L, D)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)

    def tap_points(self) -> dict[str, Any]:
        from mamba4net.core.taps import block_tap_points

        return block_tap_points(self.layers)

    def describe(self) -> dict[str, Any]:
        return {"architecture": "ViT encoder", "d_model": self.d_model, "num_layers": len(self.layers),
                "parameters": sum(p.numel() for p in self.parameters())}
