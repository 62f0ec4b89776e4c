"""Decisions -> token-layout batches for return-conditioned CJS sequence policies.

A sample is a window of up to ``W`` consecutive decisions of one episode. Each decision ``d``
becomes ``k_d + 2`` tokens, packed one after another with no padding inside a sample:

    [stage_1 .. stage_k_d, executor_d, action_d]

* ``stage_i``: one token per candidate stage, ``k_d = min(runnable stages, K)``. Candidates are
  ranked by :func:`candidates`: the first runnable stage of every job (arrival order), then the
  other runnable stages (node order), cut at ``K = max_stages``. Every rule scheduler picks a job's
  first runnable stage, so its actions stay among the candidates while at most K jobs compete.
* ``executor_d``: the return-to-go and the cluster summary (free executors, active jobs, the global
  graph embedding); the decision is read here: the stage head points from it at the stage tokens,
  the limit head reads it alone.
* ``action_d``: the picked stage's embedding plus the limit level's; the next decision sees it.

Samples are right-padded to the longest one in the batch (the encoder zero-fills); padded
decisions (a window cut by its episode's end) have ``dec_mask = False`` and are ignored by losses.

Windows are cut at every ``stride`` decisions from each episode's start; with ``stride = W`` (the
default) they are exactly the context blocks the policies use when they schedule (see
:mod:`.policy`): the context restarts every ``W`` decisions, so training and acting see the same
contexts.

Batch keys (``n`` real decisions in the batch, ``Nn`` nodes; graph keys as in :mod:`.graph`):

==================  ===========  ===============================================================
``graph_*``                      the decisions' graphs, disjoint union (job -> decision index)
``dec_index``       (B, W)       row of each decision among the ``n`` (-1: padding)
``dec_mask``        (B, W)       a real decision
``dec_feat``        (n, 2)       free executors / N, active jobs / 10
``rtg``             (B, W)       return-to-go / return_scale
``step``            (B, W)       position in the window (0..W-1)
``cand_node``       (B, W, K)    global node index of each candidate (0 where absent)
``cand_mask``       (B, W, K)    a real candidate
``action``          (B, W)       candidate index of the taken stage (-1: not a candidate / pad)
``act_node``        (B, W)       global node index of the taken stage
``level``           (B, W)       limit level taken
``stage_pos``       (B, W, K)    token position of each candidate
``exec_pos``        (B, W)       token position of the executor token
``act_pos``         (B, W)       token position of the action token
``length``          (B,)         tokens of each sample
==================  ===========  ===============================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mamba4net.plugins.seqpolicy import episode_windows, returns_to_go

from .graph import NUM_FEATURES


def candidates(mask: np.ndarray, node_job: np.ndarray, k: int) -> np.ndarray:
    """Local node indices of the candidate stages, ranked (see module doc), at most ``k``."""
    idx = np.flatnonzero(mask)
    jobs = node_job[idx]
    first = np.ones(len(idx), dtype=bool)
    first[1:] = jobs[1:] != jobs[:-1]
    return np.concatenate([idx[first], idx[~first]])[:k]


@dataclass
class Decision:
    """One decision's inputs (and, once taken, its action)."""

    x: Tensor  # (n, F)
    edge_index: Tensor  # (2, e) local
    node_job: Tensor  # (n,) local
    cand: np.ndarray  # (k,) local node indices
    rtg: float  # already divided by return_scale
    act_node: int = 0  # local node index of the taken stage
    level: int = 0
    step: int = 0  # position in the window / context block


