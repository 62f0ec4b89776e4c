"""YAML parameters of the student initializers (import-light: pydantic only).

``cwr`` -- cross-architecture weight reuse (paper section III-C)::

    initializer: {name: cwr, strategy: svd, rank: 64}                 # narrower student
    initializer: {name: cwr, strategy: copy, layers: last_k}          # same width, MambaInLlama-style
    initializer: {name: cwr, layers: [null, 0, 2, 4, 6, 8], decay: false, dt: 0.1}

``random`` -- the student's own initialisation (the ablation's control).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: ``decay: false`` stores A_log = -30: A = -exp(-30) ~ -1e-13, no decay within float precision over
#: any realistic stream, yet finite (the "no NaN/Inf" rule) and still trainable.
NO_DECAY_A_LOG = -30.0

LayerRule = Literal["evenly", "last_k", "first_k"]


class RandomInitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = None  # re-initialise with this seed; None keeps the student's own init


class CWRParams(BaseModel):
    """Cross-architecture weight reuse: Q->C, K->B, V->x, O->out_proj, norms and MLPs copied,
    the student's attention layers from the matching teacher attention layers."""

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["copy", "svd"] = Field(
        "svd",
        description="copy: the student has the teacher's width, weights copied as they are; "
        "svd: narrower student, rank-r truncated SVD W_r = U_r S_r V_r^T, then the first d_S "
        "rows / columns on each side that shrinks (paper eq. 11-14)",
    )
    rank: int | None = Field(
        64, ge=1, description="SVD rank r (svd only); None = full rank (slicing only); "
        "clipped to min(rows, cols) of each matrix"
    )
    layers: LayerRule | list[Annotated[int, Field(ge=0)] | None] = Field(
        "evenly",
        description="teacher layer of each student layer: evenly (evenly spaced, first and last "
        "aligned), last_k / first_k (the last / first n_student teacher layers, in order), or an "
        "explicit list with one teacher index (or null: keep the student's init) per student layer",
    )
    decay: bool = Field(
        True, description="true: keep the student's own A (mamba_ssm's A ~ U[1, 16]); "
        f"false: A_log = {NO_DECAY_A_LOG} (A ~ 0), so the mixer starts as causal linear attention"
    )
    dt: float | None = Field(
        None, gt=0, description="constant step: in_proj's dt rows = 0 and softplus(dt_bias) = dt; "
        "None keeps the student's own (input-dependent) dt"
    )
    D: float = Field(
        0.0, description="the skip D*x of every Mamba head: 0 = pure linear attention at start "
        "(attention has no such path); 1 = mamba_ssm's default"
    )
    conv: Literal["identity", "keep"] = Field(
        "identity", description="identity: the causal conv passes the current token through "
        "(last tap 1, others and bias 0); keep: the student's own conv init"
    )
    mlp: bool = Field(True, description="copy (compress) each mapped teacher layer's MLP")
    norms: bool = Field(True, description="copy the RMSNorm weights (layer norms and the final norm)")

    @field_validator("layers")
    @classmethod
    def _explicit_not_empty(cls, v):
        if isinstance(v, list) and not v:
            raise ValueError("layers: the explicit list is empty (one teacher index or null per student layer)")
        return v
