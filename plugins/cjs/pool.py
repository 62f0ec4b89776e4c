"""Experience pools for CJS: every scheduling decision of baseline schedulers, stored without pickle.

A pool holds E episodes (one scheduler on one seeded job sequence each) of D decisions in all.
Observations are the graph features of :func:`.graph.observe` (one node per stage of every active
job, edges parent -> child), stored flat with offsets. On disk a pool is two files side by side:

* ``<name>.safetensors``:

  ==============  ==============  =====================================================
  ``x``           float32 (N, F)  node features of every decision, concatenated
  ``node_job``    int64 (N,)      job of each node, local to its decision (0..J_d-1)
  ``mask``        bool (N,)       the node is a stage the scheduler could pick
  ``edge_index``  int64 (2, M)    parent -> child, node ids local to the decision
  ``node_ptr``    int64 (D+1,)    decision d's nodes are ``node_ptr[d]:node_ptr[d+1]``
  ``edge_ptr``    int64 (D+1,)    decision d's edges are ``edge_ptr[d]:edge_ptr[d+1]``
  ``action_node`` int64 (D,)      picked stage, as a local node index of decision d
  ``level``       int64 (D,)      parallelism-limit level (nearest of ``limit_levels`` that
                                  the simulator applies unchanged)
  ``reward``      float32 (D,)    minus the job-seconds accrued until the next decision
                                  (until the last completion for an episode's last one)
  ``done``        bool (D,)       True at an episode's last decision
  ``time``        float64 (D,)    simulated time of the decision (ms)
  ``episode_ptr`` int64 (E+1,)    episode e's decisions are ``episode_ptr[e]:episode_ptr[e+1]``
  ==============  ==============  =====================================================

* ``<name>.json``: ``{"format": 1, "meta": {...how it was made...}, "policy": [E names],
  "seed": [E sequence seeds], "avg_jct_s": [E], "jobs": [E]}``.

The reward is Decima's: the sum over an episode is minus the total JCT (seconds) of its jobs, so
the return-to-go at a decision is minus the job-time still to accrue.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mamba4net.core.errors import DataError
from mamba4net.core.progress import progress_bar
from mamba4net.plugins.seqpolicy import StoredPool

from .graph import NUM_FEATURES, observe



def limit_values(num_executors: int, levels: int) -> list[int]:
    """The parallelism limit of each level: N/levels, 2N/levels, ..., N (rounded, at least 1)."""
    return [max(1, round(num_executors * (i + 1) / levels)) for i in range(levels)]


def nearest_level(limit: int, values: list[int], least: int = 1) -> int:
    """The level whose limit is nearest to ``limit`` among those of at least ``least`` (the limit
    the simulator applies at least, :meth:`~.sim.ClusterSim.min_limit`); ties go to the lower."""
    v = np.asarray(values)
    dist = np.abs(v - max(limit, least)).astype(np.float64)
    dist[v < least] = np.inf  # the top level is N >= least, so one level is always left
    return int(np.argmin(dist))


def accrued_job_seconds(t0: np.ndarray, t1: np.ndarray, arrival: np.ndarray, completion: np.ndarray) -> np.ndarray:
    """Job-seconds accrued in each interval ``[t0[k], t1[k]]`` (ms) by jobs in the system
    (arrived, not completed; ``completion`` may be +inf for a job still running)."""
    start = np.maximum(t0[:, None], arrival[None, :])
    end = np.minimum(t1[:, None], completion[None, :])
    return np.clip(end - start, 0, None).sum(1) / 1000.0


@dataclass
class ExperiencePool(StoredPool):
    x: np.ndarray
    node_job: np.ndarray
    mask: np.ndarray
    edge_index: np.ndarray
    node_ptr: np.ndarray
    edge_ptr: np.ndarray
    action_node: np.ndarray
    level: np.ndarray
    reward: np.ndarray
    done: np.ndarray
    time: np.ndarray
    episode_ptr: np.ndarray
    policy: list[str]
    seed: list[int]
    avg_jct_s: list[float]
    jobs: list[int]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_ptr) - 1

    @property
    def num_decisions(self) -> int:
        return len(self.action_node)

    @classmethod
    def from_episodes(cls, parts: list[dict[str, Any]], policy: list[str], seed: list[int],
                      meta: dict[str, Any]) -> "ExperiencePool":
        """A pool of episodes in :func:`record_episode`'s form (pointers local to each)."""
        cat = {k: np.concatenate([p[k] for p in parts], axis=1 if k == "edge_index" else 0)
               for k in ("x", "node_job", "mask", "edge_index", "action_node", "level", "reward", "done", "time")}
        ptr = lambda sizes: np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # noqa: E731
        return cls(**cat, node_ptr=ptr(np.concatenate([p["nodes"] for p in parts])),
                   edge_ptr=ptr(np.concatenate([p["edges"] for p in parts])),
                   episode_ptr=ptr([len(p["action_node"]) for p in parts]), policy=list(policy), seed=list(seed),
                   avg_jct_s=[float(p["avg_jct_s"]) for p in parts], jobs=[int(p["jobs"]) for p in parts], meta=meta)

    def episode(self, e: int) -> dict[str, Any]:
        """Episode ``e`` in :func:`record_episode`'s form."""
        d0, d1 = self.episode_ptr[e], self.episode_ptr[e + 1]
        n0, n1, m0, m1 = self.node_ptr[d0], self.node_ptr[d1], self.edge_ptr[d0], self.edge_ptr[d1]
        return {"x": self.x[n0:n1], "node_job": self.node_job[n0:n1], "mask": self.mask[n0:n1],
                "edge_index": self.edge_index[:, m0:m1], "nodes": np.diff(self.node_ptr[d0:d1 + 1]),
                "edges": np.diff(self.edge_ptr[d0:d1 + 1]),
                **{k: getattr(self, k)[d0:d1] for k in ("action_node", "level", "reward", "done", "time")},
                "avg_jct_s": self.avg_jct_s[e], "jobs": self.jobs[e]}

    @classmethod
    def concat(cls, pools: list["ExperiencePool"], keep: np.ndarray | None = None) -> "ExperiencePool":
        """One pool of every episode of ``pools`` in order (only those numbered ``keep`` in that
        order, if given); ``meta`` lists the pools'."""
        index = [(p, e) for p in pools for e in range(p.num_episodes)]
        if keep is not None:
            index = [index[int(i)] for i in keep]
        return cls.from_episodes([p.episode(e) for p, e in index], [p.policy[e] for p, e in index],
                                 [p.seed[e] for p, e in index], {"parts": [p.meta for p in pools]})

    def episode_returns(self) -> np.ndarray:
        """(E,) the sum of each episode's rewards (minus its total JCT, seconds)."""
        csum = np.concatenate([[0.0], np.cumsum(self.reward, dtype=np.float64)])
        return csum[self.episode_ptr[1:]] - csum[self.episode_ptr[:-1]]

    ARRAYS = ("x", "node_job", "mask", "edge_index", "node_ptr", "edge_ptr", "action_node", "level",
              "reward", "done", "time", "episode_ptr")
    LISTS = ("policy", "seed", "avg_jct_s", "jobs")
    FINITE = ("x", "reward")

    @classmethod
    def check(cls, path: Path, a: dict[str, np.ndarray], episodes: int) -> None:
        D, N, M = len(a["action_node"]), len(a["x"]), a["edge_index"].shape[-1]
        E = len(a["episode_ptr"]) - 1
        ok = (a["x"].ndim == 2 and a["x"].shape[1] == NUM_FEATURES and a["node_job"].shape == (N,)
              and a["mask"].shape == (N,) and a["edge_index"].shape == (2, M) and a["node_ptr"].shape == (D + 1,)
              and a["edge_ptr"].shape == (D + 1,)
              and all(a[k].shape == (D,) for k in ("level", "reward", "done", "time"))
              and E == episodes and E >= 1)
        if not ok:
            raise DataError(f"{path}: experience-pool arrays disagree in shape")
        for name, total in (("node_ptr", N), ("edge_ptr", M), ("episode_ptr", D)):
            ptr = a[name]
            if ptr[0] != 0 or ptr[-1] != total or (np.diff(ptr) < 0).any():
                raise DataError(f"{path}: experience-pool offsets {name} are inconsistent")
        sizes = np.diff(a["node_ptr"])
        if (a["action_node"] < 0).any() or (a["action_node"] >= sizes).any():
            raise DataError(f"{path}: experience-pool actions point outside their decision's stages")
        if (a["level"] < 0).any() or (a["node_job"] < 0).any():
            raise DataError(f"{path}: experience pool holds negative limit levels or job indices")
        if M:  # each decision's edges join nodes of that decision (local indices)
            own = np.repeat(sizes, np.diff(a["edge_ptr"]))  # (M,) node count of each edge's decision
            if (a["edge_index"] < 0).any() or (a["edge_index"] >= own).any():
                raise DataError(f"{path}: experience-pool edges point outside their decision's stages")
        ends = np.zeros(D, dtype=bool)
        ends[a["episode_ptr"][1:] - 1] = True
        if not np.array_equal(a["done"].astype(bool), ends):
            raise DataError(f"{path}: experience-pool done flags do not match the episode offsets")


