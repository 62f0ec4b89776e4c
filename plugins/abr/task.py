"""The ABR task: traces and simulator, the experience pool, the RL loss and QoE evaluation.

Teacher and student are return-conditioned sequence policies (NetLLM): they learn from an
experience pool of baseline trajectories (``data``), with cross-entropy on the behaviour policy's
actions as the RL loss (paper eq. 6; the ``kd`` loss adds beta * KL(pi_teacher || pi_student),
eq. 7-8), and they are scored by playing the simulator (``evaluate``).

Splits: train = fcc-train minus held-out FCC sources, valid = those held-out sources (for model
selection), test = fcc-test with NetLLM's fixed start pointers (never used for selection).
"""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mamba4net.core.model import eval_mode
from mamba4net.core.stats import mean_interval
from mamba4net.plugins.seqpolicy import best_per_group, cached_pool, open_pool_run

from .config import SPLITS, ABRParams
from .data import PoolWindows


POOL_FORMAT = 1
# evaluation pools (for a real batch of valid/test windows, e.g. to benchmark a model): small, exact
EVAL_POOL = {"policies": ["bba", "robust_mpc"], "passes": 1, "noise": False, "epsilon": 0.0, "seed": 0}


# the policies that can fill an experience pool: (factory, parameters); a pool is made with their
# default parameters, which are part of its cache key (pensieve is trained before it plays)
def _pool_policies() -> dict[str, tuple]:
    from .baselines.config import BBAParams, PensieveParams, RateBasedParams, RobustMPCParams
    from .plugin import build_bba, build_pensieve, build_rate_based, build_robust_mpc

    return {"bba": (build_bba, BBAParams()), "robust_mpc": (build_robust_mpc, RobustMPCParams()),
            "rate_based": (build_rate_based, RateBasedParams()), "pensieve": (build_pensieve, PensieveParams())}


def _pool_policy(name: str, task: "ABRTask"):
    build, params = _pool_policies()[name]
    policy = build(params, task=task)
    policy.fit(task)
    return policy


