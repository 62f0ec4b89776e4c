"""The streaming decoder replayed as CUDA graphs (kernel op ``stream_decoder`` on CUDA devices).

At batch 1 a step of the fused decoder (:mod:`.decode`) is about a hundred tiny kernels: on a GPU
their launches, not their arithmetic, set the time. A CUDA graph records one step's kernels once
and replays them with a single launch. A graph replays fixed addresses and fixed shapes, so the
step it records must not depend on host-side values that change between steps:

* the attention layers' KV cache has a fixed capacity; the position is a device tensor (RoPE rows
  and the cache slot are picked with it, ``index_select``/``index_copy_``) and the new query attends
  over the whole cache with a mask of the filled slots (:class:`StaticAttentionStep`). When the
  cache is full its capacity doubles and the graphs are recorded again;
* the Mamba layers' conv ring keeps its newest input at a host-side slot that cycles through
  ``d_conv`` values: one graph is recorded per slot (four by default), each when first needed.

:class:`StaticDecoder` is the fused decoder with these attention layers: plain PyTorch, exact to
the reference step, tested on the CPU. :class:`GraphDecoder` records and replays it; it needs a
CUDA device and a float32/float64 model (others get the reference step, as with the fused one).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .attention import KVCache
from .decode import FusedDecoder, _apply_rope, _AttentionStep, _matmul, _MambaStep, _rms


class StaticAttentionStep(_AttentionStep):
    """An attention layer's step in which no shape depends on the position: the position ``pos``
    is a device tensor, the query attends over the whole (fixed-capacity) cache, masked to the
    filled slots. ``t`` still mirrors the position on the host (for ``state()`` and growth)."""

    def reset(self, batch_size: int, state: KVCache | None = None) -> None:
        super().reset(batch_size, state)
        self.pos = torch.tensor([self.t], dtype=torch.long, device=self.k.device)
        self.slots = torch.arange(self.k.shape[2], device=self.k.device)

    def load(self, state: KVCache) -> bool:
        """Copy ``state`` into the existing buffers (recorded graphs stay valid); False when it
        does not fit (another batch size, or longer than the capacity)."""
        b, kv, t, hd = state.k.shape
        if b != self.k.shape[0] or t > self.capacity:
            return False
        self.k.zero_()
        self.v.zero_()
        self.k[:, :, :t] = state.k
        self.v[:, :, :t] = state.v
        self.t = t
        self.pos.fill_(t)
        return True

    @property
    def capacity(self) -> int:
        return self.k.shape[2]

    def _grow(self) -> None:
        super()._grow()
        self.slots = torch.arange(self.k.shape[2], device=self.k.device)

    def __call__(self, h: Tensor) -> Tensor:
        if self.t >= self.capacity:
            self._grow()
        b = h.shape[0]
        q, k, v = _matmul(_rms(h, self.eps1), self.w_qkv, self.b_qkv).split(self.sizes, dim=-1)
        q = q.view(b, self.H, 1, self.hd)
        k, v = k.view(b, self.KV, 1, self.hd), v.view(b, self.KV, 1, self.hd)
        if self.rotary is not None:
            cos, sin = self.cos.index_select(0, self.pos), self.sin.index_select(0, self.pos)  # (1, hd)
            q, k = _apply_rope(q, cos, sin), _apply_rope(k, cos, sin)
        self.k.index_copy_(2, self.pos, k)
        self.v.index_copy_(2, self.pos, v)
        filled = (self.slots <= self.pos)[None, :]  # (1, capacity): the slots this query sees
        o = F.scaled_dot_product_attention(q, self.k, self.v, attn_mask=filled,
                                           enable_gqa=self.KV != self.H)  # (b, H, 1, hd)
        self.pos.add_(1)
        self.t += 1
        rows = h + _matmul(o.reshape(b, self.H * self.hd), self.w_o, self.b_o)
        return rows if self.mlp is None else self.mlp(rows)


class StaticDecoder(FusedDecoder):
    """The fused decoder whose steps have no position-dependent shapes (see the module docstring)."""

    attention_step = StaticAttentionStep

    @torch.inference_mode()
    def step_many(self, x: Tensor) -> Tensor:  # token by token: a step's shapes never depend on T
        return torch.stack([self.step(x[:, i]) for i in range(x.shape[1])], 1)

    def ring_slots(self) -> tuple[int, ...]:
        """The host-side values a recorded step depends on: every Mamba layer's newest ring slot."""
        return tuple(layer.newest for layer in self.layers if isinstance(layer, _MambaStep))

    def set_ring_slots(self, slots: tuple[int, ...]) -> None:
        for layer, s in zip((x for x in self.layers if isinstance(x, _MambaStep)), slots):
            layer.newest = s

    def positions(self) -> list[int]:
        return [layer.t for layer in self.layers if isinstance(layer, StaticAttentionStep)]

    def set_positions(self, ts: list[int]) -> None:
        for layer, t in zip((x for x in self.layers if isinstance(x, StaticAttentionStep)), ts):
            layer.t = t

    def grow(self) -> None:
        """Double every attention layer's cache (new buffers, the packed weights kept)."""
        for layer in self.layers:
            if isinstance(layer, StaticAttentionStep):
                layer._grow()

    def min_capacity_left(self) -> int | None:
        left = [layer.capacity - layer.t for layer in self.layers if isinstance(layer, StaticAttentionStep)]
        return min(left) if left else None

    def load(self, batch_size: int, state: list[Any] | None) -> bool:
        """Copy ``state`` (or the empty state) into the existing buffers, in place; False when it
        does not fit them (the caller then rebuilds). In inference mode: buffers made by a step
        (a grown cache) are inference tensors, which only inference mode may write into."""
        with torch.inference_mode():
            for layer, s in zip(self.layers, state if state is not None else [None] * len(self.layers)):
                if s is None:
                    s = layer.init_state(batch_size)
                if isinstance(layer, StaticAttentionStep):
                    if not layer.load(s):
                        return False
                else:
                    if s.ssm.shape != layer.ssm.shape:
                        return False
                    layer.ring.copy_(s.conv)
                    layer.newest = layer.K - 1
                    layer.ssm.copy_(s.ssm)
        return True


