"""Decima-style learned scheduler: a GNN policy trained by policy gradient in the simulator.

Policy (after Decima, Mao et al. SIGCOMM'19): the :class:`~.encoder.GraphEncoder` embeds every
stage, job and the whole cluster; a stage score ``MLP([node, job, global])`` gives a softmax over
the pickable stages, and a limit score ``MLP([job, global])`` of the picked stage's job gives a
softmax over ``limit_levels`` evenly spaced parallelism limits (N/levels, 2N/levels, ..., N),
over the levels the simulator applies as they are (with ``limit_above_held``: those above the
job's executors, capped at N; Decima's own mask, see :mod:`.sim`).

Training (REINFORCE): the reward is minus the number of jobs in the system integrated over time,
so the return-to-go at a decision taken at time ``t`` is ``-sum_j (c_j - max(t, a_j))^+`` (in
seconds: the JCT still to be accrued). Each iteration runs ``rollouts`` sampled episodes on one
job sequence (train split, new sequence per iteration); the baseline at time ``t`` is the mean
return-to-go at ``t`` over those rollouts (Decima's input-dependent baseline), and advantages
are scaled by their standard deviation. An entropy bonus keeps exploration up. Every
``valid_every`` iterations the greedy policy is scored on the valid split and the best weights
are kept. Budget: ``iterations`` or ``budget_s`` seconds, whichever comes first; training stops
before an iteration (plus its closing validation) that would not fit in what is left of the
budget, judged by the mean iteration time so far.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from mamba4net.core.progress import progress_bar

from .config import ClusterParams, DecimaParams
from .encoder import GraphEncoder, _mlp
from .evaluation import SPLIT_SEEDS, episode_jobs, evaluate_scheduler, make_sim
from .graph import NUM_FEATURES, GraphObs, collate, observe
from .jobs import JobLibrary
from .pool import nearest_level
from .schedulers import RULES
from .sim import ClusterSim, Stage


@contextmanager
def single_thread() -> Iterator[None]:
    """Tiny per-decision forwards run far faster on one thread (no pool hand-offs), on a busy
    machine by an order of magnitude or more (measured: 4.6 ms vs 158 ms per forward)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def segment_log_softmax(logits: Tensor, mask: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Log-softmax of ``logits`` within each group over the masked entries (-inf elsewhere)."""
    masked = logits.masked_fill(~mask, float("-inf"))
    top = masked.new_full((n_groups,), float("-inf")).scatter_reduce(0, group, masked, "amax")
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top)).detach()
    shifted = masked - top[group]
    total = shifted.new_zeros(n_groups).index_add(0, group, shifted.exp())
    return shifted - total.log()[group]


class DecimaPolicy(nn.Module):
    """Graph batch -> (stage log-probs (nodes,), limit log-probs (jobs, levels))."""

    def __init__(self, num_executors: int, hidden: int = 32, rounds: int = 4, limit_levels: int = 10):
        super().__init__()
        self.encoder = GraphEncoder(NUM_FEATURES, hidden, rounds)
        self.stage_head = _mlp(3 * hidden, hidden, 1)
        self.limit_head = _mlp(2 * hidden, hidden, limit_levels)
        levels = [max(1, round(num_executors * (i + 1) / limit_levels)) for i in range(limit_levels)]
        self.register_buffer("limits", torch.tensor(levels, dtype=torch.long))

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        node, job, glob = self.encoder(batch)  # (nodes, H), (jobs, H), (B, H)
        node_job, job_sample = batch["graph_node_job"], batch["graph_job_sample"]
        node_sample = job_sample[node_job]  # (nodes,)
        score = self.stage_head(torch.cat([node, job[node_job], glob[node_sample]], -1)).squeeze(-1)  # (nodes,)
        stage_logp = segment_log_softmax(score, batch["graph_mask"], node_sample, glob.shape[0])
        limit_logp = torch.log_softmax(self.limit_head(torch.cat([job, glob[job_sample]], -1)), -1)  # (jobs, L)
        return stage_logp, limit_logp


class DecimaBaseline:
    """The ``decima`` baseline: ``fit`` trains, calling it schedules greedily (argmax)."""

    name = "decima"

    def __init__(self, params: DecimaParams | None = None, cluster: ClusterParams | None = None):
        self.params = params or DecimaParams()
        self.cluster = cluster or ClusterParams()
        self.fit_info: dict[str, Any] = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.params.seed)
            self.policy = DecimaPolicy(self.cluster.num_executors, self.params.hidden, self.params.rounds,
                                       self.params.limit_levels)
        self.policy.eval()

    # -- acting --
    @staticmethod
    def _masked(limit_logp: Tensor, least: Tensor, limits: Tensor) -> Tensor:
        """Limit log-probs ``(..., L)`` renormalised over the levels of at least ``least`` (...,)
        (returned as they are where every level is)."""
        invalid = limits < least[..., None]
        if not invalid.any():
            return limit_logp
        return limit_logp.masked_fill(invalid, float("-inf")).log_softmax(-1)

    @torch.no_grad()
    def act(self, ob: GraphObs, generator: torch.Generator | None = None,
            sim: ClusterSim | None = None) -> tuple[int, int]:
        """(node index, limit level) for one observation: sampled with ``generator``, else argmax;
        the level among those ``sim`` applies unchanged (all without a simulator)."""
        stage_logp, limit_logp = self.policy(ob.batch())
        if generator is None:
            node = int(stage_logp.argmax())
        else:
            node = int(torch.multinomial(stage_logp.exp(), 1, generator=generator))
        row = limit_logp[ob.node_job[node]]
        if sim is not None:
            row = self._masked(row, torch.tensor(sim.min_limit(ob.stages[node].job)), self.policy.limits)
        level = int(row.argmax()) if generator is None else int(torch.multinomial(row.exp(), 1, generator=generator))
        return node, level

    def __call__(self, sim: ClusterSim) -> tuple[Stage, int]:
        ob = observe(sim)
        with single_thread():
            node, level = self.act(ob, sim=sim)
        return ob.stages[node], int(self.policy.limits[level])

    # -- training --
    def _rollout(self, sim: ClusterSim, jobs, seed: int, gen: torch.Generator) -> dict[str, Any]:
        sim.reset(jobs, seed=seed)
        obs, nodes, levels, least, times = [], [], [], [], []
        while not sim.done:
            ob = observe(sim)
            node, level = self.act(ob, gen, sim)
            obs.append(ob)
            nodes.append(node)
            levels.append(level)
            least.append(sim.min_limit(ob.stages[node].job))
            times.append(sim.time)
            sim.step(ob.stages[node], int(self.policy.limits[level]))
        arrival = torch.tensor([j.arrival for j in sim.all_jobs], dtype=torch.float64)
        done = torch.tensor([j.completion for j in sim.all_jobs], dtype=torch.float64)
        return {"obs": obs, "nodes": nodes, "levels": levels, "least": least,
                "times": torch.tensor(times, dtype=torch.float64),
                "arrival": arrival, "completion": done, "avg_jct_s": sim.result().avg_jct_s}

    @staticmethod
    def _to_go(t: Tensor, arrival: Tensor, completion: Tensor) -> Tensor:
        """Minus the JCT still to accrue after each time in ``t`` (seconds)."""
        start = torch.maximum(t[:, None], arrival[None, :])  # (K, J)
        return -(completion[None, :] - start).clamp_min(0).sum(1) / 1000.0  # (K,)

    def _loss(self, rolls: list[dict[str, Any]]) -> tuple[Tensor, dict[str, float]]:
        adv = []
        for r in rolls:
            own = self._to_go(r["times"], r["arrival"], r["completion"])
            base = torch.stack([self._to_go(r["times"], o["arrival"], o["completion"]) for o in rolls]).mean(0)
            adv.append(own - base)
        adv_t = torch.cat(adv).float()
        adv_t = adv_t / (adv_t.std() + 1e-6)
        obs = [ob for r in rolls for ob in r["obs"]]
        batch = collate(obs)
        stage_logp, limit_logp = self.policy(batch)  # (nodes,), (jobs, L)
        n_off = torch.tensor([0] + [ob.x.shape[0] for ob in obs]).cumsum(0)[:-1]
        node = n_off + torch.tensor([n for r in rolls for n in r["nodes"]])
        level = torch.tensor([lv for r in rolls for lv in r["levels"]])
        job = batch["graph_node_job"][node]  # the picked stage's job (global id in the batch)
        least = torch.tensor([v for r in rolls for v in r["least"]])
        lim = self._masked(limit_logp[job], least, self.policy.limits)  # (K, L), as sampled
        logp = stage_logp[node] + lim.gather(1, level[:, None])[:, 0]  # (K,)
        safe = stage_logp.masked_fill(~batch["graph_mask"], 0.0)  # no 0 * -inf (NaN gradients)
        lim_safe = lim.masked_fill(torch.isinf(lim), 0.0)  # masked levels: probability 0, no 0 * -inf
        ent = (-(safe.exp() * safe).masked_fill(~batch["graph_mask"], 0.0).sum() / len(obs)
               - (lim.exp() * lim_safe).sum(-1).mean())
        loss = -(logp * adv_t).mean() - self.params.entropy * ent
        return loss, {"entropy": float(ent.detach())}

    def _imitate(self, library: JobLibrary, sim: ClusterSim, opt: torch.optim.Optimizer,
                 deadline: float) -> dict[str, float]:
        """Behaviour cloning of ``params.imitate`` on its own decisions (stage, and the nearest limit
        level among those the simulator applies unchanged)."""
        p = self.params
        rule = RULES[p.imitate]
        obs, nodes, levels = [], [], []
        for e in range(p.imitate_episodes):
            seed = SPLIT_SEEDS["train"] + 50_000 + p.seed * 1000 + e  # not the RL sequences
            sim.reset(episode_jobs(self.cluster, library, seed, p.train_jobs, p.train_rate), seed=seed)
            while not sim.done:
                ob = observe(sim)
                stage, limit = rule(sim)
                obs.append(ob)
                nodes.append(ob.stages.index(stage))
                levels.append(nearest_level(limit, self.policy.limits.tolist(), sim.min_limit(stage.job)))
                sim.step(stage, limit)
        gen = torch.Generator().manual_seed(p.seed)
        self.policy.train()
        loss, steps = torch.zeros(()), 0
        for steps in range(1, p.imitate_steps + 1):
            idx = torch.randint(len(obs), (min(p.imitate_batch, len(obs)),), generator=gen).tolist()
            batch = collate([obs[i] for i in idx])
            stage_logp, limit_logp = self.policy(batch)
            n_off = torch.tensor([0] + [obs[i].x.shape[0] for i in idx]).cumsum(0)[:-1]
            node = n_off + torch.tensor([nodes[i] for i in idx])
            job = batch["graph_node_job"][node]
            loss = -(stage_logp[node] + limit_logp[job, torch.tensor([levels[i] for i in idx])]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            opt.step()
            if time.perf_counter() >= deadline:
                break
        self.policy.eval()
        return {"imitate_decisions": len(obs), "imitate_steps": steps, "imitate_loss": float(loss.detach())}

    def fit(self, task: Any = None, budget: float | None = None) -> None:
        """Train in the simulator of ``task.params.cluster`` (if the task has one) or the cluster
        given at construction. ``budget`` (seconds) overrides ``params.budget_s``."""
        cluster = getattr(getattr(task, "params", None), "cluster", None)
        if isinstance(cluster, ClusterParams):
            self.cluster = cluster
        p = self.params
        budget_s = float(budget) if budget is not None else p.budget_s
        library = JobLibrary(self.cluster.tpch_dir)
        sim = make_sim(self.cluster)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            self.policy = DecimaPolicy(self.cluster.num_executors, p.hidden, p.rounds, p.limit_levels)
        opt = torch.optim.Adam(self.policy.parameters(), lr=p.lr)
        gen = torch.Generator().manual_seed(p.seed)
        best = (float("inf"), 0, copy.deepcopy(self.policy.state_dict()))
        history = []
        t0 = time.perf_counter()
        valid_s = 0.0  # how long the last validation took
        if p.imitate and p.imitate_steps > 0:
            with single_thread():
                row = {"iteration": 0, **self._imitate(library, sim, opt, t0 + budget_s / 2)}
            v0 = time.perf_counter()
            row["valid_avg_jct_s"] = self._valid(library)
            valid_s = time.perf_counter() - v0
            row["seconds"] = time.perf_counter() - t0
            best = (row["valid_avg_jct_s"], 0, copy.deepcopy(self.policy.state_dict()))
            history.append(row)
            opt = torch.optim.Adam(self.policy.parameters(), lr=p.lr)  # fresh moments for the RL phase
        bar = progress_bar(p.iterations, "decima")
        it = 0
        rl_start = time.perf_counter()
        for it in range(1, p.iterations + 1):
            seed = SPLIT_SEEDS["train"] + p.seed * 1000 + it  # < SPLIT_SEEDS["valid"] (DecimaParams bounds)
            jobs = episode_jobs(self.cluster, library, seed, p.train_jobs, p.train_rate)
            self.policy.eval()
            with single_thread():
                rolls = [self._rollout(sim, jobs, seed, gen) for _ in range(p.rollouts)]
                self.policy.train()
                loss, info = self._loss(rolls)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(self.policy.parameters(), 1.0)
            opt.step()
            self.policy.eval()
            row = {"iteration": it, "train_avg_jct_s": sum(r["avg_jct_s"] for r in rolls) / len(rolls),
                   "loss": float(loss.detach()), **info, "seconds": time.perf_counter() - t0}
            # stop when the next iteration and a closing validation would not fit in the budget
            now = time.perf_counter()
            per_iteration = (now - rl_start) / it
            last = it == p.iterations or now - t0 + per_iteration + valid_s >= budget_s
            if it % p.valid_every == 0 or last:
                v0 = time.perf_counter()
                v = self._valid(library)
                valid_s = time.perf_counter() - v0
                row["valid_avg_jct_s"] = v
                if v < best[0]:
                    best = (v, it, copy.deepcopy(self.policy.state_dict()))
            history.append(row)
            bar.update(1)
            if last:
                break
        bar.close()
        self.policy.load_state_dict(best[2])
        self.policy.eval()
        self.fit_info = {"iterations": it, "best_iteration": best[1], "best_valid_avg_jct_s": best[0],
                         "seconds": time.perf_counter() - t0, "history": history}

    def _valid(self, library: JobLibrary) -> float:
        p = self.params
        return evaluate_scheduler(self, self.cluster, "valid", p.valid_episodes, num_jobs=p.train_jobs,
                                  library=library, progress=False)["avg_jct_s"]

    def state_dict(self) -> dict[str, Tensor]:
        return self.policy.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.policy.load_state_dict(state)
        self.policy.eval()