class ABRTask:
    name = "abr"
    metric = "qoe"
    higher_is_better = True
    default_encoder = "abr_state"
    default_head = "abr_policy"
    default_baselines = ["bba", "robust_mpc", "rate_based", "pensieve"]

    def __init__(self, params: ABRParams | None = None):
        self.params = params if params is not None else ABRParams()
        self._splits: dict[str, tuple[list, list[int] | None]] = {}
        self._pools: dict[str, Any] = {}
        self._data: dict[str, PoolWindows] = {}
        self._video = None

    # --- simulator ---------------------------------------------------------------------------
    @property
    def video_sizes(self) -> np.ndarray:
        if self._video is None:
            from .video import load_video_sizes

            self._video = load_video_sizes(self.params.abr_dir, self.params.video)
        return self._video

    def traces(self, split: str) -> tuple[list, list[int] | None]:
        """(traces, fixed start pointers or None) of ``split``."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        if split not in self._splits:
            from .splits import load_split

            p = self.params
            self._splits[split] = load_split(p.abr_dir, split, valid_fraction=p.valid_fraction, seed=p.split_seed)
        return self._splits[split]

    def env(self, split: str, *, noise: bool = False, seed: int = 0, limit: int | None = None):
        """An :class:`~.sim.AbrEnv` over every trace of ``split`` (or ``limit`` evenly spaced ones)."""
        from .sim import AbrEnv

        traces, ptrs = self.traces(split)
        if limit is not None and limit < len(traces):
            keep = np.linspace(0, len(traces) - 1, limit).round().astype(int)
            traces = [traces[i] for i in keep]
            ptrs = None if ptrs is None else [ptrs[i] for i in keep]
        return AbrEnv(traces, self.video_sizes, start_ptrs=ptrs, noise=noise, seed=seed)

    # --- experience pool and training data ---------------------------------------------------
    def _pool_spec(self, split: str) -> dict[str, Any]:
        # the runs' episodes are pools of their own (_run_pool): the baselines' pool is shared
        spec = self.params.pool.model_dump(exclude={"runs"}) if split == "train" else dict(EVAL_POOL)
        table = _pool_policies()
        return {
            "format": POOL_FORMAT, "split": split, **spec,
            "policy_params": {name: table[name][1].model_dump() for name in spec["policies"]},
            **self._traces_key(split),
        }

    def _traces_key(self, split: str) -> dict[str, Any]:
        traces, _ = self.traces(split)
        return {
            "valid_fraction": self.params.valid_fraction, "split_seed": self.params.split_seed,
            "traces": sorted(t.name for t in traces),
            # another video's pool is another pool (its name and its sizes); video1's key is
            # unchanged so the pools already made for it are still found
            **self._video_key(),
        }

    def _video_key(self) -> dict[str, Any]:
        from .video import DEFAULT_VIDEO

        if self.params.video == DEFAULT_VIDEO:
            return {}
        sizes = np.ascontiguousarray(self.video_sizes, dtype=np.int64)
        return {"video": self.params.video, "video_sha256": hashlib.sha256(sizes.tobytes()).hexdigest()}

    def pool(self, split: str = "train"):
        """The experience pool of ``split``: loaded from the pool folder when one with the same
        spec exists there, else generated (and saved) — a pool is reused across runs."""
        if split in self._pools:
            return self._pools[split]
        from .pool import ExperiencePool, generate_pool

        spec = self._pool_spec(split)

        def make(digest: str):
            policies = {name: _pool_policy(name, self) for name in spec["policies"]}
            return generate_pool(lambda seed: self.env(split, noise=spec["noise"], seed=seed), policies,
                                 passes=spec["passes"], epsilon=spec["epsilon"], seed=spec["seed"])

        pool = cached_pool("abr", self.params.pool_dir, split, spec, load=ExperiencePool.load, make=make,
                           describe=lambda p: f"{len(p.actions)} episodes")
        if split == "train" and self.params.pool.runs:
            pool = ExperiencePool.concat([pool, *(self._run_pool(source) for source in self.params.pool.runs)])
        self._pools[split] = pool
        return pool

    def _run_pool(self, source) -> Any:
        """The training traces played by a finished run's policy (``pool.runs``), asked for the
        return its own run asks for; cached by that policy's weights and target."""
        from .pool import ExperiencePool, generate_pool

        run, digest = open_pool_run(source, self.name)
        label = f"{source.role}:{source.dir}"
        p = self.params.pool
        spec = {"format": POOL_FORMAT, "split": "train", "run_role": source.role,
                "run_weights_sha256": digest, "run_target_return": run.task.target_return,
                "passes": source.passes, "noise": p.noise, "seed": p.seed, **self._traces_key("train")}

        def make(digest: str):
            model = run.model(source.role)
            with torch.no_grad(), eval_mode(model):
                return generate_pool(lambda seed: self.env("train", noise=p.noise, seed=seed),
                                     {label: run.task.as_policy(model)}, passes=source.passes, seed=p.seed)

        return cached_pool("abr", self.params.pool_dir, "train", spec, load=ExperiencePool.load, make=make,
                           describe=lambda pool: f"{len(pool)} episodes of {label}")

    def kept_episodes(self, split: str = "train") -> np.ndarray:
        """Indices of the pool episodes ``split`` trains on: every one, or with ``best_per_trace``
        only the best-returning k of each training trace (filtered imitation)."""
        pool = self.pool(split)
        k = self.params.best_per_trace
        if split != "train" or k is None:
            return np.arange(len(pool))
        return best_per_group(pool.episode_returns(), np.asarray(pool.trace), k)

    def data(self, split: str) -> PoolWindows:
        if split not in self._data:
            pool, keep = self.pool(split), self.kept_episodes(split)
            self._data[split] = PoolWindows(
                np.asarray(pool.states)[keep], np.asarray(pool.actions)[keep], np.asarray(pool.rewards)[keep],
                window=self.params.window, return_scale=self.params.return_scale,
            )
        return self._data[split]

    @property
    def target_return(self) -> float:
        """The return asked of a sequence policy at its first decision: ``target_return``, or else
        the ``target_quantile`` of the returns of the training episodes (:meth:`kept_episodes`).
        (NetLLM asks for the pool's best return; on FCC traces that return is only reachable on the
        fastest links, and asking it on a slow one drives the policy to stall: see ``docs/abr.md``.)"""
        if self.params.target_return is not None:
            return float(self.params.target_return)
        returns = self.pool("train").episode_returns()[self.kept_episodes("train")]
        return float(np.quantile(returns, self.params.target_quantile))

    def loss(self, out: Any, batch: dict[str, Tensor]) -> Tensor:
        """The RL loss of return-conditioned sequence modelling: cross-entropy on the actions."""
        logits = out.pred if hasattr(out, "pred") else out  # (B, T, 6)
        actions = batch["actions"].to(logits.device)  # (B, T)
        if logits.shape[:2] != actions.shape:
            raise ValueError(f"ABR logits {tuple(logits.shape)} do not match actions {tuple(actions.shape)}")
        return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), actions.reshape(-1))

    def deploy_spec(self, model):
        """One decision of the deployed policy, for ``mamba4net export`` (see :mod:`.deploy`)."""
        from .deploy import abr_deploy_spec

        return abr_deploy_spec(self, model)

    # --- evaluation --------------------------------------------------------------------------
    def as_policy(self, predictor: Any, mode: str = "auto", target_return: float | None = None):
        """A baseline is already a policy; a model (encoder -> backbone -> head) is wrapped, asked
        for ``target_return`` (default: :attr:`target_return`)."""
        if callable(getattr(predictor, "act", None)):
            return predictor
        from .policy import SequencePolicy

        target = self.target_return if target_return is None else target_return
        return SequencePolicy(predictor, window=self.params.window or 10**9, return_scale=self.params.return_scale,
                              target_return=target, mode=mode)

    def evaluate(self, predictor: Any, split: str = "test") -> dict[str, Any]:
        """Mean QoE (first chunk skipped) and its parts over the split's traces, with no delay
        noise. On the test split also the per-decision latency at batch 1 (``decision_ms``), and
        under ``details`` the per-trace QoE and one trace's timeline, for the report's figures."""
        from .rollout import rollout, summarize

        limit = self.params.valid_traces if split == "valid" else None
        with torch.no_grad(), eval_mode(predictor):
            policy = self.as_policy(predictor)
            episode = rollout(self.env(split, limit=limit), policy)
            result: dict[str, Any] = dict(summarize(episode))
            result["qoe_ci95"] = mean_interval(episode.per_trace_qoe)[1]  # over the traces
            if split == "test" and self.params.latency_decisions > 0:
                result["decision_ms"] = round(self._decision_ms(policy), 4)
        if split == "test":
            result["details"] = _details(episode)
        return result

    def _decision_ms(self, policy) -> float:
        """Median wall time of one decision for a single stream on the first test trace."""
        from .rollout import rollout

        times: list[float] = []
        timed = _Timed(policy, times)
        env = self.env("test", limit=1)
        rollout(env, timed)
        return statistics.median(times[: self.params.latency_decisions]) * 1e3

    def figures(self, details: dict[str, dict], out_dir: Path) -> list[dict[str, str]]:
        """QoE CDF over traces per model, and one trace's bitrate/buffer timeline per model."""
        from .plots import plot_qoe_cdf, plot_timeline

        out = []
        if plot_qoe_cdf(details, out_dir / "abr_qoe_cdf.png"):
            out.append({"title": "QoE per test trace (CDF)", "file": "abr_qoe_cdf.png"})
        if plot_timeline(details, out_dir / "abr_timeline.png"):
            out.append({"title": "Bitrate and buffer on one test trace", "file": "abr_timeline.png"})
        return out

    def __repr__(self) -> str:
        return f"ABRTask(window={self.params.window}, layout={self.params.token_layout})"


class _Timed:
    """Wraps a policy and records the wall time of every ``act``."""

    def __init__(self, policy, times: list[float]):
        self.policy, self.times = policy, times

    def reset(self, n: int) -> None:
        self.policy.reset(n)

    def act(self, obs):
        t0 = time.perf_counter()
        actions = self.policy.act(obs)
        self.times.append(time.perf_counter() - t0)
        return actions

    def observe(self, reward) -> None:
        if callable(getattr(self.policy, "observe", None)):
            self.policy.observe(reward)


def _details(episode) -> dict[str, Any]:
    """What the figures need, JSON-ready: per-trace QoE, and the timeline of one trace (the
    middle one in file order, the same for every model)."""
    per_trace = [float(x) for x in episode.per_trace_qoe]
    i = len(per_trace) // 2
    return {
        "per_trace_qoe": per_trace,
        "timeline": {
            "trace": episode.trace_names[i],
            "bitrate_mbps": [float(x) for x in episode.bitrate_mbps[i]],
            "buffer_s": [float(x) for x in episode.buffer_s[i]],
            "rebuffer_s": [float(x) for x in episode.rebuffer_s[i]],
        },
    }
