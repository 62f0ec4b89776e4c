"""A trained sequence model (teacher or student) scheduling the simulated cluster.

:class:`SequenceScheduler` is a scheduler like the baselines (``sim -> (stage, limit)``); it
notices a new episode by ``sim.decisions == 0``. Context: decisions are grouped in blocks of
``window`` from the episode's start (the training windows, :mod:`.windows`); the context restarts at
every block. Two ways to decide:

* **streaming** (a backbone with ``init_state``/``step``, the hybrid Mamba student): per decision,
  feed its k stage tokens and its executor token one recurrent step each, read both heads at the
  executor token (pointer over the k stage hidden states kept from those steps), then feed the
  action token (not after a block's last decision: the next one starts a new context). No
  re-encoding: work per decision is constant in the history. The steps go through the
  backbone's streaming decoder (:func:`mamba4net.core.streaming.decoder_for`: for the student,
  prepacked weights and state updated in place), a new one per block. With ``encoding="live"`` (the
  default) the decision's tokens come from :meth:`.tokens.CJSTokenEncoder.live_tokens`, the
  active jobs' graph structure kept until a job arrives or completes (:class:`.graph.JobSetCache`);
  ``encoding="batch"`` builds a one-decision batch as training does (:meth:`decision_tokens`). The
  tokens are the same bit for bit, so the decisions are too (tests check it).
* **re-encoding** (any backbone, e.g. the LLM teacher): per decision, run the model over the
  block's decisions so far and read the newest one.

Both see exactly the same tokens, so they take the same decisions (tests check it).

Return conditioning: the first decision asks for ``target_return`` (job-seconds, negative); before
each later decision the return-to-go rises by the job-seconds accrued since the previous one.
Actions are the argmax of each head. Each decision runs with ``runtime.decision_threads`` torch threads
(1 by default).
"""

from __future__ import annotations

import numpy as np
import torch

from mamba4net.core.runtime import decision_threads
from mamba4net.core.streaming import can_stream, decoder_for

from .graph import JobSetCache, observe
from .pool import accrued_job_seconds
from .windows import Decision, assemble, candidates


class SequenceScheduler:
    def __init__(self, model, *, window: int, max_stages: int, limits: list[int], return_scale: float,
                 target_return: float, mode: str = "auto", encoding: str = "live"):
        if mode not in ("auto", "stream", "reencode"):
            raise ValueError(f"unknown policy mode {mode!r}; expected auto, stream or reencode")
        if encoding not in ("live", "batch"):
            raise ValueError(f"unknown decision encoding {encoding!r}; expected live or batch")
        if mode == "stream" and not can_stream(model):
            raise ValueError(f"{type(model.backbone).__name__} has no recurrent step: use mode 'reencode'")
        self.model, self.window, self.max_stages = model, window, max_stages
        self.limits, self.scale, self.target = list(limits), return_scale, target_return
        self.stream = can_stream(model) if mode == "auto" else mode == "stream"
        self.live = self.stream and encoding == "live"
        self.job_sets = JobSetCache()  # the active jobs' structure, for live encoding
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.t = 0

    def reset(self, sim) -> None:
        self.t, self.last_time = 0, sim.time
        self.rtg = self.target / self.scale
        self.hist: list[Decision] = []
        # built once per episode (packing the weights costs milliseconds); reset at every block
        self.decoder = decoder_for(self.model.backbone, 1) if self.stream else None

    def _accrue(self, sim) -> None:
        jobs = sim.all_jobs
        arrival = np.asarray([j.arrival for j in jobs], dtype=np.float64)
        done = np.asarray([np.inf if j.completion is None else j.completion for j in jobs], dtype=np.float64)
        acc = accrued_job_seconds(np.asarray([self.last_time]), np.asarray([sim.time]), arrival, done)[0]
        self.rtg += acc / self.scale  # reward = -acc; rtg_next = rtg - reward
        self.last_time = sim.time

    @torch.no_grad()
    def __call__(self, sim):
        with decision_threads():
            return self._decide(sim)

    def _decide(self, sim):
        if sim.decisions == 0:
            self.reset(sim)
        else:
            self._accrue(sim)
        step = self.t % self.window
        if step == 0:
            self.hist = []
            if self.stream:
                self.decoder.reset(1)
        structure = self.job_sets(sim.jobs) if self.live else None
        ob = observe(sim, structure)
        cand = candidates(ob.mask.numpy(), ob.node_job.numpy(), self.max_stages)
        d = Decision(ob.x, ob.edge_index, ob.node_job, cand, float(self.rtg), int(cand[0]), 0, step)
        c, level = self._stream(d, structure) if self.stream else self._reencode(d)
        d.act_node, d.level = int(cand[c]), level
        self.hist.append(d)
        self.t += 1
        return ob.stages[int(cand[c])], self.limits[level]

    def _batch(self, samples):
        from mamba4net.core.seeding import move

        return move(assemble(samples, self.window, self.max_stages), self.device)

    def _tokens(self, d: Decision, structure):
        """The decision's tokens before the action (k + 1, D) and its candidates' features."""
        enc = self.model.encoder
        if structure is None:
            return enc.decision_tokens(self._batch([[d]]))
        cand = torch.from_numpy(d.cand).to(self.device)
        return enc.live_tokens(d.x.to(self.device), structure.to(self.device), cand, d.rtg, d.step)

    def _stream(self, d: Decision, structure) -> tuple[int, int]:
        enc, head = self.model.encoder, self.model.head
        tokens, cand_feats = self._tokens(d, structure)  # (k + 1, D)
        hs = torch.cat([self.decoder.step(t[None].to(self.dtype)) for t in tokens])  # (k + 1, D), a step per token
        k = hs.shape[0] - 1
        mask = torch.ones(k, dtype=torch.bool, device=hs.device)
        stage, level = head.scores(hs[k], hs[:k], mask)
        c, lv = int(stage.argmax()), int(level.argmax())
        if d.step == self.window - 1:
            return c, lv  # the block's last decision: its action token would feed a discarded state
        t = torch.tensor([d.step], device=hs.device)
        token = enc.action_token(cand_feats[c : c + 1], torch.tensor([lv], device=hs.device), t)
        self.decoder.step(token.to(self.dtype))
        return c, lv

    def _reencode(self, d: Decision) -> tuple[int, int]:
        pred = self.model(self._batch([self.hist + [d]])).pred[0, len(self.hist)]  # (K + levels,)
        k = len(d.cand)
        return int(pred[:k].argmax()), int(pred[self.max_stages :].argmax())
