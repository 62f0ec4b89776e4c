"""A trained sequence model (teacher or student) scheduling the simulated cluster.

:class:`SequenceScheduler` is a scheduler like the baselines (``sim -> (stage, limit)``); it
notices a new episode by ``sim.decisions == 0``. The episode loop, the return conditioning and the
two ways to decide are the shared :class:`~mamba4net.plugins.seqpolicy.ReturnConditionedPolicy`,
with context *blocks*: decisions are grouped in blocks of ``window`` from the episode's start (the
training windows, :mod:`.windows`) and the context restarts at every block. This module says what
a CJS decision is:

* **streaming** (the hybrid Mamba student; the LLM teacher too, from a KV cache of the block,
  since the context restarts at each block): the decision's k stage tokens and its executor token
  go through the backbone's streaming decoder one step each; both heads read the executor token's
  hidden state (the stage head a pointer over the k stage hidden states kept from those steps);
  then the action token is stepped in (not after a block's last decision). With
  ``encoding="live"`` (the default) the tokens come from
  :meth:`.tokens.CJSTokenEncoder.live_tokens`, the active jobs' graph structure kept until a job
  arrives or completes (:class:`.graph.JobSetCache`); ``encoding="batch"`` builds a one-decision
  batch as training does. The tokens are the same bit for bit, so the decisions are too (tests
  check it).
* **re-encoding** (any backbone, ``mode="reencode"``): the model runs over the block's decisions
  so far and reads the newest one.

Return conditioning: the first decision asks for ``target_return`` (job-seconds, negative); before
each later decision the return still asked for rises by the job-seconds accrued since the previous
one (the reward is minus them). Actions are the argmax of each head, the level's among the levels
the simulator applies as they are (all, or with ``limit_above_held`` those above the chosen job's
executors: Decima's mask), so the action token carries the limit that took effect.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mamba4net.core.streaming import can_stream  # noqa: F401  (re-exported: tests and callers use it)
from mamba4net.plugins.seqpolicy import ReturnConditionedPolicy

from .graph import JobSetCache, observe
from .pool import accrued_job_seconds
from .windows import Decision, assemble, candidates


class Pending(NamedTuple):
    """A decision being taken: its inputs, the active jobs' structure (live encoding), the stages
    its node indices stand for and the simulator (for the lowest limit it applies)."""

    d: Decision
    structure: object | None
    stages: list
    sim: object


class SequenceScheduler(ReturnConditionedPolicy):
    def __init__(self, model, *, window: int, max_stages: int, limits: list[int], return_scale: float,
                 target_return: float, mode: str = "auto", encoding: str = "live"):
        if encoding not in ("live", "batch"):
            raise ValueError(f"unknown decision encoding {encoding!r}; expected live or batch")
        super().__init__(model, window=window, return_scale=return_scale, target_return=target_return,
                         mode=mode, context="blocks", rtg_dtype=np.float64)
        self.max_stages, self.limits = max_stages, list(limits)
        self.live = self.stream and encoding == "live"
        self.job_sets = JobSetCache()  # the active jobs' structure, for live encoding
        self.last_time = 0.0

    def __call__(self, sim):
        if sim.decisions == 0:
            self.start_episode(1)  # the decoder is reset (built again only after the weights change)
            self.last_time = sim.time
        else:
            self.spend(-self._accrued(sim))
        stage, level, _ = self.decide(sim)
        return stage, self.limits[level]

    def _accrued(self, sim) -> float:
        """Job-seconds accrued by the jobs in the system since the previous decision."""
        jobs = sim.all_jobs
        arrival = np.asarray([j.arrival for j in jobs], dtype=np.float64)
        done = np.asarray([np.inf if j.completion is None else j.completion for j in jobs], dtype=np.float64)
        acc = accrued_job_seconds(np.asarray([self.last_time]), np.asarray([sim.time]), arrival, done)[0]
        self.last_time = sim.time
        return float(acc)

    # --- ReturnConditionedPolicy -------------------------------------------------------------
    def observe_decision(self, sim, step: int) -> Pending:
        structure = self.job_sets(sim.jobs) if self.live else None
        ob = observe(sim, structure)
        cand = candidates(ob.mask.numpy(), ob.node_job.numpy(), self.max_stages)
        d = Decision(ob.x, ob.edge_index, ob.node_job, cand, float(self.rtg.value[0]), int(cand[0]), 0, step)
        return Pending(d, structure, ob.stages, sim)

    def decision_tokens(self, p: Pending) -> tuple[Tensor, Tensor]:
        """The decision's tokens before the action (1, k + 1, D) and its candidates' features."""
        d, structure = p.d, p.structure
        enc = self.model.encoder
        if structure is None:
            tokens, cand_feats = enc.decision_tokens(self._batch([[d]]))
        else:
            cand = torch.from_numpy(d.cand).to(self.device)
            tokens, cand_feats = enc.live_tokens(d.x.to(self.device), structure.to(self.device), cand, d.rtg, d.step)
        return tokens[None], cand_feats

    def read(self, hidden: list[Tensor], p: Pending, cand_feats) -> tuple[object, int, int]:
        hs = torch.cat(hidden)  # (k + 1, D)
        k = hs.shape[0] - 1
        stage, level = self.model.head.scores(hs[k], hs[:k], torch.ones(k, dtype=torch.bool, device=hs.device))
        return self._take(p, int(stage.argmax()), level)

    def action_token(self, action, p: Pending, cand_feats) -> Tensor:
        d, c = p.d, action[2]
        t = torch.tensor([d.step], device=cand_feats.device)
        return self.model.encoder.action_token(cand_feats[c : c + 1], torch.tensor([d.level], device=t.device), t)

    def reencode(self, history: list[Decision], p: Pending) -> tuple[object, int, int]:
        d = p.d
        pred = self.model(self._batch([history + [d]])).pred[0, len(history)]  # (K + levels,)
        return self._take(p, int(pred[: len(d.cand)].argmax()), pred[self.max_stages :])

    def record(self, p: Pending, action) -> Decision:
        return p.d

    def _take(self, p: Pending, c: int, level_logits: Tensor) -> tuple[object, int, int]:
        """Fill in the decision's action: candidate ``c`` and the best level the simulator applies
        unchanged for its job; (stage, level, candidate index)."""
        node = int(p.d.cand[c])
        stage = p.stages[node]
        least = p.sim.min_limit(stage.job)
        if least > 1:
            valid = torch.as_tensor([v >= least for v in self.limits], device=level_logits.device)
            level_logits = level_logits.masked_fill(~valid, float("-inf"))
        p.d.act_node, p.d.level = node, int(level_logits.argmax())
        return stage, p.d.level, c

    def _batch(self, samples):
        from mamba4net.core.seeding import move

        return move(assemble(samples, self.window, self.max_stages), self.device)
