"""Cluster state -> a graph batch: one node per stage of every active job, edges parent -> child.

Node features (all scaled to O(1); ``N`` = executors, work in executor-seconds):

====  =========================================================================
0     remaining tasks of the stage, ``log1p``
1     mean task duration of the stage (s), ``log1p``
2     remaining work of the stage (tasks x mean duration, s), ``log1p``
3     executors running or moving to the stage / N
4     executors held by the stage's job / N
5     executors idle at the stage's job / N
6     remaining work of the job (s), ``log1p``
7     1 if the stage can be picked now, else 0
8     free executors in the cluster / N
9     number of active jobs / 10 (load)
====  =========================================================================

A batch is a dict of tensors, the disjoint union of its observations (PyG style), so any task
whose batches carry these keys can use the graph encoder:

* ``graph_x`` (nodes, F), ``graph_edge_index`` (2, E) parent -> child (global node ids);
* ``graph_node_job`` (nodes,) the job (global job id) of each node;
* ``graph_job_sample`` (jobs,) the sample (0..B-1) of each job;
* ``graph_mask`` (nodes,) bool, stages a scheduler may pick now.

The structure of the active jobs (edges, node -> job) changes only when a job arrives or
completes: :class:`JobSet` holds it and :class:`JobSetCache` rebuilds it only then, so a scheduler
that observes every decision (:mod:`.policy`) does not rebuild it each time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .jobs import JobSpec
from .sim import ClusterSim, Job, Stage

NUM_FEATURES = 10
GRAPH_KEYS = ("graph_x", "graph_edge_index", "graph_node_job", "graph_job_sample", "graph_mask")

# id(JobSpec) -> (the spec, its (2, E) local edge index). The entry holds the spec itself, so its id
# cannot be reused by another spec while the entry exists (a freed library's ids would be).
_EDGES: dict[int, tuple[JobSpec, Tensor]] = {}


def _job_edges(spec: JobSpec) -> Tensor:
    hit = _EDGES.get(id(spec))
    if hit is None or hit[0] is not spec:
        pairs = [(s.index, c) for s in spec.stages for c in s.children]
        hit = _EDGES[id(spec)] = (spec, torch.tensor(pairs, dtype=torch.long).T.reshape(2, -1))
    return hit[1]


@dataclass(eq=False)
class JobSet:
    """The structure of the active jobs, in order: fixed until a job arrives or completes."""

    jobs: tuple[Job, ...]
    edge_index: Tensor  # (2, E) parent -> child, node ids of this set
    node_job: Tensor  # (nodes,) index of each node's job 0..J-1

    def __post_init__(self):
        # the set as one graph sample, for message passing without a batch (encoder.ChildrenToParent.plain)
        self.parent, self.child = self.edge_index[0].contiguous(), self.edge_index[1].contiguous()  # (E,), (E,)
        self.job_sample = torch.zeros(len(self.jobs), dtype=torch.long, device=self.node_job.device)  # (J,) sample 0
        self._moved: dict[torch.device, JobSet] = {}

    def to(self, device: torch.device) -> "JobSet":
        """This structure with its tensors on ``device`` (copied once per device, then kept)."""
        if device == self.node_job.device:
            return self
        if device not in self._moved:
            self._moved[device] = JobSet(self.jobs, self.edge_index.to(device), self.node_job.to(device))
        return self._moved[device]


def job_set(jobs) -> JobSet:
    """The :class:`JobSet` of ``jobs`` (the active jobs, arrival order)."""
    jobs = tuple(jobs)
    edges, node_job, offset = [], [], 0
    for j, job in enumerate(jobs):
        edges.append(_job_edges(job.spec) + offset)
        node_job += [j] * len(job.stages)
        offset += len(job.stages)
    edge_index = torch.cat(edges, dim=1) if edges else torch.zeros(2, 0, dtype=torch.long)
    return JobSet(jobs, edge_index, torch.tensor(node_job, dtype=torch.long))


class JobSetCache:
    """The :class:`JobSet` of the active jobs, rebuilt only when they are not the last call's
    (jobs compare by identity: a new episode's jobs are new objects). ``builds`` counts rebuilds."""

    def __init__(self):
        self.last: JobSet | None = None
        self.builds = 0

    def __call__(self, jobs: list[Job]) -> JobSet:
        last = self.last
        if last is None or len(last.jobs) != len(jobs) or any(a is not b for a, b in zip(last.jobs, jobs)):
            self.last = last = job_set(jobs)
            self.builds += 1
        return last


@dataclass
class GraphObs:
    """One scheduling event as tensors, plus the objects needed to decode an action."""

    x: Tensor  # (nodes, F)
    edge_index: Tensor  # (2, E)
    node_job: Tensor  # (nodes,) local job index 0..J-1
    mask: Tensor  # (nodes,) bool
    stages: list[Stage]  # node order
    jobs: list[Job]  # job order

    def batch(self) -> dict[str, Tensor]:
        return collate([self])


def observe(sim: ClusterSim, structure: JobSet | None = None) -> GraphObs:
    """The graph of ``sim``'s scheduling event (features in the module doc). ``structure``: the
    :class:`JobSet` of ``sim.jobs`` when the caller keeps one (a :class:`JobSetCache`)."""
    if structure is None:
        structure = job_set(sim.jobs)
    n_exec = float(sim.num_executors)
    runnable = set(sim.runnable_stages())
    rows, stages = [], []
    free, load = sim.num_free / n_exec, len(sim.jobs) / 10.0
    for job in sim.jobs:
        job_work = math.log1p(job.remaining_work / 1000.0)
        held, idle = job.num_executors / n_exec, len(job.idle) / n_exec
        for st in job.stages:
            mean_s = st.spec.mean_duration / 1000.0
            rem = st.remaining_tasks
            rows.append((math.log1p(rem), math.log1p(mean_s), math.log1p(rem * mean_s),
                         (st.running + st.moving_in) / n_exec, held, idle, job_work,
                         1.0 if st in runnable else 0.0, free, load))
            stages.append(st)
    x = torch.tensor(rows, dtype=torch.float32).reshape(-1, NUM_FEATURES)
    mask = x[:, 7] > 0.5
    return GraphObs(x, structure.edge_index, structure.node_job, mask, stages, list(sim.jobs))


def collate(observations: list[GraphObs]) -> dict[str, Tensor]:
    """Disjoint union of observations: node and job ids offset per sample (see module doc)."""
    xs, eis, njs, masks, samples = [], [], [], [], []
    n_off = j_off = 0
    for b, ob in enumerate(observations):
        n_jobs = len(ob.jobs)
        xs.append(ob.x)
        eis.append(ob.edge_index + n_off)
        njs.append(ob.node_job + j_off)
        masks.append(ob.mask)
        samples.append(torch.full((n_jobs,), b, dtype=torch.long))
        n_off += ob.x.shape[0]
        j_off += n_jobs
    return {
        "graph_x": torch.cat(xs),  # (nodes, F)
        "graph_edge_index": torch.cat(eis, dim=1),  # (2, E)
        "graph_node_job": torch.cat(njs),  # (nodes,)
        "graph_job_sample": torch.cat(samples),  # (jobs,)
        "graph_mask": torch.cat(masks),  # (nodes,)
    }