class GraphDecoder:
    """:class:`StaticDecoder`'s step recorded as CUDA graphs, one per tuple of ring slots, and
    replayed: ``step`` copies ``x`` into the recorded input, replays, and returns a copy of the
    recorded output. Same interface and outputs as the other decoders, and a snapshot of the
    weights like the fused one: growing the cache or changing the batch size reallocates the state
    and records again, over the weights packed when it was built.

    ``reset`` copies a new stream's state into the recorded buffers where it fits, so a caller
    that keeps its decoder (the sequence policies do, between episodes) keeps the recordings; a
    new decoder pays one warm-up step and ``d_conv`` recordings."""

    def __init__(self, backbone, batch_size: int, state: list[Any] | None = None):
        self.inner = StaticDecoder(backbone, batch_size, state)
        self._new_buffers(batch_size, backbone.norm_f.weight)

    def _new_buffers(self, batch_size: int, like: Tensor) -> None:
        """The recorded input (``like``: a (d_model,) tensor of the model's device and dtype), no
        recordings yet, and a warm-up step."""
        self.x = torch.zeros(batch_size, like.shape[0], device=like.device, dtype=like.dtype)
        self.graphs: dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, Tensor, tuple[int, ...]]] = {}
        self._warm_up()

    def _warm_up(self) -> None:
        """One eager step on a side stream (lazy library initialisation must not happen inside a
        recording), then the state copied back."""
        saved = self.inner.states()
        with torch.cuda.device(self.x.device):
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                self.inner.step(self.x)
            torch.cuda.current_stream().wait_stream(stream)
            torch.cuda.synchronize()
        if not self.inner.load(self.x.shape[0], saved):  # the warm-up step grew the cache
            self.inner.reset(self.x.shape[0], saved)

    def _record(self, key: tuple[int, ...]):
        """Record one step from ring slots ``key``; the host-side values are put back after (the
        recording does not run the kernels, but it runs the Python that moves them)."""
        positions = self.inner.positions()
        graph, out = self._capture()
        after = self.inner.ring_slots()
        self.inner.set_ring_slots(key)
        self.inner.set_positions(positions)
        self.graphs[key] = (graph, out, after)
        return self.graphs[key]

    def _capture(self) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        """One step recorded as a graph, and its output buffer."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.device(self.x.device), torch.cuda.graph(graph):
            out = self.inner.step(self.x)
        return graph, out

    def reset(self, batch_size: int, state: list[Any] | None = None) -> None:
        if not self.inner.load(batch_size, state):  # another batch size, or a longer history
            self.inner.reset(batch_size, state)
            self._new_buffers(batch_size, self.x[0])

    @torch.inference_mode()
    def step(self, x: Tensor) -> Tensor:
        left = self.inner.min_capacity_left()
        if left is not None and left < 1:  # the KV caches grow: new buffers, so new recordings
            self.inner.grow()
            self._new_buffers(self.x.shape[0], self.x[0])
        key = self.inner.ring_slots()
        graph, out, after = self.graphs.get(key) or self._record(key)
        self.x.copy_(x)
        with torch.cuda.device(self.x.device):
            graph.replay()
        self.inner.set_ring_slots(after)
        self.inner.set_positions([t + 1 for t in self.inner.positions()])
        return out.clone()

    @torch.inference_mode()
    def step_many(self, x: Tensor) -> Tensor:
        return torch.stack([self.step(x[:, i]) for i in range(x.shape[1])], 1)

    def states(self) -> list[Any]:
        return self.inner.states()


def graph_decoder(backbone, batch_size: int, state: list[Any] | None = None):
    """The CUDA-graph decoder for a float32/float64 model on a CUDA device; elsewhere what
    ``stream_decoder_torch_fused`` gives (the fused decoder, or the reference step for other dtypes)."""
    from .decode import fused_decoder

    w = backbone.norm_f.weight
    if w.device.type == "cuda" and w.dtype in (torch.float32, torch.float64):
        return GraphDecoder(backbone, batch_size, state)
    return fused_decoder(backbone, batch_size, state)
