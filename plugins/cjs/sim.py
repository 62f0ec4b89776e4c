"""Discrete-event simulator of a Spark cluster running a stream of DAG jobs (Decima setting).

Model (times in ms):

* ``N`` executors, each idle in the free pool, bound to a job (running a task, idle there, or
  moving to it). Joining a job it does not already belong to takes ``moving_delay``.
* A job arrives at its arrival time; a stage becomes *runnable* once all its parents finished
  and while it still has tasks nobody has been given (``unassigned``).
* An executor that finishes a task keeps going on the same stage while the stage has unassigned
  tasks and its job holds no more executors than the job's parallelism limit; otherwise it becomes
  idle at its job (free to be re-assigned). When a job completes its executors return to the pool.
* A *scheduling event* happens whenever, after all events at one instant, some executor is free
  and some stage is runnable. The scheduler then answers ``step(stage, limit)`` and is asked
  again until no free executor or no runnable stage is left.
* ``step(stage, limit)`` sets the job's parallelism limit and sends free executors to the stage:
  first those idle at the stage's job (no delay, no more than its unassigned tasks), then others
  (pool first, then idle at other jobs, each paying the moving delay) until the job holds
  ``limit`` executors or the stage has none unassigned. At least one executor always goes.
* With ``limit_above_held`` (after Decima's valid limits, ``least_exec_amount`` in decima-sim) a
  step's limit is raised to at least the job's executors plus one, capped at N
  (:meth:`ClusterSim.min_limit`), so the executor a step sends keeps working there instead of
  running one task and waiting idle at the job (a new decision). decima-sim lowers that floor by
  the free executors already at the chosen job (its source executors); here it is always held + 1,
  so a step on a job with idle executors and more unassigned tasks also brings one from elsewhere.
  Off by default: a limit at or below what the job holds is then kept, and a scheduler that sets
  one often decides several times per executor it places.
* Durations come from :mod:`.durations`. An executor on its way is promised one task of its
  stage, which it starts on arrival.

Metrics: job completion time (JCT) = completion - arrival; makespan = last completion; executor
utilisation = busy executor-time / (N x makespan).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field

from .durations import sample_duration
from .jobs import JobSpec, StageSpec

ARRIVAL, TASK_DONE, EXECUTOR_ARRIVES = 0, 1, 2


@dataclass(eq=False)
class Stage:
    spec: StageSpec
    job: "Job"
    started: int = 0  # tasks handed to an executor
    finished: int = 0  # tasks completed
    running: int = 0  # executors running one of its tasks now
    moving_in: int = 0  # executors on their way, each promised one task
    waiting_parents: int = 0

    @property
    def unassigned(self) -> int:
        return self.spec.num_tasks - self.started - self.moving_in

    @property
    def remaining_tasks(self) -> int:
        return self.spec.num_tasks - self.finished

    @property
    def runnable(self) -> bool:
        return self.waiting_parents == 0 and self.unassigned > 0

    @property
    def done(self) -> bool:
        return self.finished == self.spec.num_tasks


@dataclass(eq=False)
class Job:
    id: int
    spec: JobSpec
    arrival: float
    stages: list[Stage] = field(default_factory=list)
    num_executors: int = 0  # bound to it: running, idle there or moving in
    idle: list["Executor"] = field(default_factory=list)
    limit: int = 0  # parallelism limit set by the last action on this job
    finished_stages: int = 0
    completion: float | None = None

    @property
    def remaining_work(self) -> float:
        """Unfinished tasks x mean task duration, summed over stages (ms)."""
        return sum(s.remaining_tasks * s.spec.mean_duration for s in self.stages)


@dataclass(eq=False)
class Executor:
    id: int
    job: Job | None = None
    stage: Stage | None = None  # the stage of its current (or promised) task
    last_stage: Stage | None = None  # the stage of the last task it finished
    busy: bool = False
    moving: bool = False


@dataclass
class EpisodeResult:
    jct_s: list[float]  # per job, in arrival order
    makespan_s: float
    utilisation: float
    decisions: int

    @property
    def avg_jct_s(self) -> float:
        return sum(self.jct_s) / len(self.jct_s)

    def summary(self) -> dict[str, float]:
        return {"avg_jct_s": self.avg_jct_s, "makespan_s": self.makespan_s,
                "utilisation": self.utilisation, "decisions": float(self.decisions),
                "jobs": float(len(self.jct_s))}


class ClusterSim:
    """``reset(jobs)`` then, while not ``done``, ``step(stage, limit)`` at each scheduling event.

    Between calls a scheduler reads ``time``, ``jobs`` (active, in arrival order),
    ``runnable_stages()``, ``num_free`` and ``free_at(job)``.
    """

    def __init__(self, num_executors: int = 50, moving_delay: float = 2000.0,
                 warmup_delay: float = 1000.0, seed: int = 0, limit_above_held: bool = False):
        self.num_executors = num_executors
        self.limit_above_held = limit_above_held
        self.moving_delay, self.warmup_delay = moving_delay, warmup_delay
        self.seed = seed

    # ---- episode control ----
    def reset(self, jobs: list[tuple[float, JobSpec]], seed: int | None = None) -> "ClusterSim":
        """Start an episode on ``(arrival ms, job)`` pairs and run to the first scheduling event."""
        if not jobs:
            raise ValueError("an episode needs at least one job")
        self.rng = random.Random(self.seed if seed is None else seed)
        self.time = 0.0
        self.executors = [Executor(i) for i in range(self.num_executors)]
        self.pool: list[Executor] = list(self.executors)  # free, bound to no job
        self.num_free = self.num_executors
        self.jobs: list[Job] = []  # active jobs in arrival order
        self.all_jobs: list[Job] = []
        self._runnable: dict[Stage, None] = {}  # insertion-ordered set
        self._events: list[tuple[float, int, int, object]] = []
        self._seq = 0
        self.busy_ms = 0.0
        self.decisions = 0
        self._pending_jobs = len(jobs)
        for i, (t, spec) in enumerate(sorted(jobs, key=lambda p: p[0])):
            self._push(t, ARRIVAL, (i, spec))
        self._advance()
        return self

    @property
    def done(self) -> bool:
        return self._pending_jobs == 0

    @property
    def pending_jobs(self) -> int:
        """Jobs of the episode not completed yet (arrived or still to arrive)."""
        return self._pending_jobs

    def runnable_stages(self) -> list[Stage]:
        """Stages a scheduler may pick now, ordered by (job arrival, stage index)."""
        return sorted(self._runnable, key=lambda s: (s.job.id, s.spec.index))

    def free_at(self, job: Job) -> int:
        return len(job.idle)

    def min_limit(self, job: Job) -> int:
        """The lowest parallelism limit a step on ``job`` applies: 1, or with ``limit_above_held``
        the job's executors plus one (at most N)."""
        return min(job.num_executors + 1, self.num_executors) if self.limit_above_held else 1

    def step(self, stage: Stage, limit: int) -> None:
        """Send free executors to ``stage`` under parallelism ``limit`` for its job (see module doc)."""
        if self.done:
            raise RuntimeError("the episode is over")
        if stage not in self._runnable:
            raise ValueError(f"stage {stage.spec.index} of job {stage.job.id} is not runnable now")
        job = stage.job
        job.limit = max(self.min_limit(job), min(int(limit), self.num_executors))
        self.decisions += 1
        sent = 0
        while job.idle and stage.unassigned > 0:  # already on the job: start at once
            ex = job.idle.pop()
            self.num_free -= 1
            self._start_task(ex, stage)
            sent += 1
        want = min(stage.unassigned, job.limit - job.num_executors)
        if sent == 0:
            want = max(want, 1)
        for ex in self._take_remote(job, want):
            self._detach(ex)
            ex.job, ex.stage, ex.moving = job, stage, True
            job.num_executors += 1
            stage.moving_in += 1
            self._push(self.time + self.moving_delay, EXECUTOR_ARRIVES, ex)
        self._refresh(stage)
        if self.num_free == 0 or not self._runnable:
            self._advance()

    def result(self) -> EpisodeResult:
        if not self.done:
            raise RuntimeError("the episode is not over yet")
        makespan = max(j.completion for j in self.all_jobs)
        jct = [(j.completion - j.arrival) / 1000.0 for j in self.all_jobs]
        util = self.busy_ms / (self.num_executors * makespan) if makespan > 0 else 0.0
        return EpisodeResult(jct_s=jct, makespan_s=makespan / 1000.0, utilisation=util, decisions=self.decisions)

    # ---- internals ----
    def _push(self, t: float, kind: int, payload: object) -> None:
        heapq.heappush(self._events, (t, self._seq, kind, payload))
        self._seq += 1

    def _refresh(self, stage: Stage) -> None:
        if stage.runnable and stage.job.completion is None:
            self._runnable[stage] = None
        else:
            self._runnable.pop(stage, None)

    def _take_remote(self, job: Job, k: int) -> list[Executor]:
        """Up to ``k`` free executors not on ``job``: the pool first, then idle at other jobs."""
        out = []
        while self.pool and len(out) < k:
            out.append(self.pool.pop())
        for other in self.jobs:
            if other is job:
                continue
            while other.idle and len(out) < k:
                out.append(other.idle.pop())
        self.num_free -= len(out)
        return out

    def _detach(self, ex: Executor) -> None:
        if ex.job is not None:
            ex.job.num_executors -= 1

    def _start_task(self, ex: Executor, stage: Stage) -> None:
        if ex.last_stage is None or ex.last_stage.job is not stage.job:
            kind = "fresh"
        elif ex.last_stage is stage:
            kind = "rest"
        else:
            kind = "first"
        d = sample_duration(stage.spec, kind, stage.job.num_executors, self.rng, self.warmup_delay)
        ex.stage, ex.busy = stage, True
        stage.started += 1
        stage.running += 1
        self.busy_ms += d
        self._push(self.time + d, TASK_DONE, ex)
        self._refresh(stage)

    def _advance(self) -> None:
        """Process events until a scheduling event (free executor + runnable stage) or the end."""
        events = self._events
        while events:
            self.time = events[0][0]
            while events and events[0][0] == self.time:
                _, _, kind, payload = heapq.heappop(events)
                if kind == TASK_DONE:
                    self._task_done(payload)
                elif kind == EXECUTOR_ARRIVES:
                    self._executor_arrives(payload)
                else:
                    self._job_arrives(*payload)
            if self.num_free > 0 and self._runnable:
                return

    def _job_arrives(self, i: int, spec: JobSpec) -> None:
        job = Job(id=i, spec=spec, arrival=self.time)
        job.stages = [Stage(s, job, waiting_parents=len(s.parents)) for s in spec.stages]
        self.jobs.append(job)
        self.all_jobs.append(job)
        for st in job.stages:
            self._refresh(st)

    def _executor_arrives(self, ex: Executor) -> None:
        ex.moving = False
        ex.stage.moving_in -= 1
        self._start_task(ex, ex.stage)  # the promised task

    def _task_done(self, ex: Executor) -> None:
        stage, job = ex.stage, ex.stage.job
        stage.running -= 1
        stage.finished += 1
        ex.busy, ex.last_stage = False, stage
        if stage.done:
            self._stage_done(stage)
        if job.completion is not None:
            return  # _job_done released the executor
        if stage.unassigned > 0 and job.num_executors <= job.limit:
            self._start_task(ex, stage)
        else:
            ex.stage = None
            job.idle.append(ex)
            self.num_free += 1

    def _stage_done(self, stage: Stage) -> None:
        job = stage.job
        job.finished_stages += 1
        for c in stage.spec.children:
            child = job.stages[c]
            child.waiting_parents -= 1
            self._refresh(child)
        if job.finished_stages == len(job.stages):
            self._job_done(job)

    def _job_done(self, job: Job) -> None:
        job.completion = self.time
        self.jobs.remove(job)
        self._pending_jobs -= 1
        for ex in self.executors:
            if ex.job is job:  # all idle now (every task finished, none promised)
                if ex in job.idle:
                    job.idle.remove(ex)
                else:
                    self.num_free += 1
                ex.job, ex.stage = None, None
                self.pool.append(ex)
        job.idle.clear()
        job.num_executors = 0