def record_episode(sim, scheduler, jobs, seed: int, limits: list[int]) -> dict[str, Any]:
    """Run one episode under ``scheduler`` and record every decision (arrays as in the module doc,
    pointers local to the episode)."""
    sim.reset(jobs, seed=seed)
    xs, njs, masks, eis, acts, levels, times = [], [], [], [], [], [], []
    while not sim.done:
        ob = observe(sim)
        stage, limit = scheduler(sim)
        least = sim.min_limit(stage.job)  # the level recorded is one the simulator applies as it is
        xs.append(ob.x.numpy())
        njs.append(ob.node_job.numpy())
        masks.append(ob.mask.numpy())
        eis.append(ob.edge_index.numpy())
        acts.append(ob.stages.index(stage))
        levels.append(nearest_level(limit, limits, least))
        times.append(sim.time)
        sim.step(stage, limit)
    result = sim.result()
    t = np.asarray(times, dtype=np.float64)
    arrival = np.asarray([j.arrival for j in sim.all_jobs], dtype=np.float64)
    completion = np.asarray([j.completion for j in sim.all_jobs], dtype=np.float64)
    t_next = np.concatenate([t[1:], [completion.max()]])
    reward = -accrued_job_seconds(t, t_next, arrival, completion)
    done = np.zeros(len(t), dtype=bool)
    done[-1] = True
    return {
        "x": np.concatenate(xs).astype(np.float32), "node_job": np.concatenate(njs).astype(np.int64),
        "mask": np.concatenate(masks).astype(bool), "edge_index": np.concatenate(eis, axis=1).astype(np.int64),
        "nodes": np.asarray([len(v) for v in xs]), "edges": np.asarray([e.shape[1] for e in eis]),
        "action_node": np.asarray(acts, dtype=np.int64), "level": np.asarray(levels, dtype=np.int64),
        "reward": reward.astype(np.float32), "done": done, "time": t, "avg_jct_s": result.avg_jct_s,
        "jobs": len(result.jct_s),
    }


