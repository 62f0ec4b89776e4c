"""TPC-H job DAGs: loading, validation and the seeded Poisson job stream.

A job is a DAG of stages; a stage is a set of identical tasks whose durations (ms) were profiled
on Spark at several executor counts ("keys"). Each stage has three sample lists per key:

* ``first_wave``: tasks in the first wave of the stage, run by an executor already on the job;
* ``rest_wave``: later tasks of the stage on an executor that just ran one of its tasks;
* ``fresh_durations``: the first task an executor runs after joining the job (JVM warm-up).

As Decima / spark-sched-sim, fresh samples are removed from ``first_wave`` (they were recorded
there too) and a key whose cleaned first wave is empty borrows the nearest lower key's list. The
task count of a stage is ``len(first_wave[k]) + len(rest_wave[k])`` for the first listed key
(7 of the 1,016 stages in the data disagree between keys by a task or two; the first key wins).

Files are the pickle-free ``tpch_json/<scale>/query_<N>.json`` (data README section 2). Any
defect (bad JSON, wrong shapes, a cyclic DAG, missing or non-finite durations) raises a one-line
:class:`~mamba4net.core.errors.DataError` naming the file.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mamba4net.core.errors import DataError

WAVES = ("first_wave", "rest_wave", "fresh_durations")


@dataclass(frozen=True)
class StageSpec:
    """One stage of a job: its task count, duration samples and DAG neighbours (immutable)."""

    index: int
    num_tasks: int
    keys: tuple[int, ...]  # executor counts with samples, ascending
    waves: dict[str, dict[int, tuple[float, ...]]]  # wave -> key -> durations (ms)
    mean_duration: float  # mean over every sample of every wave and key (Decima's rough duration)
    parents: tuple[int, ...]
    children: tuple[int, ...]


@dataclass(frozen=True)
class JobSpec:
    """A job DAG; ``stages`` are indexed by node index (rows/columns of the adjacency matrix)."""

    name: str  # e.g. "q5-10g"
    stages: tuple[StageSpec, ...]

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def total_work(self) -> float:
        """Tasks x mean task duration summed over stages (ms): a rough size of the job."""
        return sum(s.num_tasks * s.mean_duration for s in self.stages)


# ---- loading and validation -----------------------------------------------------------------


def load_job(path: str | Path) -> JobSpec:
    """Read and validate one ``query_<N>.json``; every defect is a DataError naming ``path``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise DataError(f"{path}: cannot read job file ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({str(exc).splitlines()[0]})") from None
    try:
        return parse_job(raw, name=f"q{raw.get('query', '?')}-{raw.get('scale', '?')}" if isinstance(raw, dict) else "?")
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None


def parse_job(raw: Any, name: str = "job") -> JobSpec:
    """Validate a decoded job object (the JSON layout); raises ``ValueError`` with one line."""
    if not isinstance(raw, dict):
        raise ValueError(f"expected a JSON object, got {type(raw).__name__}")
    for key in ("adj_mat", "task_duration"):
        if key not in raw:
            raise ValueError(f"missing key '{key}'")
    adj = raw["adj_mat"]
    if not isinstance(adj, list) or not adj or not all(isinstance(r, list) for r in adj):
        raise ValueError("adj_mat must be a non-empty list of rows")
    n = len(adj)
    if any(len(r) != n for r in adj):
        raise ValueError(f"adj_mat must be square, got {n} rows of lengths {sorted({len(r) for r in adj})}")
    if "num_stages" in raw and raw["num_stages"] != n:
        raise ValueError(f"num_stages is {raw['num_stages']} but adj_mat is {n}x{n}")
    if any(v not in (0, 1) or isinstance(v, bool) for r in adj for v in r):
        raise ValueError("adj_mat entries must be 0 or 1")
    edges = [(i, j) for i in range(n) for j in range(n) if adj[i][j] == 1]
    _check_acyclic(n, edges)

    durations = raw["task_duration"]
    if not isinstance(durations, dict):
        raise ValueError("task_duration must be an object keyed by stage id")
    want = {str(i) for i in range(n)}
    if set(durations) != want:
        missing = sorted(want - set(durations), key=_int_or_big)
        extra = sorted(set(durations) - want, key=_int_or_big)
        what = f"missing stages {missing}" if missing else f"unexpected stages {extra}"
        raise ValueError(f"task_duration must have one entry per stage 0..{n - 1}: {what}")
    parents = [tuple(i for i, j in edges if j == s) for s in range(n)]
    children = [tuple(j for i, j in edges if i == s) for s in range(n)]
    stages = tuple(_parse_stage(s, durations[str(s)], parents[s], children[s]) for s in range(n))
    return JobSpec(name=name, stages=stages)


