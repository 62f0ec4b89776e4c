"""The CJS task: the Spark cluster simulator, the experience pool, the RL loss and JCT evaluation.

Teacher and student are return-conditioned sequence policies (NetLLM) whose per-decision tokens
are the candidate stages, an executor token and the action (:mod:`.windows`, :mod:`.tokens`). They
learn from an experience pool of rule schedulers (:mod:`.pool`) with cross-entropy on both heads
(stage choice, parallelism limit) as the RL loss; the student is distilled with that loss plus
``beta * cjs_kd`` (KL on both heads). They are scored by scheduling the simulator
(:mod:`.policy`): every scheduler faces the same seeded job sequences of the split
(:mod:`.evaluation`).

Splits (seeds in :data:`.evaluation.SPLIT_SEEDS`): the pool's sequences come from the train seeds;
``valid`` sequences select models during training; ``test`` sequences are never used for selection.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mamba4net.core.model import eval_mode
from mamba4net.core.progress import log
from mamba4net.core.stats import mean_interval
from mamba4net.plugins.seqpolicy import cached_pool

from .config import CJSParams


POOL_FORMAT = 1
SPLITS = ("train", "valid", "test")
# windows of valid/test (e.g. a real batch to benchmark a model on): one fair episode, small
EVAL_POOL = {"policies": ["fair"], "episodes": 1}


class CJSTask:
    name = "cjs"
    metric = "avg_jct_s"
    higher_is_better = False
    default_encoder = "cjs_tokens"
    default_head = "cjs_policy"
    default_baselines = ["fifo", "fair", "srwf", "decima"]
    kd_loss = "cjs_kd"  # the generic `kd` would put stage and limit logits under one softmax

    def __init__(self, params: CJSParams | None = None):
        self.params = params if params is not None else CJSParams()
        self._library = None
        self._pools: dict[str, Any] = {}
        self._data: dict[str, Any] = {}

    @property
    def library(self):
        if self._library is None:
            from .jobs import JobLibrary

            self._library = JobLibrary(self.params.cluster.tpch_dir)
        return self._library

    @property
    def limits(self) -> list[int]:
        from .pool import limit_values

        return limit_values(self.params.cluster.num_executors, self.params.limit_levels)

    # --- experience pool and training data ---------------------------------------------------
    def _pool_spec(self, split: str) -> dict[str, Any]:
        from .evaluation import SPLIT_SEEDS

        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        p = self.params
        if split == "train":  # the runs' episodes are pools of their own (_run_pool)
            spec = {"policies": list(p.pool.policies), "episodes": p.pool.episodes, "jobs": p.pool.jobs}
            if "decima" in p.pool.policies:  # what the learned scheduler was trained with
                spec["decima"] = p.pool.decima.model_dump()
            seeds = [SPLIT_SEEDS["train"] + p.pool.seed * 1000 + i for i in range(p.pool.episodes)]
        else:
            spec = {**EVAL_POOL, "jobs": self.jobs(split)}
            seeds = [SPLIT_SEEDS[split] + i for i in range(spec["episodes"])]
        # limit_above_held only where it is on: pools made before the option keep their keys
        exclude = {"data_dir"} if p.cluster.limit_above_held else {"data_dir", "limit_above_held"}
        cluster = p.cluster.model_dump(exclude=exclude)
        return {"format": POOL_FORMAT, "split": split, **spec, "seeds": seeds, "cluster": cluster,
                "limit_levels": p.limit_levels, "tpch_dir": str(p.cluster.tpch_dir)}

    def pool(self, split: str = "train"):
        """The experience pool of ``split``: loaded from the pool folder when one with the same
        spec exists there, else generated (and saved): a pool is reused across runs."""
        if split in self._pools:
            return self._pools[split]
        from .pool import ExperiencePool, generate_pool

        spec = self._pool_spec(split)

        def make(digest: str):
            return generate_pool(self.params.cluster, self.library, self._pool_schedulers(spec["policies"]),
                                 episodes=spec["episodes"],
                                 jobs=spec["jobs"], seeds=spec["seeds"], limit_levels=self.params.limit_levels,
                                 meta={"split": split, "spec_digest": digest})

        pool = cached_pool("cjs", self.params.pool_dir, split, spec, load=ExperiencePool.load, make=make,
                           describe=lambda p: f"{p.num_episodes} episodes, {p.num_decisions} decisions")
        if split == "train":
            pool = self._with_runs(pool, spec)
        self._pools[split] = pool
        return pool

    def _with_runs(self, pool, spec: dict[str, Any]):
        """The training pool with ``pool.runs``' episodes on the same sequences, then only the
        ``best_per_sequence`` best of each sequence (if set)."""
        from mamba4net.plugins.seqpolicy import best_per_group

        from .pool import ExperiencePool

        runs, k = self.params.pool.runs, self.params.best_per_sequence
        if not runs and k is None:
            return pool
        parts = [pool, *(self._run_pool(source, spec) for source in runs)]
        keep = None
        if k is not None:
            returns = np.concatenate([p.episode_returns() for p in parts])
            keep = best_per_group(returns, np.asarray([s for p in parts for s in p.seed]), k)
            policies = [name for p in parts for name in p.policy]
            kept = Counter(policies[i] for i in keep)
            log.info("cjs: training on the best %d episode(s) of each sequence: %s", k,
                     ", ".join(f"{n} x {name}" for name, n in kept.items()))
        return ExperiencePool.concat(parts, keep)

    def _run_pool(self, source, spec: dict[str, Any]):
        """The pool's sequences played by a finished run's policy (``pool.runs``), asked for the
        return its own run asks for; cached by that policy's weights and target."""
        from mamba4net.plugins.seqpolicy import open_pool_run

        from .decima import single_thread
        from .pool import ExperiencePool, generate_pool

        run, digest = open_pool_run(source, self.name)
        label = f"{source.role}:{source.dir}"
        jobs = spec["jobs"]
        run_spec = {"format": POOL_FORMAT, "split": "train", "run_role": source.role, "run_weights_sha256": digest,
                    "run_target_return": run.task.target_return(jobs), "jobs": jobs, "seeds": spec["seeds"],
                    "cluster": spec["cluster"], "limit_levels": spec["limit_levels"], "tpch_dir": spec["tpch_dir"]}

        def make(digest: str):
            model = run.model(source.role)
            with torch.no_grad(), eval_mode(model), single_thread():
                return generate_pool(self.params.cluster, self.library,
                                     {label: run.task.as_scheduler(model, jobs=jobs)}, episodes=len(spec["seeds"]),
                                     jobs=jobs, seeds=spec["seeds"], limit_levels=self.params.limit_levels,
                                     meta={"split": "train", "spec_digest": digest, "run": label})

        return cached_pool("cjs", self.params.pool_dir, "train", run_spec, load=ExperiencePool.load, make=make,
                           describe=lambda p: f"{p.num_episodes} episodes of {label}")

    def _pool_schedulers(self, names: list[str]) -> dict[str, Any]:
        """name -> scheduler for the pool: the rules as they are, Decima trained first."""
        from .decima import DecimaBaseline
        from .schedulers import RULES

        out: dict[str, Any] = {}
        for name in names:
            if name == "decima":
                out[name] = DecimaBaseline(self.params.pool.decima, self.params.cluster)
                out[name].fit(self)
            elif name in RULES:
                out[name] = RULES[name]
            else:
                raise ValueError(f"pool policies must be among {', '.join([*RULES, 'decima'])}, got {name!r}")
        return out

    def data(self, split: str):
        if split not in self._data:
            from .windows import PoolWindows

            p = self.params
            self._data[split] = PoolWindows(self.pool(split), window=p.window, stride=p.stride,
                                            max_stages=p.max_stages, return_scale=p.return_scale)
        return self._data[split]

    def jobs(self, split: str) -> int:
        """Jobs per evaluated sequence of ``split``: ``valid_jobs`` (else ``eval_jobs``) on valid."""
        p = self.params
        return p.valid_jobs if split == "valid" and p.valid_jobs is not None else p.eval_jobs

    def target_return(self, jobs: int | None = None) -> float:
        """The return asked at the first decision of an episode of ``jobs`` jobs (default
        ``eval_jobs``), in job-seconds (negative): ``target_return`` (given for ``eval_jobs``
        jobs, scaled to ``jobs``), else the ``target_quantile`` of the training pool's per-job
        episode returns times ``jobs`` (pool and evaluated episodes may hold different job counts)."""
        p = self.params
        jobs = p.eval_jobs if jobs is None else jobs
        if p.target_return is not None:
            return float(p.target_return) * jobs / p.eval_jobs
        pool = self.pool("train")
        per_job = pool.episode_returns() / np.asarray(pool.jobs, dtype=np.float64)
        return float(np.quantile(per_job, p.target_quantile)) * jobs

    def loss(self, out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from .tokens import policy_loss

        pred = out.pred if hasattr(out, "pred") else out
        K = self.params.max_stages
        if pred.shape[-1] != K + self.params.limit_levels or pred.shape[:2] != batch["dec_mask"].shape:
            raise ValueError(f"CJS pred {tuple(pred.shape)} does not match the batch's decisions "
                             f"{tuple(batch['dec_mask'].shape)} x ({K} stages + {self.params.limit_levels} levels)")
        return policy_loss(pred, batch, K)

    # --- evaluation --------------------------------------------------------------------------
    def as_scheduler(self, predictor: Any, mode: str = "auto", jobs: int | None = None):
        """A baseline is already a scheduler; a model (encoder -> backbone -> head) is wrapped,
        asking for :meth:`target_return` of ``jobs`` jobs (default ``eval_jobs``)."""
        if hasattr(predictor, "backbone") and hasattr(predictor, "encoder"):
            from .policy import SequenceScheduler

            p = self.params
            return SequenceScheduler(predictor, window=p.window, max_stages=p.max_stages, limits=self.limits,
                                     return_scale=p.return_scale, target_return=self.target_return(jobs), mode=mode)
        if callable(predictor):
            return predictor
        raise TypeError(f"cannot schedule with {type(predictor).__name__}: neither a model nor a scheduler")

    def evaluate(self, predictor: Any, split: str = "test") -> dict[str, Any]:
        """Average JCT (s) over every job of the split's first ``eval_episodes`` seeded sequences
        of ``eval_jobs`` jobs (``valid_episodes`` of :meth:`jobs` on valid), makespan, executor utilisation and ``decision_ms`` (mean
        wall time per scheduling decision, batch 1); off the valid split also ``details`` with
        every job's JCT (for the CDF figure)."""
        from .decima import single_thread
        from .evaluation import evaluate_scheduler

        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        p = self.params
        episodes = p.valid_episodes if split == "valid" else p.eval_episodes
        with torch.no_grad(), eval_mode(predictor), single_thread():
            sched = self.as_scheduler(predictor, jobs=self.jobs(split))
            r = evaluate_scheduler(sched, p.cluster, split, episodes, num_jobs=self.jobs(split),
                                   library=self.library, keep_jct=True,
                                   progress=split != "valid")  # valid runs inside training's bar
        out: dict[str, Any] = {
            "avg_jct_s": float(r["avg_jct_s"]), "avg_jct_s_ci95": mean_interval(r["jct_s"])[1],  # over the jobs
            "makespan_s": float(r["makespan_s"]),
            "utilisation": float(r["utilisation"]), "decision_ms": round(float(r["decision_ms"]), 4),
            "decisions": int(r["decisions"]), "jobs": int(r["jobs"]),
        }
        if split != "valid":
            out["details"] = {"jct_s": [float(x) for x in r["jct_s"]],
                              "episode_avg_jct_s": [float(x) for x in r["episode_avg_jct_s"]]}
        return out

    def figures(self, details: dict[str, dict], out_dir: Path) -> list[dict[str, str]]:
        from .plots import plot_jct_cdf

        if plot_jct_cdf(details, Path(out_dir) / "cjs_jct_cdf.png"):
            return [{"title": "Job completion time per job (CDF)", "file": "cjs_jct_cdf.png"}]
        return []

    def __repr__(self) -> str:
        return f"CJSTask(window={self.params.window}, max_stages={self.params.max_stages})"
