"""Rule-based schedulers and the episode driver.

A scheduler is a callable ``sim -> (stage, limit)`` asked at every scheduling event of a
:class:`~.sim.ClusterSim` (see that module for what the action does).

* ``fifo``: Spark's default. The earliest-arrived job with a runnable stage takes every executor
  it can use (limit = all executors).
* ``fair``: equal shares. Each active job may hold ``ceil(N / active jobs)`` executors; free
  executors go to the job holding the fewest (earliest arrival on ties), to its first runnable stage.
* ``srwf``: shortest remaining work first. The job with the least unfinished work (remaining
  tasks x mean task duration) gets every executor it can use.
"""

from __future__ import annotations

import math
from typing import Callable

from .jobs import JobSpec
from .sim import ClusterSim, EpisodeResult, Stage

Scheduler = Callable[[ClusterSim], tuple[Stage, int]]


def fifo(sim: ClusterSim) -> tuple[Stage, int]:
    return sim.runnable_stages()[0], sim.num_executors


def fair(sim: ClusterSim) -> tuple[Stage, int]:
    share = math.ceil(sim.num_executors / len(sim.jobs))
    stage = min(sim.runnable_stages(), key=lambda s: (s.job.num_executors, s.job.id, s.spec.index))
    return stage, share


def srwf(sim: ClusterSim) -> tuple[Stage, int]:
    stages = sim.runnable_stages()
    work = {s.job: s.job.remaining_work for s in stages}
    stage = min(stages, key=lambda s: (work[s.job], s.job.id, s.spec.index))
    return stage, sim.num_executors


RULES: dict[str, Scheduler] = {"fifo": fifo, "fair": fair, "srwf": srwf}


def run_episode(scheduler: Scheduler, sim: ClusterSim, jobs: list[tuple[float, JobSpec]],
                seed: int | None = None) -> EpisodeResult:
    """Run one episode of ``jobs`` under ``scheduler``; ``seed`` fixes the task-duration draws."""
    sim.reset(jobs, seed=seed)
    while not sim.done:
        stage, limit = scheduler(sim)
        sim.step(stage, limit)
    return sim.result()