def generate_pool(cluster, library, schedulers: dict[str, Any], *, episodes: int, jobs: int, seeds: list[int],
                  limit_levels: int, meta: dict | None = None, progress: bool = True) -> ExperiencePool:
    """Every scheduler in ``schedulers`` (name -> ``sim -> (stage, limit)``) plays the sequence of
    every seed in ``seeds`` (``len(seeds) == episodes``; the same jobs, arrival times and duration
    draws for each)."""
    from .evaluation import episode_jobs, make_sim

    if len(seeds) != episodes:
        raise ValueError(f"{episodes} episodes need {episodes} seeds, got {len(seeds)}")
    if not schedulers:
        raise ValueError("an experience pool needs at least one scheduler")
    limits = limit_values(cluster.num_executors, limit_levels)
    sim = make_sim(cluster)
    parts: list[dict[str, Any]] = []
    names, used_seeds = [], []
    bar = progress_bar(total=episodes * len(schedulers), desc="cjs experience pool", enabled=progress)
    for seed in seeds:
        seq = episode_jobs(cluster, library, seed, jobs)
        for name, scheduler in schedulers.items():
            parts.append(record_episode(sim, scheduler, seq, seed, limits))
            names.append(name)
            used_seeds.append(seed)
            bar.update(1)
    bar.close()
    return ExperiencePool.from_episodes(parts, names, used_seeds, {
        "policies": list(schedulers), "episodes": episodes, "jobs": jobs, "limit_levels": limit_levels,
        "limits": limits, **(meta or {})})
