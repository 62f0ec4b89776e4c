"""The hybrid Mamba student backbone: mostly Mamba-2 layers, a few attention layers at the output end.

    inputs_embeds (B, L, D)
    -> n_layers x [ h = h + mixer(norm1(h)) ; h = h + mlp(norm2(h)) ]   mixer: Mamba-2 or attention
    -> norm_f
    -> hidden (B, L, D)

Parameter names are Llama-like so that weight reuse can map by name::

    layers.{i}.norm1.weight             layers.{i}.norm2.weight
    layers.{i}.mixer.{in_proj, conv1d, dt_bias, A_log, D, norm, out_proj}     (Mamba-2 layers)
    layers.{i}.mixer.{q_proj, k_proj, v_proj, o_proj}                         (attention layers)
    layers.{i}.mlp.{gate_proj, up_proj, down_proj}                            (when d_intermediate > 0)
    norm_f.weight

Parallel mode (``forward``) for training, recurrent mode (``init_state`` / ``step``) for streaming
decisions; they agree numerically. ``prefill`` runs a prompt in parallel and returns the state that
``step`` continues from.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .attention import CausalSelfAttention
from .config import HybridMambaParams
from .kernels import SSD_SCAN, SSD_STEP, STREAM_DECODER, get_kernel
from .mixer import Mamba2Mixer
from .mlp import SwiGLU
from .norms import RMSNorm


class HybridLayer(nn.Module):
    """Pre-norm residual layer: mixer, then (optionally) a SwiGLU MLP."""

    def __init__(self, mixer: nn.Module, d_model: int, d_intermediate: int, eps: float):
        super().__init__()
        self.norm1 = RMSNorm(d_model, eps)
        self.mixer = mixer
        self.norm2 = RMSNorm(d_model, eps) if d_intermediate > 0 else None
        self.mlp = SwiGLU(d_model, d_intermediate) if d_intermediate > 0 else None

    @property
    def is_attention(self) -> bool:
        return isinstance(self.mixer, CausalSelfAttention)

    def _mlp(self, h: Tensor) -> Tensor:
        return h if self.mlp is None else h + self.mlp(self.norm2(h))

    def forward(self, h: Tensor, ssd_scan: Callable, return_state: bool = False):
        """h (B, L, D) -> (B, L, D) [, state]."""
        kw = {} if self.is_attention else {"ssd_scan": ssd_scan}
        out = self.mixer(self.norm1(h), return_state=return_state, **kw)
        mixed, state = out if return_state else (out, None)
        h = self._mlp(h + mixed)
        return (h, state) if return_state else h

    def step(self, h: Tensor, state: Any, ssd_step: Callable) -> tuple[Tensor, Any]:
        """h (B, D) -> (B, D), one token."""
        kw = {} if self.is_attention else {"ssd_step": ssd_step}
        mixed, state = self.mixer.step(self.norm1(h), state, **kw)
        return self._mlp(h + mixed), state


class HybridMambaBackbone(nn.Module):
    """Student backbone (``StreamingBackbone`` protocol). ``kernels`` overrides the registry's
    choice of ``{"ssd_scan": fn, "ssd_step": fn}`` (tests, benchmarks)."""

    def __init__(
        self, params: HybridMambaParams | None = None, kernels: dict[str, Callable] | None = None
    ):
        super().__init__()
        p = params or HybridMambaParams()
        self.params = p
        self.d_model = p.d_model
        self.attn_layers = p.attn_layer_indices
        self.kernels = kernels
        self.layers = nn.ModuleList(
            HybridLayer(self._make_mixer(p, i), p.d_model, p.d_intermediate, p.norm_eps)
            for i in range(p.n_layers)
        )
        self.norm_f = RMSNorm(p.d_model, p.norm_eps)
        self._rescale_residual_projections(p)

    @staticmethod
    def _make_mixer(p: HybridMambaParams, i: int) -> nn.Module:
        if i in p.attn_layer_indices:
            return CausalSelfAttention(
                p.d_model, p.attn_heads, p.attn_kv_heads, p.head_dim_attn,
                rope=p.rope, rope_theta=p.rope_theta, bias=False,
            )
        return Mamba2Mixer(
            p.d_model, d_state=p.d_state, d_conv=p.d_conv, expand=p.expand, headdim=p.headdim,
            ngroups=p.ngroups, chunk_size=p.chunk_size, a_init_range=p.a_init_range,
            dt_min=p.dt_min, dt_max=p.dt_max, dt_init_floor=p.dt_init_floor, dt_limit=p.dt_limit,
            conv_bias=p.conv_bias, bias=p.proj_bias, norm_eps=p.norm_eps,
        )

    @torch.no_grad()
    def _rescale_residual_projections(self, p: HybridMambaParams) -> None:
        """GPT-2 / mamba_ssm pre-norm init: scale every projection that writes into the residual
        stream by 1/sqrt(number of residual branches)."""
        n_branches = p.n_layers * (2 if p.d_intermediate > 0 else 1)
        for name, param in self.named_parameters():
            if name.endswith(("out_proj.weight", "o_proj.weight", "down_proj.weight")):
                param.div_(math.sqrt(n_branches))

    def _kernel(self, op: str, device: torch.device) -> Callable:
        """The implementation of ``op``, looked up once per call (the registry caches its choice)."""
        return get_kernel(op, device.type, self.kernels)

    # --- parallel mode -------------------------------------------------------------------------
    def forward(self, inputs_embeds: Tensor) -> Tensor:
        """inputs_embeds (B, L, D) -> hidden (B, L, D)."""
        scan = self._kernel(SSD_SCAN, inputs_embeds.device)
        h = inputs_embeds
        for layer in self.layers:
            h = layer(h, scan)
        return self.norm_f(h)

    def prefill(self, inputs_embeds: Tensor) -> tuple[Tensor, list[Any]]:
        """Like ``forward``, also returning the state after the last position, for ``step``."""
        scan = self._kernel(SSD_SCAN, inputs_embeds.device)
        h, states = inputs_embeds, []
        for layer in self.layers:
            h, s = layer(h, scan, return_state=True)
            states.append(s)
        return self.norm_f(h), states

    # --- one layer at a time (layer-wise distillation, e.g. MOHAWK) ----------------------------------
    def mamba_layers(self) -> list[int]:
        """Indices of the Mamba-2 layers (the others are attention)."""
        return [i for i, layer in enumerate(self.layers) if not layer.is_attention]

    def run_layer(self, i: int, h: Tensor) -> Tensor:
        """Layer ``i`` alone (mixer and MLP, residuals included): h (B, L, D) -> (B, L, D)."""
        return self.layers[i](h, self._kernel(SSD_SCAN, h.device))

    def layer_matrix(self, i: int, h: Tensor, rows: slice | None = None) -> Tensor:
        """Layer ``i``'s sequence-mixing matrix per head for the hidden state ``h`` entering it
        (its norm, then ``Mamba2Mixer.materialize``): (B, heads, rows, L)."""
        layer = self.layers[i]
        return layer.mixer.materialize(layer.norm1(h), rows)

    # --- taps (mamba4net.core.taps) ---------------------------------------------------------------
    def tap_points(self) -> dict[str, Any]:
        """``block_in.<i>``/``block_out.<i>`` of every layer; for each Mamba-2 layer ``i`` the
        quantities its scan is fed, ``mixer.<i>.{x,B,C,dt,A}`` (see ``Mamba2Mixer.quantities``),
        and ``mixer.<i>.matrix``, its sequence-mixing matrix per head (b, h, l, l), all computed
        from the mixer's input."""
        from mamba4net.core.taps import TapPoint, block_tap_points

        points = block_tap_points(self.layers)
        for i, layer in enumerate(self.layers):
            if layer.is_attention:
                continue
            mixer = layer.mixer
            for q in ("x", "B", "C", "dt", "A"):
                points[f"mixer.{i}.{q}"] = TapPoint(mixer, lambda a, k, o, m=mixer, q=q: m.quantities(a[0])[q])
            points[f"mixer.{i}.matrix"] = TapPoint(mixer, lambda a, k, o, m=mixer: m.materialize(a[0]))
        return points

    # --- recurrent mode ------------------------------------------------------------------------
    def init_state(self, batch_size: int) -> list[Any]:
        """One state per layer: Mamba2State (constant size) or KVCache (grows, attention layers)."""
        w = self.norm_f.weight
        return [layer.mixer.init_state(batch_size, w.device, w.dtype) for layer in self.layers]

    def decoder(self, batch_size: int, state: list[Any] | None = None):
        """A streaming decoder over the current weights (kernel op ``stream_decoder``: by default
        prepacked weights and state updated in place, see :mod:`.decode`), from ``state`` (e.g.
        a ``prefill``'s) or the empty state. ``decoder.step(x)`` returns what ``step`` returns."""
        w = self.norm_f.weight
        return self._kernel(STREAM_DECODER, w.device)(self, batch_size, state)

    def step(self, x: Tensor, state: list[Any]) -> tuple[Tensor, list[Any]]:
        """One token per stream: x (B, D) -> (y (B, D), new state). ``state`` is not modified."""
        step = self._kernel(SSD_STEP, x.device)
        h, new_state = x, []
        for layer, s in zip(self.layers, state):
            h, s = layer.step(h, s, step)
            new_state.append(s)
        return self.norm_f(h), new_state
