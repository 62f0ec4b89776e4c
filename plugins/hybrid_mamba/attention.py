"""Causal multi-head attention with grouped-query heads and rotary embeddings, in Llama's layout
(q_proj, k_proj, v_proj, o_proj; rotate-half RoPE; query head i reads KV head i // (heads / kv_heads)),
so that a teacher's attention weights load into it unchanged.

Streaming: ``step`` keeps a KV cache that grows by one entry per token. This is the one part of the
student whose memory is not constant in the stream length; by design the attention layers are few
(two by default) and sit at the output end, the Mamba layers carry the constant-size state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class KVCache:
    k: Tensor  # (b, kv_heads, t, head_dim), keys already rotated
    v: Tensor  # (b, kv_heads, t, head_dim)

    @property
    def length(self) -> int:
        return self.k.shape[2]


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for positions, Llama (rotate-half) layout."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (head_dim / 2,)

    def forward(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        freqs = positions.float()[:, None] * self.inv_freq[None, :]  # (t, head_dim / 2)
        emb = torch.cat([freqs, freqs], dim=-1)  # (t, head_dim)
        return emb.cos().to(dtype), emb.sin().to(dtype)

    def first(self, length: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """``forward(arange(length))``, from a table kept between calls (grown when too short;
        rebuilt when the dtype or device changes); not part of the state dict."""
        key = (dtype, self.inv_freq.device, self.inv_freq.dtype)
        table = getattr(self, "_table", None)
        if table is None or table[0] != key or table[1].shape[0] < length:
            cos, sin = self(torch.arange(max(length, 256), device=self.inv_freq.device), dtype)
            table = self._table = (key, cos, sin)
        return table[1][:length], table[2][:length]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (b, heads, t, head_dim), cos/sin (t, head_dim)."""
    return x * cos + _rotate_half(x) * sin


def _rotate_time_major(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """:func:`apply_rotary` for x (b, t, heads, head_dim) as the projection lays it out, cos/sin
    (t, head_dim): with nothing recording for autograd, three fused multiply-adds into one new
    tensor (no rotated copy of x)."""
    cos, sin = cos[:, None], sin[:, None]  # (t, 1, hd): broadcast over heads
    if torch.is_grad_enabled() and x.requires_grad:
        return x * cos + _rotate_half(x) * sin
    half = x.shape[-1] // 2
    out = x * cos
    out[..., :half].addcmul_(x[..., half:], sin[..., :half], value=-1.0)
    out[..., half:].addcmul_(x[..., :half], sin[..., half:])
    return out


class CausalSelfAttention(nn.Module):
    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        head_dim: int | None = None,
        rope: bool = True,
        rope_theta: float = 10000.0,
        bias: bool = False,
    ):
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.head_dim = head_dim or d_model // n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must divide n_heads={n_heads}")
        self.q_proj = nn.Linear(d_model, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(d_model, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d_model, bias=bias)
        self.rotary = RotaryEmbedding(self.head_dim, rope_theta) if rope else None

    def _qkv(self, u: Tensor, positions: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """u (b, t, d_model) -> q (b, heads, t, hd), k and v (b, kv_heads, t, hd), RoPE applied at
        ``positions`` (None: 0 .. t - 1)."""
        b, t, _ = u.shape
        q = self.q_proj(u).view(b, t, self.n_heads, self.head_dim)  # (b, t, H, hd)
        k = self.k_proj(u).view(b, t, self.n_kv_heads, self.head_dim)  # (b, t, KV, hd)
        v = self.v_proj(u).view(b, t, self.n_kv_heads, self.head_dim)  # (b, t, KV, hd)
        if self.rotary is not None:  # rotated in the projections' layout, before the transposes
            cos, sin = self.rotary.first(t, q.dtype) if positions is None else self.rotary(positions, q.dtype)
            q, k = _rotate_time_major(q, cos, sin), _rotate_time_major(k, cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, causal: bool) -> Tensor:
        b, _, t, _ = q.shape
        o = F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, enable_gqa=self.n_kv_heads != self.n_heads
        )  # (b, H, t, hd)
        return self.o_proj(o.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))

    def forward(self, u: Tensor, *, return_state: bool = False) -> Tensor | tuple[Tensor, KVCache]:
        """u (b, l, d_model) -> (b, l, d_model); with ``return_state`` also the KV cache."""
        q, k, v = self._qkv(u, None)  # positions 0 .. l - 1
        y = self._attend(q, k, v, causal=True)
        return (y, KVCache(k, v)) if return_state else y

    def init_state(self, batch_size: int, device=None, dtype=None) -> KVCache:
        w = self.q_proj.weight
        shape = (batch_size, self.n_kv_heads, 0, self.head_dim)
        empty = torch.zeros(shape, device=device or w.device, dtype=dtype or w.dtype)
        return KVCache(empty, empty.clone())

    def step(self, u: Tensor, cache: KVCache) -> tuple[Tensor, KVCache]:
        """One token: u (b, d_model) -> (y (b, d_model), the cache grown by one position)."""
        positions = torch.full((1,), cache.length, device=u.device, dtype=torch.long)
        q, k, v = self._qkv(u[:, None], positions)  # q (b, H, 1, hd), k/v (b, KV, 1, hd)
        cache = KVCache(torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2))
        y = self._attend(q, cache.k, cache.v, causal=False)  # the newest query sees everything
        return y[:, 0], cache