def assemble(samples: list[list[Decision]], window: int, max_stages: int) -> dict[str, Tensor]:
    """Samples of decisions -> a batch (keys in the module doc)."""
    B, W, K = len(samples), window, max_stages
    xs, eis, njs, job_dec, dec_feat = [], [], [], [], []
    dec_index = torch.full((B, W), -1, dtype=torch.long)
    rtg = torch.zeros(B, W)
    step = torch.zeros(B, W, dtype=torch.long)
    cand_node = torch.zeros(B, W, K, dtype=torch.long)
    cand_mask = torch.zeros(B, W, K, dtype=torch.bool)
    action = torch.full((B, W), -1, dtype=torch.long)
    act_node = torch.zeros(B, W, dtype=torch.long)
    level = torch.zeros(B, W, dtype=torch.long)
    stage_pos = torch.zeros(B, W, K, dtype=torch.long)
    exec_pos = torch.zeros(B, W, dtype=torch.long)
    act_pos = torch.zeros(B, W, dtype=torch.long)
    length = torch.zeros(B, dtype=torch.long)
    n_off = j_off = n_dec = 0
    for b, sample in enumerate(samples):
        if len(sample) > W:
            raise ValueError(f"a sample of {len(sample)} decisions does not fit a window of {W}")
        pos = 0
        for w, d in enumerate(sample):
            n = d.x.shape[0]
            n_jobs = int(d.node_job.max()) + 1
            xs.append(d.x)
            eis.append(d.edge_index + n_off)
            njs.append(d.node_job + j_off)
            job_dec.append(torch.full((n_jobs,), n_dec, dtype=torch.long))
            dec_feat.append(d.x[0, 8:10])
            k = len(d.cand)
            cand = torch.as_tensor(d.cand, dtype=torch.long)
            cand_node[b, w, :k] = cand + n_off
            cand_mask[b, w, :k] = True
            hit = np.flatnonzero(d.cand == d.act_node)
            action[b, w] = int(hit[0]) if len(hit) else -1
            act_node[b, w] = d.act_node + n_off
            level[b, w] = d.level
            rtg[b, w] = d.rtg
            step[b, w] = d.step
            dec_index[b, w] = n_dec
            stage_pos[b, w, :k] = torch.arange(pos, pos + k)
            exec_pos[b, w] = pos + k
            act_pos[b, w] = pos + k + 1
            pos += k + 2
            n_off += n
            j_off += n_jobs
            n_dec += 1
        length[b] = pos
    return {
        "graph_x": torch.cat(xs).reshape(-1, NUM_FEATURES),
        "graph_edge_index": torch.cat(eis, dim=1) if eis else torch.zeros(2, 0, dtype=torch.long),
        "graph_node_job": torch.cat(njs),
        "graph_job_sample": torch.cat(job_dec),
        "dec_index": dec_index, "dec_mask": dec_index >= 0, "dec_feat": torch.stack(dec_feat),
        "rtg": rtg, "step": step, "cand_node": cand_node, "cand_mask": cand_mask, "action": action,
        "act_node": act_node, "level": level, "stage_pos": stage_pos, "exec_pos": exec_pos,
        "act_pos": act_pos, "length": length,
    }


class PoolWindows:
    """A split of the CJS task for the trainer (``TaskData``): windows over an experience pool."""

    def __init__(self, pool, *, window: int, stride: int | None, max_stages: int, return_scale: float):
        self.window, self.max_stages = window, max_stages
        stride = stride or window
        self.pool = pool
        self.x = torch.from_numpy(np.ascontiguousarray(pool.x))
        self.node_job = torch.from_numpy(np.ascontiguousarray(pool.node_job))
        self.edge_index = torch.from_numpy(np.ascontiguousarray(pool.edge_index))
        self.rtg = (returns_to_go(pool.reward, pool.episode_ptr) / return_scale).astype(np.float32)  # (D,)
        np_ptr, e_ptr = pool.node_ptr, pool.edge_ptr
        self.cands = [candidates(pool.mask[np_ptr[d]:np_ptr[d + 1]], pool.node_job[np_ptr[d]:np_ptr[d + 1]], max_stages)
                      for d in range(pool.num_decisions)]
        self.starts, self.ends = episode_windows(pool.episode_ptr, window, stride)
        in_cap = [pool.action_node[d] in self.cands[d] for d in range(pool.num_decisions)]
        self.action_coverage = float(np.mean(in_cap)) if in_cap else 1.0

    def __len__(self) -> int:
        return len(self.starts)

    def decision(self, d: int, step: int) -> Decision:
        p = self.pool
        n0, n1, e0, e1 = p.node_ptr[d], p.node_ptr[d + 1], p.edge_ptr[d], p.edge_ptr[d + 1]
        return Decision(self.x[n0:n1], self.edge_index[:, e0:e1], self.node_job[n0:n1], self.cands[d],
                        float(self.rtg[d]), int(p.action_node[d]), int(p.level[d]), step)

    def batch(self, indices: Tensor) -> dict[str, Tensor]:
        samples = []
        for i in indices.tolist():
            s, e = int(self.starts[i]), int(self.ends[i])
            samples.append([self.decision(d, d - s) for d in range(s, e)])
        return assemble(samples, self.window, self.max_stages)
