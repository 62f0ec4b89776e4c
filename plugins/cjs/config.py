"""Parameters of the cluster-job-scheduling (CJS) simulator and its components.

Import-light on purpose (pydantic and pathlib only): the plugin module imports these at load time.
Defaults of :class:`ClusterParams` follow NetLLM's CJS setting (Decima / spark-sched-sim on the
TPC-H profiles, data README section 2): 50 executors, at most 200 jobs arriving as a Poisson
stream at 4e-5 jobs per ms (one every 25 s on average), 2000 ms to move an executor between jobs,
1000 ms of warm-up added to a fresh executor's first task when no fresh-duration sample exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mamba4net.core.paths import default_data_dir

SCALES = ("2g", "5g", "10g", "20g", "50g", "80g", "100g")
NUM_QUERIES = 22


def resolve_tpch_dir(data_dir: str | Path | None) -> Path:
    """The folder holding ``<scale>/query_<N>.json``.

    ``data_dir`` may be the shared data root (``<data_dir>/cjs/tpch_json``), the CJS folder
    (``<data_dir>/tpch_json``) or the JSON folder itself. ``None`` means
    :func:`mamba4net.core.paths.default_data_dir`. Raises ``ValueError`` naming every path tried.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    candidates = [root / "cjs" / "tpch_json", root / "tpch_json", root]
    for cand in candidates:
        if cand.is_dir() and any((cand / s).is_dir() for s in SCALES):
            return cand
    tried = ", ".join(str(c) for c in candidates)
    raise ValueError(f"TPC-H JSON folder not found: looked for <scale>/ folders in {tried}; "
                     "set data_dir or $MAMBA4NET_DATA")


class ClusterParams(BaseModel):
    """The simulated Spark cluster and its job stream (times in milliseconds)."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str | None = None  # None: default_data_dir(); see resolve_tpch_dir
    num_executors: int = Field(50, ge=1)
    job_arrival_cap: int = Field(200, ge=1)  # jobs per episode
    job_arrival_rate: float = Field(4e-5, gt=0)  # Poisson rate, jobs per ms
    moving_delay: float = Field(2000.0, ge=0)  # ms for an executor to join another job
    warmup_delay: float = Field(1000.0, ge=0)  # ms added to a first-wave sample for a fresh executor
    scales: list[str] = Field(default_factory=lambda: list(SCALES))  # input sizes sampled uniformly
    queries: list[int] = Field(default_factory=lambda: list(range(1, NUM_QUERIES + 1)))

    @field_validator("scales")
    @classmethod
    def _scales(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s not in SCALES]
        if not v or unknown:
            raise ValueError(f"scales must be a non-empty subset of {list(SCALES)}, got {v}")
        return v

    @field_validator("queries")
    @classmethod
    def _queries(cls, v: list[int]) -> list[int]:
        if not v or any(q < 1 or q > NUM_QUERIES for q in v):
            raise ValueError(f"queries must be a non-empty list of numbers in 1..{NUM_QUERIES}, got {v}")
        return v

    @property
    def tpch_dir(self) -> Path:
        return resolve_tpch_dir(self.data_dir)


# ---- components -----------------------------------------------------------------------------


class RuleSchedulerParams(BaseModel):
    """``fifo``, ``fair`` and ``srwf`` take no tuning knobs."""

    model_config = ConfigDict(extra="forbid")


class GraphEncoderParams(BaseModel):
    """``encoders: [{name: cjs_graph, ...}]``: message passing over the job DAGs."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(32, ge=1)  # width of node / job / global embeddings
    rounds: int = Field(4, ge=0)  # message-passing steps from children to parents (0: no passing)


class DecimaParams(BaseModel):
    """Decima-style policy-gradient baseline trained in the simulator (see :mod:`.decima`).

    The budget is wall time (``budget_s``) and/or a number of training iterations, whichever
    ends first; each iteration runs ``rollouts`` episodes on one shared job sequence (the
    per-sequence mean is the baseline for the advantage, as Decima's input-driven baseline).
    Policy gradient from scratch needs far more episodes than a CPU budget of minutes allows, so
    by default the policy is first fitted to a rule scheduler's decisions (``imitate``: behaviour
    cloning on ``imitate_episodes`` training sequences, ``imitate_steps`` Adam steps), then
    improved by policy gradient. ``imitate: null`` trains by policy gradient alone, as Decima.
    Defaults: a few minutes on a 2-core CPU with small episodes.
    """

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(32, ge=1)
    rounds: int = Field(4, ge=0)
    iterations: int = Field(200, ge=1)
    budget_s: float = Field(180.0, gt=0)  # wall-clock cap on fit()
    rollouts: int = Field(4, ge=2)  # episodes per iteration on the same job sequence
    train_jobs: int = Field(8, ge=1)  # jobs per training episode
    train_rate: float | None = Field(None, gt=0)  # arrival rate while training; None: the cluster's
    lr: float = Field(1e-3, gt=0)
    entropy: float = Field(0.01, ge=0)  # entropy bonus weight
    limit_levels: int = Field(10, ge=1)  # the limit head chooses among this many evenly spaced limits
    imitate: Literal["fifo", "fair", "srwf"] | None = "fair"
    imitate_episodes: int = Field(4, ge=1)
    imitate_steps: int = Field(100, ge=0)  # stops early at half of budget_s
    imitate_batch: int = Field(64, ge=1)  # observations per behaviour-cloning step
    valid_every: int = Field(10, ge=1)  # iterations between greedy scores on the valid split
    valid_episodes: int = Field(2, ge=1)  # valid sequences (of train_jobs jobs) per score
    seed: int = 0
