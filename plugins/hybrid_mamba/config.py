"""YAML parameters of the ``hybrid_mamba`` student backbone.

Defaults follow mamba_ssm's ``Mamba2`` mixer (dt range, A range, conv width, gated RMSNorm) at a small
width: 12 layers of width 256, Mamba-2 everywhere except the last two layers, which use attention.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, model_validator


class HybridMambaParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # --- stack ---------------------------------------------------------------------------------
    d_model: int = Field(256, gt=0, description="residual stream width")
    n_layers: int = Field(12, gt=0, description="number of residual layers")
    attn_layers: list[int] | None = Field(
        None, description="indices of the attention layers; None = the last two; [] = pure Mamba"
    )
    d_intermediate: int = Field(512, ge=0, description="SwiGLU MLP width per layer; 0 = no MLP")
    norm_eps: float = Field(1e-5, gt=0, description="epsilon of every RMSNorm (gated one included)")

    # --- Mamba-2 (SSD) mixer ---------------------------------------------------------------------
    d_state: int = Field(64, gt=0, description="SSM state size N per group")
    d_conv: int = Field(4, gt=0, description="depthwise causal conv width")
    expand: int = Field(2, gt=0, description="d_inner = expand * d_model")
    headdim: int = Field(64, gt=0, description="SSM head size P; nheads = d_inner / headdim")
    ngroups: int = Field(1, gt=0, description="B/C groups (like KV groups); divides nheads")
    chunk_size: int = Field(64, gt=0, description="SSD chunk length of the parallel scan")
    a_init_range: tuple[float, float] = Field((1.0, 16.0), description="A ~ U[lo, hi], stored as A_log")
    dt_min: float = Field(0.001, gt=0)
    dt_max: float = Field(0.1, gt=0)
    dt_init_floor: float = Field(1e-4, gt=0)
    dt_limit: tuple[float, float] = Field(
        (0.0, math.inf), description="clamp of softplus(dt + dt_bias); (0, inf) = no clamp"
    )
    conv_bias: bool = True
    proj_bias: bool = Field(False, description="bias in in_proj / out_proj")

    # --- attention layers ----------------------------------------------------------------------
    attn_heads: int = Field(4, gt=0)
    attn_kv_heads: int = Field(4, gt=0, description="< attn_heads for grouped-query attention")
    attn_head_dim: int | None = Field(None, gt=0, description="None = d_model // attn_heads")
    rope: bool = Field(True, description="rotary position embeddings (Llama layout)")
    rope_theta: float = Field(10000.0, gt=0)

    # --- derived -------------------------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def head_dim_attn(self) -> int:
        return self.attn_head_dim if self.attn_head_dim is not None else self.d_model // self.attn_heads

    @property
    def attn_layer_indices(self) -> list[int]:
        """The attention layers, resolved: the last ``min(2, n_layers)`` layers when unset."""
        if self.attn_layers is None:
            return list(range(max(0, self.n_layers - 2), self.n_layers))
        return sorted(self.attn_layers)

    # --- checks --------------------------------------------------------------------------------
    @model_validator(mode="after")
    def _check(self) -> "HybridMambaParams":
        if self.attn_layers is not None:
            bad = [i for i in self.attn_layers if not 0 <= i < self.n_layers]
            if bad:
                raise ValueError(
                    f"attn_layers: indices {bad} out of range for n_layers={self.n_layers} "
                    f"(valid: 0..{self.n_layers - 1})"
                )
            dup = sorted({i for i in self.attn_layers if self.attn_layers.count(i) > 1})
            if dup:
                raise ValueError(f"attn_layers: duplicate indices {dup}")
        if self.d_inner % self.headdim:
            raise ValueError(
                f"headdim={self.headdim} must divide d_inner = expand * d_model = {self.d_inner}"
            )
        if self.nheads % self.ngroups:
            raise ValueError(
                f"ngroups={self.ngroups} must divide nheads = d_inner / headdim = {self.nheads}"
            )
        lo, hi = self.a_init_range
        if not 0 < lo <= hi:
            raise ValueError(f"a_init_range: need 0 < lo <= hi, got {self.a_init_range}")
        if self.dt_min > self.dt_max:
            raise ValueError(f"dt_min={self.dt_min} must be <= dt_max={self.dt_max}")
        lo, hi = self.dt_limit
        if not 0 <= lo < hi:
            raise ValueError(f"dt_limit: need 0 <= lo < hi, got {self.dt_limit}")
        if self.attn_layer_indices:  # attention geometry matters only when attention is used
            if self.attn_heads % self.attn_kv_heads:
                raise ValueError(
                    f"attn_kv_heads={self.attn_kv_heads} must divide attn_heads={self.attn_heads}"
                )
            if self.attn_head_dim is None and self.d_model % self.attn_heads:
                raise ValueError(
                    f"attn_heads={self.attn_heads} must divide d_model={self.d_model} "
                    "(or set attn_head_dim)"
                )
            if self.rope and self.head_dim_attn % 2:
                raise ValueError(f"rope needs an even attention head size, got {self.head_dim_attn}")
        return self
