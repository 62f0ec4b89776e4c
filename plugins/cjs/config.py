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

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mamba4net.core.paths import default_data_dir
from mamba4net.plugins.seqpolicy.runs import PoolRun

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
    # after Decima's valid limits: a step's limit is raised to the job's executors plus one, capped
    # at N (sim.ClusterSim.min_limit; decima-sim's floor discounts the job's own free executors)
    limit_above_held: bool = False
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
    iterations: int = Field(200, ge=1, le=999)  # (with seed and imitate_episodes: train seeds stay
    # seed * 1000 + i < 50_000, imitation seeds 50_000 + seed * 1000 + e < 100_000 = the valid seeds)
    budget_s: float = Field(180.0, gt=0)  # wall-clock cap on fit()
    rollouts: int = Field(4, ge=2)  # episodes per iteration on the same job sequence
    train_jobs: int = Field(8, ge=1)  # jobs per training episode
    train_rate: float | None = Field(None, gt=0)  # arrival rate while training; None: the cluster's
    lr: float = Field(1e-3, gt=0)
    entropy: float = Field(0.01, ge=0)  # entropy bonus weight
    limit_levels: int = Field(10, ge=1)  # the limit head chooses among this many evenly spaced limits
    imitate: Literal["fifo", "fair", "srwf"] | None = "fair"
    imitate_episodes: int = Field(4, ge=1, le=999)
    imitate_steps: int = Field(100, ge=0)  # stops early at half of budget_s
    imitate_batch: int = Field(64, ge=1)  # observations per behaviour-cloning step
    valid_every: int = Field(10, ge=1)  # iterations between greedy scores on the valid split
    valid_episodes: int = Field(2, ge=1)  # valid sequences (of train_jobs jobs) per score
    seed: int = Field(0, ge=0, lt=50)


# ---- the distillation task (task `cjs`, see .task) ---------------------------------------------


class PoolParams(BaseModel):
    """The experience pool the sequence policies learn from (NetLLM: trajectories of baselines).

    Every scheduler in ``policies`` plays ``episodes`` seeded job sequences of the train split
    (``jobs`` jobs each, the task's arrival rate), so the pool holds ``len(policies) * episodes``
    episodes. Sequence ``i`` is the same for every scheduler (seed ``seed * 1000 + i``).
    """

    model_config = ConfigDict(extra="forbid")
    # "decima": the learned baseline, trained first with ``decima`` (iterations, not wall time, end
    # its training, so that the pool's spec says what is in it)
    policies: list[Literal["fifo", "fair", "srwf", "decima"]] = Field(default_factory=lambda: ["fifo", "fair", "srwf"])
    decima: DecimaParams = Field(default_factory=lambda: DecimaParams(budget_s=86_400.0))
    # sequence seeds are seed * 1000 + i: these bounds keep them below the valid/test seeds
    episodes: int = Field(4, ge=1, le=1000)
    jobs: int = Field(6, ge=1)
    seed: int = Field(1, ge=0, lt=100)
    # finished CJS runs whose policy plays the same sequences too (self-improvement across runs;
    # with the task's best_per_sequence, their episodes are kept where they beat the rest)
    runs: list[PoolRun] = Field(default_factory=list)


class CJSParams(BaseModel):
    """The ``task: {name: cjs, ...}`` node: cluster, pool, token layout and evaluation size.

    Episodes are small for the CPU: ``eval_jobs`` jobs per sequence arriving at
    ``cluster.job_arrival_rate`` (the task's default rate, 1e-4 per ms, loads the cluster enough for
    fair to beat FIFO on 6-job sequences); ``eval_episodes`` sequences on the evaluated split,
    ``valid_episodes`` sequences of ``valid_jobs`` jobs (default: ``eval_jobs``) on the valid split
    during training (fewer jobs keep model selection cheap when the test sequences are long).
    ``cluster.job_arrival_cap`` is not used by this task: ``pool.jobs``, ``eval_jobs`` and
    ``valid_jobs`` size its episodes. Limits are the ``limit_levels``
    values N/levels, 2N/levels, ..., N; a rule scheduler's limit is stored as the nearest level.
    """

    model_config = ConfigDict(extra="forbid")
    cluster: ClusterParams = Field(default_factory=lambda: ClusterParams(job_arrival_rate=1e-4))
    pool: PoolParams = Field(default_factory=PoolParams)
    pool_dir: str | None = None  # None: <cache>/cjs/pools; a pool is reused across runs
    window: int = Field(8, ge=1)  # decisions per training sample, and the policies' context block
    stride: int | None = Field(None, ge=1)  # start of one window to the next (<= window); None: = window
    max_stages: int = Field(16, ge=1)  # K: candidate stage tokens per decision (cap)
    limit_levels: int = Field(10, ge=1)  # parallelism limits N/levels, 2N/levels, ..., N
    return_scale: float = Field(100.0, gt=0)  # return-to-go (job-seconds) is fed divided by this
    target_return: float | None = None  # for eval_jobs jobs; None: the target_quantile of the pool's per-job returns
    target_quantile: float = Field(0.75, ge=0, le=1)
    # train on the k best-returning episodes of each pool sequence only (filtered imitation; the
    # target quantile is then taken over those); None: every episode
    best_per_sequence: int | None = Field(None, ge=1)
    eval_jobs: int = Field(6, ge=1)
    eval_episodes: int = Field(3, ge=1)
    valid_episodes: int = Field(1, ge=1)
    valid_jobs: int | None = Field(None, ge=1)  # jobs per valid sequence; None: eval_jobs

    @model_validator(mode="after")
    def _stride_fits(self) -> "CJSParams":
        if self.stride is not None and self.stride > self.window:
            raise ValueError(f"stride ({self.stride}) must not exceed window ({self.window}): decisions would be skipped")
        return self


class SeqEncoderParams(BaseModel):
    """``encoder: {name: cjs_tokens, ...}``: graph embeddings -> stage / executor / action tokens."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(32, ge=1)
    rounds: int = Field(4, ge=0)


class SeqHeadParams(BaseModel):
    """``head: {name: cjs_policy, ...}``: pointer over stage tokens + MLP over limit levels."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(64, ge=1)


class CJSKDParams(BaseModel):
    """``losses: [{name: cjs_kd, ...}]``: T^2 KL(teacher || student) on both heads."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(1.0, gt=0)
    limit_weight: float = Field(1.0, ge=0)
