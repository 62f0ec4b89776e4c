"""Streaming decoders: a backbone's recurrent step, one token per stream, for decisions.

Two implementations of the kernel op ``stream_decoder`` (``(backbone, batch_size, state=None)
-> decoder``; the decoder's ``step(x (b, D)) -> h (b, D)`` returns the hidden state after the final
norm, exactly what ``HybridMambaBackbone.step`` returns, and ``states()`` the state in ``step``'s
format):

* ``stream_decoder_torch_ref``: ``backbone.step`` itself (:class:`mamba4net.core.streaming.StepDecoder`),
  functional, the state rebuilt every call. The reference the fast one is tested against.
* :class:`FusedDecoder` (``stream_decoder_torch_fused``): the same arithmetic with the per-call
  overhead removed. At batch 1 a step is a few hundred tiny ops, so their count, not their FLOPs,
  sets the time on a CPU:

  - weights prepacked once: each RMSNorm's weight folded into the projection that follows it
    (``W @ (w * x) == (W * w) @ x``), the MLP's gate and up projections stacked into one matmul,
    the attention's q, k, v into one, ``A = -exp(A_log)`` precomputed;
  - state preallocated and updated in place: the conv window as a ring buffer (the conv weights
    pre-rotated for each position of the ring, so no shift), the SSM state by ``mul_``/``addcmul_``,
    the attention layers' KV cache with spare capacity (doubled when full) and a precomputed RoPE
    table.

  ``step_many(x (b, T, D)) -> (b, T, D)`` takes T tokens of every stream in one call, the same
  as T calls of ``step``: the projections, conv, norms and MLP run once over all T (a decision of
  several tokens pays a step's overhead once), only the SSM recurrence walks the tokens (three
  in-place ops each) and the attention's new queries see the cache and each other causally.

  A snapshot: it reads the weights when built, so build a new one after the weights change;
  ``reset(batch_size, state=None)`` starts a new stream over the same packed weights (packing
  costs a few milliseconds, a reset a few allocations).

Both run without autograd: they are for deciding, not training.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mamba4net.core.streaming import StepDecoder

from .attention import KVCache
from .mixer import Mamba2State


def _rms(x: Tensor, eps: float) -> Tensor:
    """RMS-normalised ``x`` without the weight (folded into the next matmul)."""
    return F.rms_norm(x, (x.shape[-1],), None, eps)


def _packed(weight: Tensor, scale: Tensor | None = None) -> Tensor:
    """``(weight * scale).T``, contiguous: ``x @ packed`` is ``F.linear(scale * x, weight)``, and a
    plain ``mm`` with a pre-transposed weight skips ``linear``'s transpose and dispatch (about a
    third of a small matmul's time at batch 1)."""
    w = weight if scale is None else weight * scale[None, :]
    return w.t().contiguous()


def _apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """RoPE with table rows ``cos``/``sin`` (..., hd): ``x cos + rotate_half(x) sin`` in two ops."""
    half = x.shape[-1] // 2
    return torch.addcmul(x * cos, torch.cat([-x[..., half:], x[..., :half]], dim=-1), sin)


