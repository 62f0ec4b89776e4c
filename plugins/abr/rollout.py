"""Play a policy on an :class:`~.sim.AbrEnv` and score it (NetLLM's QoE: first chunk skipped)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .sim import AbrEnv, Observation

LOGGED = ("quality", "bitrate_mbps", "rebuffer_s", "smooth_mbps", "buffer_s", "delay_s", "reward")


class AbrPolicy(Protocol):
    """What the simulator plays. ``observe`` is optional: it receives each chunk's QoE (N,)."""

    def reset(self, n: int) -> None: ...

    def act(self, obs: Observation) -> np.ndarray:  # (N,) quality indices
        ...


@dataclass
class EpisodeLog:
    """Per trace and chunk, ``(N, 48)`` each; column 0 is the chunk fetched before any decision."""

    trace_names: list[str]
    quality: np.ndarray
    bitrate_mbps: np.ndarray
    rebuffer_s: np.ndarray
    smooth_mbps: np.ndarray
    buffer_s: np.ndarray
    delay_s: np.ndarray
    reward: np.ndarray

    @property
    def per_trace_qoe(self) -> np.ndarray:
        """(N,) mean QoE of each trace over chunks 1..47."""
        return self.reward[:, 1:].mean(1)


class Transitions:
    """What each decision saw, chose and earned; pass ``record`` to :func:`rollout` as
    ``on_decision``, then read :meth:`arrays`."""

    def __init__(self):
        self.states: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[np.ndarray] = []

    def record(self, obs: Observation, actions: np.ndarray, reward: np.ndarray, info: dict) -> None:
        self.states.append(obs.pensieve_state())
        self.actions.append(actions)
        self.rewards.append(reward)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """states float32 (N, T, 6, 6), actions int64 (N, T), rewards float32 (N, T)."""
        return (np.stack(self.states, 1).astype(np.float32), np.stack(self.actions, 1).astype(np.int64),
                np.stack(self.rewards, 1).astype(np.float32))


def rollout(env: AbrEnv, policy: AbrPolicy, on_decision=None) -> EpisodeLog:
    """One episode on every trace of ``env``. ``on_decision(obs, actions, reward, info)`` (optional)
    sees each decision, e.g. to record an experience pool."""
    obs, info = env.reset()
    policy.reset(env.n)
    columns = {k: [info[k]] for k in LOGGED}
    observe = getattr(policy, "observe", None)
    while not env.done:
        actions = np.asarray(policy.act(obs))
        next_obs, reward, _, info = env.step(actions)
        if callable(observe):
            observe(reward)
        if on_decision is not None:
            on_decision(obs, actions, reward, info)
        for k in LOGGED:
            columns[k].append(info[k])
        obs = next_obs
    return EpisodeLog(env.trace_names, **{k: np.stack(v, 1) for k, v in columns.items()})


def summarize(log: EpisodeLog) -> dict[str, float]:
    """Mean over traces of the per-trace mean over chunks 1..47 (chunk 0 skipped, as NetLLM)."""
    def mean(x: np.ndarray) -> float:
        return float(x[:, 1:].mean(1).mean())

    return {
        "qoe": mean(log.reward),
        "bitrate_mbps": mean(log.bitrate_mbps),
        "rebuffer_s": mean(log.rebuffer_s),
        "smooth_mbps": mean(log.smooth_mbps),
        "n_traces": float(len(log.trace_names)),
    }
