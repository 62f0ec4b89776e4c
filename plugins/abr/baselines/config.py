"""Parameters of the ABR baselines (``evaluate.baselines: [{name: bba, reservoir_s: 5}, ...]``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BBAParams(_Strict):
    """Buffer-based: lowest bitrate below the reservoir, highest above reservoir + cushion."""

    reservoir_s: float = Field(5.0, ge=0)
    cushion_s: float = Field(10.0, gt=0)


class RobustMPCParams(_Strict):
    """Model-predictive control over the next ``horizon`` chunks with a robust throughput estimate."""

    horizon: int = Field(5, ge=1, le=6)
    past: int = Field(5, ge=1, le=8)  # throughput samples in the harmonic mean and error window
    # quality levels per chunk a plan may move (NetLLM's RobustMPC: 1); None: all 6^horizon plans
    max_jump: int | None = Field(1, ge=1)
    # plan chunk j with the size of video chunk next + j + 1, as NetLLM/Pensieve's code does (it
    # reproduces the published 0.844); False: with the sizes of the chunks actually fetched
    genet_sizes: bool = True


class RateBasedParams(_Strict):
    """Highest bitrate below the harmonic-mean throughput of the last ``past`` chunks x ``safety``."""

    past: int = Field(5, ge=1, le=8)
    safety: float = Field(1.0, gt=0)


class PensieveParams(_Strict):
    """Pensieve-style advantage actor-critic trained in the simulator on the training traces."""

    epochs: int = Field(300, ge=1)  # updates; each plays one episode on `envs_per_epoch` traces
    envs_per_epoch: int = Field(32, ge=1)
    lr_actor: float = Field(1e-3, gt=0)
    lr_critic: float = Field(3e-3, gt=0)
    gamma: float = Field(0.99, gt=0, le=1)
    entropy: float = Field(0.5, ge=0)  # entropy weight, decays linearly to entropy_final
    entropy_final: float = Field(0.05, ge=0)
    hidden: int = Field(128, ge=8)
    valid_every: int = Field(50, ge=1)  # keep the weights with the best validation QoE
    valid_traces: int = Field(24, ge=1)
    seed: int = 0