def _copy(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach().clone()


def _matmul(x: Tensor, packed: Tensor, bias: Tensor | None) -> Tensor:
    return torch.mm(x, packed) if bias is None else torch.addmm(bias, x, packed)


class _MambaStep:
    """One Mamba-2 layer (mixer + MLP) with prepacked weights and in-place state."""

    def __init__(self, layer, batch_size: int, state: Mamba2State | None):
        m = layer.mixer
        self.eps1 = layer.norm1.eps
        self.w_in = _packed(m.in_proj.weight, layer.norm1.weight)  # (D, d_in_proj)
        self.b_in = _copy(m.in_proj.bias)
        self.sizes = [m.d_inner, m.conv_dim, m.nheads]
        self.h, self.p, self.g, self.n = m.nheads, m.headdim, m.ngroups, m.d_state
        self.d_inner, self.K = m.d_inner, m.d_conv
        w = m.conv1d.weight.squeeze(1)  # (conv_dim, K): w[:, K-1] meets the newest input
        # rot[s][:, j] = the weight for ring slot j when the newest input sits in slot s
        self.conv_rot = torch.stack([w[:, [(j - s + self.K - 1) % self.K for j in range(self.K)]]
                                     for s in range(self.K)])  # (K, conv_dim, K)
        self.conv_b = _copy(m.conv1d.bias)
        # past_slots[s] = the ring slots of the K-1 inputs before the newest one (in slot s), oldest first
        self.past_slots = torch.tensor([[(s + 1 + k) % self.K for k in range(1, self.K)] for s in range(self.K)],
                                       dtype=torch.long, device=w.device)
        self.dt_bias, self.A = _copy(m.dt_bias), -torch.exp(m.A_log)
        self.dt_lo, self.dt_hi = m.dt_limit
        self.D = _copy(m.D)  # (h,)
        self.norm_eps, self.group = m.norm.eps, m.norm.group_size
        self.w_out = _packed(m.out_proj.weight, m.norm.weight)  # gated norm's weight folded in
        self.b_out = _copy(m.out_proj.bias)
        self.mlp = _MLPStep(layer) if layer.mlp is not None else None
        self.init_state = m.init_state
        self.reset(batch_size, state)

    def reset(self, batch_size: int, state: Mamba2State | None = None) -> None:
        if state is None:
            state = self.init_state(batch_size)
        self.ring = state.conv.clone()  # (b, conv_dim, K); slot K-1 holds the newest input
        self.newest = self.K - 1
        self.ssm = state.ssm.clone()  # (b, h, p, n)

    def __call__(self, h: Tensor) -> Tensor:
        b = h.shape[0]
        z, xbc, dt = _matmul(_rms(h, self.eps1), self.w_in, self.b_in).split(self.sizes, dim=-1)
        self.newest = s = (self.newest + 1) % self.K
        self.ring[:, :, s] = xbc
        xbc = (self.ring * self.conv_rot[s]).sum(-1)  # the causal conv at the newest position
        if self.conv_b is not None:
            xbc = xbc + self.conv_b
        x, B, C = F.silu(xbc).split([self.d_inner, self.g * self.n, self.g * self.n], dim=-1)
        dt = self._dt(dt)  # (b, h)
        x = x.view(b, self.h, self.p)
        y = self._recur(x, B, C, dt)  # (b, h, p)
        return self._out(h, z, x, y)

    def many(self, h: Tensor) -> Tensor:
        """T tokens of every stream at once: h (b, T, D) -> (b, T, D)."""
        b, T, _ = h.shape
        z, xbc, dt = _matmul(_rms(h.reshape(b * T, -1), self.eps1), self.w_in, self.b_in).split(self.sizes, dim=-1)
        past = self.ring.index_select(2, self.past_slots[self.newest])  # (b, C, K-1): the last K-1 inputs, in order
        window = torch.cat([past, xbc.view(b, T, -1).transpose(1, 2)], dim=2)  # (b, C, K-1+T)
        self.ring.copy_(window[:, :, -self.K:])  # the ring in order again, newest in slot K-1
        self.newest = self.K - 1
        # the causal conv at the T new positions (a depthwise conv1d call costs ~10x more at this size)
        conv = (window.unfold(2, self.K, 1) * self.conv_rot[self.K - 1][:, None, :]).sum(-1)  # (b, C, T)
        if self.conv_b is not None:
            conv = conv + self.conv_b[:, None]
        x, B, C = F.silu(conv.transpose(1, 2)).split([self.d_inner, self.g * self.n, self.g * self.n], dim=-1)
        dt = self._dt(dt.view(b, T, self.h))  # (b, T, h)
        x = x.reshape(b, T, self.h, self.p)
        y = torch.stack([self._recur(x[:, t], B[:, t], C[:, t], dt[:, t]) for t in range(T)], 1)  # (b, T, h, p)
        return self._out(h.reshape(b * T, -1), z, x.reshape(b * T, self.h, self.p), y.view(b * T, self.h, self.p)).view(b, T, -1)

    def _dt(self, dt_raw: Tensor) -> Tensor:
        """Step sizes: softplus(raw + bias), clamped to ``dt_limit`` when it is set."""
        dt = F.softplus(dt_raw + self.dt_bias)
        if self.dt_lo > 0.0 or self.dt_hi != math.inf:
            dt = dt.clamp(min=self.dt_lo, max=self.dt_hi)
        return dt

    def _recur(self, x: Tensor, B: Tensor, C: Tensor, dt: Tensor) -> Tensor:
        """One token's SSM update, in place, and its readout C h: x (b, h, p) -> (b, h, p)."""
        b, hg = x.shape[0], self.h // self.g
        ssm = self.ssm.view(b, self.g, hg, self.p, self.n)
        self.ssm.mul_(torch.exp(dt * self.A)[:, :, None, None])  # decay
        ssm.addcmul_((dt[:, :, None] * x).view(b, self.g, hg, self.p, 1), B.reshape(b, self.g, 1, 1, self.n))
        y = torch.bmm(ssm.view(b * self.g, hg * self.p, self.n), C.reshape(b * self.g, self.n, 1))
        return y.view(b, self.h, self.p)

    def _out(self, h: Tensor, z: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """D skip, gated RMSNorm (weight folded into out_proj), out_proj, residual, MLP; rows of h."""
        r = h.shape[0]
        y = torch.addcmul(y, self.D[:, None], x).view(r, self.d_inner)  # + D x
        y = y * F.silu(z)
        y = _rms(y.view(r, self.g, self.group), self.norm_eps).view(r, self.d_inner)
        h = h + _matmul(y, self.w_out, self.b_out)
        return h if self.mlp is None else self.mlp(h)

    def state(self) -> Mamba2State:
        order = [(self.newest + 1 + k) % self.K for k in range(self.K)]  # oldest .. newest
        return Mamba2State(conv=self.ring[:, :, order].clone(), ssm=self.ssm.clone())


class _MLPStep:
    """The SwiGLU MLP of a layer, with its norm's weight folded in and gate/up in one matmul."""

    def __init__(self, layer):
        mlp = layer.mlp
        self.eps = layer.norm2.eps
        self.w_gate_up = _packed(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), layer.norm2.weight)
        self.b_gate_up = torch.cat([mlp.gate_proj.bias, mlp.up_proj.bias]) if mlp.gate_proj.bias is not None else None
        self.w_down, self.b_down = _packed(mlp.down_proj.weight), _copy(mlp.down_proj.bias)
        self.d_ff = mlp.gate_proj.out_features

    def __call__(self, h: Tensor) -> Tensor:
        gate, up = _matmul(_rms(h, self.eps), self.w_gate_up, self.b_gate_up).split(self.d_ff, dim=-1)
        return h + _matmul(F.silu(gate) * up, self.w_down, self.b_down)


class _AttentionStep:
    """One attention layer (mixer + MLP) with a preallocated KV cache and a RoPE table."""

    def __init__(self, layer, batch_size: int, state: KVCache | None):
        a = layer.mixer
        self.eps1 = layer.norm1.eps
        self.w_qkv = _packed(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]), layer.norm1.weight)
        self.b_qkv = (torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
                      if a.q_proj.bias is not None else None)
        self.H, self.KV, self.hd = a.n_heads, a.n_kv_heads, a.head_dim
        self.sizes = [self.H * self.hd, self.KV * self.hd, self.KV * self.hd]
        self.w_o, self.b_o = _packed(a.o_proj.weight), _copy(a.o_proj.bias)
        self.rotary = a.rotary
        self.mlp = _MLPStep(layer) if layer.mlp is not None else None
        self.init_state = a.init_state
        self.reset(batch_size, state)

    def reset(self, batch_size: int, state: KVCache | None = None) -> None:
        if state is None:
            state = self.init_state(batch_size)
        self.t = state.length
        self.k = self._alloc(state.k, max(64, 2 * self.t))
        self.v = self._alloc(state.v, self.k.shape[2])
        if getattr(self, "cos", None) is None or self.cos.shape[0] < self.k.shape[2]:
            self._tables(self.k.shape[2])

    @staticmethod
    def _alloc(filled: Tensor, capacity: int) -> Tensor:
        b, kv, t, hd = filled.shape
        out = filled.new_zeros(b, kv, capacity, hd)
        out[:, :, :t] = filled
        return out

    def _tables(self, capacity: int) -> None:
        self.cos = self.sin = None
        if self.rotary is not None:
            pos = torch.arange(capacity, device=self.k.device)
            self.cos, self.sin = self.rotary(pos, self.k.dtype)  # (capacity, hd)

    def _grow(self) -> None:
        self.k, self.v = self._alloc(self.k, 2 * self.k.shape[2]), self._alloc(self.v, 2 * self.v.shape[2])
        self._tables(self.k.shape[2])

    def _rope(self, x: Tensor, T: int = 1) -> Tensor:  # at positions t .. t+T-1 (x (..., T, hd)), from the tables
        return _apply_rope(x, self.cos[self.t : self.t + T], self.sin[self.t : self.t + T])

    def __call__(self, h: Tensor) -> Tensor:
        return self.many(h[:, None])[:, 0]

    def many(self, h: Tensor) -> Tensor:
        """T tokens of every stream at once: h (b, T, D) -> (b, T, D)."""
        b, T, _ = h.shape
        while self.t + T > self.k.shape[2]:
            self._grow()
        rows = h.reshape(b * T, -1)
        q, k, v = _matmul(_rms(rows, self.eps1), self.w_qkv, self.b_qkv).split(self.sizes, dim=-1)
        q = q.view(b, T, self.H, self.hd).transpose(1, 2)  # (b, H, T, hd)
        k, v = k.view(b, T, self.KV, self.hd).transpose(1, 2), v.view(b, T, self.KV, self.hd).transpose(1, 2)
        if self.rotary is not None:
            q, k = self._rope(q, T), self._rope(k, T)
        end = self.t + T
        self.k[:, :, self.t : end] = k
        self.v[:, :, self.t : end] = v
        # each new query sees the cache and the new keys up to its own position
        mask = None if T == 1 else torch.ones(T, end, dtype=torch.bool, device=h.device).tril(self.t)
        self.t = end
        o = F.scaled_dot_product_attention(q, self.k[:, :, :end], self.v[:, :, :end], attn_mask=mask,
                                           enable_gqa=self.KV != self.H)  # (b, H, T, hd)
        rows = rows + _matmul(o.transpose(1, 2).reshape(b * T, self.H * self.hd), self.w_o, self.b_o)
        return (rows if self.mlp is None else self.mlp(rows)).view(b, T, -1)

    def state(self) -> KVCache:
        return KVCache(self.k[:, :, : self.t].clone(), self.v[:, :, : self.t].clone())


