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
    """Pensieve-style actor-critic (GAE advantages, PPO-clipped minibatch updates) trained in the
    simulator on the training traces; the weights with the best validation QoE are kept."""

    epochs: int = Field(150, ge=1)  # rollout batches; each plays one episode on `envs_per_epoch` traces
    envs_per_epoch: int = Field(64, ge=1)
    ppo_epochs: int = Field(4, ge=1)  # passes over each rollout batch
    minibatch: int = Field(512, ge=1)  # decisions per gradient step
    clip: float = Field(0.2, gt=0)  # PPO ratio clip
    lr_actor: float = Field(3e-4, gt=0)
    lr_critic: float = Field(1e-3, gt=0)
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    reward_scale: float = Field(0.1, gt=0)  # rewards are multiplied by this before the critic sees them
    entropy: float = Field(0.1, ge=0)  # entropy weight, decays linearly to entropy_final
    entropy_final: float = Field(0.01, ge=0)
    max_grad_norm: float = Field(0.5, gt=0)
    hidden: int = Field(64, ge=8)
    valid_every: int = Field(10, ge=1)  # keep the weights with the best validation QoE
    valid_traces: int = Field(24, ge=1)
    seed: int = 0
