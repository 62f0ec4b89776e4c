"""Seeded episodes per split and the side-by-side scoring every CJS scheduler goes through.

Episode ``i`` of a split uses seed ``SPLIT_SEEDS[split] + i`` both for its job sequence and for
its task-duration draws, so every scheduler faces exactly the same jobs at the same times.
"""

from __future__ import annotations

import time
from typing import Any

from mamba4net.core.progress import progress_bar

from .config import ClusterParams
from .jobs import JobLibrary, JobSpec, job_sequence
from .sim import ClusterSim

SPLIT_SEEDS = {"train": 0, "valid": 100_000, "test": 200_000}


def episode_jobs(params: ClusterParams, library: JobLibrary, seed: int,
                 num_jobs: int | None = None, rate: float | None = None) -> list[tuple[float, JobSpec]]:
    return job_sequence(library, seed, num_jobs or params.job_arrival_cap, rate or params.job_arrival_rate,
                        params.scales, params.queries)


def make_sim(params: ClusterParams) -> ClusterSim:
    return ClusterSim(params.num_executors, params.moving_delay, params.warmup_delay,
                      limit_above_held=params.limit_above_held)


def evaluate_scheduler(scheduler: Any, params: ClusterParams, split: str = "test", episodes: int = 3,
                       num_jobs: int | None = None, library: JobLibrary | None = None,
                       keep_jct: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run ``scheduler`` on the split's first ``episodes`` seeded sequences (a progress bar over
    the completed jobs on a terminal, unless ``progress`` is off).

    Returns ``avg_jct_s`` (mean over every job of every episode), the per-episode averages,
    ``makespan_s`` and ``utilisation`` (episode means), ``decision_ms`` (wall time of the
    scheduler's call per decision, mean) and, with ``keep_jct``, every job's JCT (for a CDF).
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLIT_SEEDS)}")
    library = library or JobLibrary(params.tpch_dir)
    sim = make_sim(params)
    jct: list[float] = []
    per_ep, makespan, util = [], [], []
    decide_s, decisions = 0.0, 0
    bar = progress_bar(episodes * (num_jobs or params.job_arrival_cap), f"cjs {split} jobs", enabled=progress)
    for i in range(episodes):
        seed = SPLIT_SEEDS[split] + i
        sim.reset(episode_jobs(params, library, seed, num_jobs), seed=seed)
        shown = sim.pending_jobs
        while not sim.done:
            t0 = time.perf_counter()
            stage, limit = scheduler(sim)
            decide_s += time.perf_counter() - t0
            decisions += 1
            sim.step(stage, limit)
            if sim.pending_jobs != shown:
                bar.update(shown - sim.pending_jobs)
                shown = sim.pending_jobs
        r = sim.result()
        jct += r.jct_s
        per_ep.append(r.avg_jct_s)
        makespan.append(r.makespan_s)
        util.append(r.utilisation)
    bar.close()
    out: dict[str, Any] = {
        "avg_jct_s": sum(jct) / len(jct),
        "episode_avg_jct_s": per_ep,
        "makespan_s": sum(makespan) / len(makespan),
        "utilisation": sum(util) / len(util),
        "decision_ms": 1000.0 * decide_s / max(decisions, 1),
        "decisions": decisions,
        "jobs": len(jct),
    }
    if keep_jct:
        out["jct_s"] = jct
    return out