class FusedDecoder:
    """A hybrid Mamba backbone's step with prepacked weights and in-place, preallocated state
    (float32 or float64 models; see the module docstring)."""

    attention_step = _AttentionStep  # the class stepping an attention layer

    def __init__(self, backbone, batch_size: int, state: list[Any] | None = None):
        with torch.no_grad():
            states = state if state is not None else [None] * len(backbone.layers)
            self.layers = [(self.attention_step if layer.is_attention else _MambaStep)(layer, batch_size, s)
                           for layer, s in zip(backbone.layers, states)]
            self.eps_f, self.w_f = backbone.norm_f.eps, _copy(backbone.norm_f.weight)

    def reset(self, batch_size: int, state: list[Any] | None = None) -> None:
        """Start again from ``state`` (or the empty state) for ``batch_size`` streams, keeping the
        packed weights (the costly part of building a decoder)."""
        with torch.no_grad():
            for layer, s in zip(self.layers, state if state is not None else [None] * len(self.layers)):
                layer.reset(batch_size, s)

    @torch.inference_mode()
    def step(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.layers:
            h = layer(h)
        return _rms(h, self.eps_f) * self.w_f

    @torch.inference_mode()
    def step_many(self, x: Tensor) -> Tensor:
        """T tokens per stream, x (b, T, D) -> hidden states (b, T, D): T ``step`` calls in one."""
        if x.shape[1] == 1:
            return self.step(x[:, 0])[:, None]  # the single-token path has fewer ops
        h = x
        for layer in self.layers:
            h = layer.many(h)
        return _rms(h, self.eps_f) * self.w_f

    def states(self) -> list[Any]:
        return [layer.state() for layer in self.layers]


def reference_decoder(backbone, batch_size: int, state: list[Any] | None = None) -> StepDecoder:
    return StepDecoder(backbone, batch_size, state)


def fused_decoder(backbone, batch_size: int, state: list[Any] | None = None):
    """The fused decoder for a float32/float64 model; the reference for other dtypes (the fused
    one does the reference's float32 upcasts nowhere)."""
    if backbone.norm_f.weight.dtype not in (torch.float32, torch.float64):
        return StepDecoder(backbone, batch_size, state)
    return FusedDecoder(backbone, batch_size, state)