def _int_or_big(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        return 1 << 60


def _check_acyclic(n: int, edges: list[tuple[int, int]]) -> None:
    indeg = [0] * n
    out: list[list[int]] = [[] for _ in range(n)]
    for i, j in edges:
        indeg[j] += 1
        out[i].append(j)
    ready = [i for i in range(n) if indeg[i] == 0]
    seen = 0
    while ready:
        i = ready.pop()
        seen += 1
        for j in out[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(j)
    if seen < n:
        cyclic = [i for i in range(n) if indeg[i] > 0]
        raise ValueError(f"the stage DAG has a cycle through stages {cyclic}")


def _parse_stage(index: int, raw: Any, parents: tuple[int, ...], children: tuple[int, ...]) -> StageSpec:
    where = f"task_duration['{index}']"
    if not isinstance(raw, dict):
        raise ValueError(f"{where} must be an object with {', '.join(WAVES)}")
    waves: dict[str, dict[int, list[float]]] = {}
    for wave in WAVES:
        if wave not in raw:
            raise ValueError(f"{where} is missing durations '{wave}'")
        if not isinstance(raw[wave], dict) or not raw[wave]:
            raise ValueError(f"{where}['{wave}'] must be a non-empty object keyed by executor count")
        waves[wave] = {}
        for key, samples in raw[wave].items():
            try:
                k = int(key)
            except ValueError:
                raise ValueError(f"{where}['{wave}'] has a non-integer executor count {key!r}") from None
            if k < 1 or not isinstance(samples, list):
                raise ValueError(f"{where}['{wave}']['{key}'] must be a list under a positive executor count")
            if not all(isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) and d >= 0
                       for d in samples):
                raise ValueError(f"{where}['{wave}']['{key}'] holds a duration that is not a finite number >= 0")
            waves[wave][k] = [float(d) for d in samples]
    keys = sorted(waves["first_wave"])
    for wave in ("rest_wave", "fresh_durations"):
        if sorted(waves[wave]) != keys:
            raise ValueError(f"{where}: '{wave}' has executor counts {sorted(waves[wave])}, first_wave has {keys}")
    k0 = int(next(iter(raw["first_wave"])))  # Decima's task count: the first listed key
    num_tasks = len(waves["first_wave"][k0]) + len(waves["rest_wave"][k0])
    if num_tasks < 1:
        raise ValueError(f"{where} has no tasks (empty first_wave and rest_wave at {k0} executors)")
    all_samples = [d for w in WAVES for k in keys for d in waves[w][k]]
    mean = sum(all_samples) / len(all_samples)
    first = _clean_first_wave(waves["first_wave"], waves["fresh_durations"])
    for k in keys:
        if not first[k] and not waves["fresh_durations"][k]:
            raise ValueError(f"{where} has missing durations: neither first_wave nor fresh_durations at {k} executors")
    frozen = {
        "first_wave": {k: tuple(first[k]) for k in keys},
        "rest_wave": {k: tuple(waves["rest_wave"][k]) for k in keys},
        "fresh_durations": {k: tuple(waves["fresh_durations"][k]) for k in keys},
    }
    return StageSpec(index, num_tasks, tuple(keys), frozen, mean, parents, children)


def _clean_first_wave(first: dict[int, list[float]], fresh: dict[int, list[float]]) -> dict[int, list[float]]:
    """First-wave samples minus the fresh ones (as a multiset); empty keys borrow the nearest lower key."""
    clean: dict[int, list[float]] = {}
    for k in sorted(first):
        left = Counter(fresh[k])
        kept = []
        for d in first[k]:
            if left[d] > 0:
                left[d] -= 1
            else:
                kept.append(d)
        clean[k] = kept
    last: list[float] = []
    for k in sorted(clean):
        if not clean[k]:
            clean[k] = list(last)
        last = clean[k]
    return clean


# ---- the job library and the arrival stream ---------------------------------------------------


class JobLibrary:
    """Loads ``<tpch_dir>/<scale>/query_<N>.json`` on first use and keeps it (specs are immutable)."""

    def __init__(self, tpch_dir: str | Path):
        self.tpch_dir = Path(tpch_dir)
        self._cache: dict[tuple[str, int], JobSpec] = {}

    def get(self, scale: str, query: int) -> JobSpec:
        key = (scale, query)
        if key not in self._cache:
            path = self.tpch_dir / scale / f"query_{query}.json"
            if not path.is_file():
                raise DataError(f"{path}: job file not found")
            job = load_job(path)
            self._cache[key] = JobSpec(name=f"q{query}-{scale}", stages=job.stages)
        return self._cache[key]


def job_sequence(library: JobLibrary, seed: int, num_jobs: int, rate: float,
                 scales: list[str], queries: list[int]) -> list[tuple[float, JobSpec]]:
    """``num_jobs`` (arrival ms, job) pairs: the first at t=0, then exponential gaps of mean
    ``1/rate`` ms; each job's query and scale drawn uniformly. Same seed, same sequence."""
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(num_jobs):
        query, scale = rng.choice(queries), rng.choice(scales)
        out.append((t, library.get(scale, query)))
        t += rng.expovariate(rate)
    return out


def constant_job(name: str, num_tasks: list[int], duration: list[float],
                 edges: list[tuple[int, int]] = (), fresh: bool = True) -> JobSpec:
    """A hand-built job whose every task of stage ``s`` lasts exactly ``duration[s]`` ms, whatever
    the wave or executor count: for tests and examples with completion times computable by hand.

    ``fresh=False`` leaves ``fresh_durations`` empty, so an executor's first task on the job lasts
    ``duration[s] + warmup_delay`` (the simulator's fallback, as in Decima).
    """
    n = len(num_tasks)
    adj = [[0] * n for _ in range(n)]
    for i, j in edges:
        adj[i][j] = 1
    td = {str(s): {"first_wave": {"1": [duration[s]] * num_tasks[s]}, "rest_wave": {"1": []},
                   "fresh_durations": {"1": [duration[s]] if fresh else []}} for s in range(n)}
    return parse_job({"adj_mat": adj, "task_duration": td}, name=name)
