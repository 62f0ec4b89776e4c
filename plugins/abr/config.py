"""Parameters of the adaptive-bitrate-streaming (ABR) task and its sequence-policy components.

Import-light (pydantic and pathlib only): the plugin module imports these while plugins load.
Facts of the task: docs/abr.md and the data README (``$MAMBA4NET_DATA/README.md``, section 1).
Baselines keep their own parameters in :mod:`.baselines.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mamba4net.core.paths import default_data_dir
from mamba4net.plugins.seqpolicy.runs import PoolRun as SharedPoolRun

SPLITS = ("train", "valid", "test")
# tokens per decision for each layout (see encoder.py)
TOKENS_PER_DECISION = {"separate": 3, "fused": 1}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoolRun(SharedPoolRun):
    """A finished run whose trained policy plays the training traces beside the pool's policies:
    self-improvement across runs (a run's policy adds its episodes to the next run's pool, and
    ``best_per_trace`` keeps them where they beat the rest). The policy is asked for the return
    its own run asks for. Its passes are plain (no epsilon: a sequence policy's context would no
    longer match what was played), each with the pool's noise and pass seeds."""

    passes: int = Field(1, ge=1)


class PoolParams(_Strict):
    """The experience pool the sequence policies learn from (NetLLM: trajectories of baselines).

    Every policy in ``policies`` (with its default parameters) plays every training trace
    ``passes`` times (a new seed per pass: random start points, delay noise as set), so the pool
    holds ``len(policies) * passes * n_train_traces`` episodes of 47 decisions. Passes after the
    first take a uniformly random quality with probability ``epsilon``, which widens the range of
    returns a return-conditioned model sees.
    """

    # "pensieve" is the learned baseline (trained in the simulator first, with its default parameters)
    policies: list[Literal["bba", "robust_mpc", "rate_based", "pensieve"]] = Field(
        default_factory=lambda: ["bba", "robust_mpc", "rate_based"]
    )
    passes: int = Field(2, ge=1)
    noise: bool = True  # x U(0.9, 1.1) delay noise while collecting (off for evaluation)
    epsilon: float = Field(0.0, ge=0, le=1)
    seed: int = 1
    runs: list[PoolRun] = Field(default_factory=list)  # finished runs whose policies play too


class ABRParams(_Strict):
    """The ``task: {name: abr, ...}`` node."""

    data_dir: str | None = None  # None: default_data_dir() (../shared/data or $MAMBA4NET_DATA)
    # the video streamed: <abr_dir>/video/<video>_sizes/video_size_{0..5} (49+ chunk sizes each);
    # another one tests a trained policy on a video it never saw (docs/abr.md, "Another video")
    video: str = Field("video1", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    valid_fraction: float = Field(0.15, gt=0, lt=1)  # FCC source traces held out of fcc-train
    split_seed: int = 0
    # decisions per training sample; None = whole episodes (47 decisions), so the streaming student
    # sees at test time exactly the context it was trained on. The teacher re-encodes its last
    # `window` decisions (all of them with None).
    window: int | None = Field(None, ge=1, le=47)
    token_layout: Literal["separate", "fused"] = "separate"
    return_scale: float = Field(10.0, gt=0)  # return-to-go is fed divided by this
    # return the policy is conditioned on at the first decision; None: the `target_quantile` of
    # the training pool's episode returns (0.5: the median episode; 1.0: the best, as NetLLM)
    target_return: float | None = None
    target_quantile: float = Field(0.5, ge=0, le=1)
    # filtered imitation: train on only the k best-returning episodes of each training trace (of
    # all the pool's policies and passes); the target quantile is then taken over those episodes.
    # None: every episode of the pool
    best_per_trace: int | None = Field(None, ge=1)
    pool: PoolParams = Field(default_factory=PoolParams)
    pool_dir: str | None = None  # None: <cache>/abr/pools; a pool is reused across runs
    valid_traces: int | None = Field(None, ge=1)  # cap (evenly spaced) to keep validation cheap
    latency_decisions: int = Field(48, ge=0)  # decisions timed at batch 1 per model (0: skip)

    @model_validator(mode="after")
    def _check(self) -> "ABRParams":
        from .video import load_video_sizes

        self.abr_dir  # raises naming the folder when the data is missing
        load_video_sizes(self.abr_dir, self.video)  # and naming the file when the video is unusable
        return self

    @property
    def abr_dir(self) -> Path:
        root = Path(self.data_dir).expanduser() if self.data_dir else default_data_dir()
        for cand in (root / "abr", root):
            if (cand / "traces").is_dir() and (cand / "video").is_dir():
                return cand
        raise ValueError(
            f"ABR data not found: expected traces/ and video/ in {root / 'abr'} or {root}; "
            "set task.data_dir or $MAMBA4NET_DATA"
        )

    @property
    def tokens_per_decision(self) -> int:
        return TOKENS_PER_DECISION[self.token_layout]


class StateEncoderParams(_Strict):
    """``encoder: {name: abr_state, ...}``: Pensieve-style state features -> tokens."""

    hidden: int = Field(128, ge=8)  # width of each feature's embedding before the projection
    conv_channels: int = Field(64, ge=1)  # 1-D conv over the throughput/delay/size histories


class PolicyHeadParams(_Strict):
    """``head: {name: abr_policy, ...}``: hidden state at each decision -> logits over 6 bitrates."""

    hidden: int = Field(128, ge=0)  # 0: a single linear layer
