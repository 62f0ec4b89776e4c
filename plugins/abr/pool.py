"""Experience pools: trajectories of baseline policies, stored without pickle.

On disk a pool is two files side by side:

* ``<name>.safetensors`` — ``states`` float32 (E, T, 6, 6) (the Pensieve state before each
  decision), ``actions`` int64 (E, T), ``rewards`` float32 (E, T) (the QoE of the chunk that
  decision fetched), ``dones`` bool (E, T) (True at an episode's last decision);
* ``<name>.json`` — ``{"format": 1, "meta": {...how it was made...}, "policy": [E names],
  "trace": [E trace names]}``.

E episodes of T = 47 decisions (chunks 1..47; chunk 0 is fetched before any decision).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mamba4net.core.errors import DataError
from mamba4net.core.progress import progress_bar
from mamba4net.plugins.seqpolicy import StoredPool

from .rollout import Transitions, rollout
from .sim import AbrEnv

@dataclass
class ExperiencePool(StoredPool):
    states: np.ndarray  # (E, T, 6, S) float32
    actions: np.ndarray  # (E, T) int64
    rewards: np.ndarray  # (E, T) float32
    dones: np.ndarray  # (E, T) bool
    policy: list[str]
    trace: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    ARRAYS = ("states", "actions", "rewards", "dones")
    LISTS = ("policy", "trace")
    FINITE = ("states", "rewards")

    def __len__(self) -> int:
        return len(self.actions)

    @classmethod
    def concat(cls, pools: list["ExperiencePool"]) -> "ExperiencePool":
        """One pool holding every episode of ``pools``, in order; ``meta`` lists theirs."""
        return cls(**{k: np.concatenate([getattr(p, k) for p in pools]) for k in cls.ARRAYS},
                   **{k: [x for p in pools for x in getattr(p, k)] for k in cls.LISTS},
                   meta={"parts": [p.meta for p in pools]})

    def episode_returns(self) -> np.ndarray:
        """(E,) the sum of each episode's rewards (QoE over its 47 decisions)."""
        return np.asarray(self.rewards, dtype=np.float64).sum(1)

    @classmethod
    def check(cls, path: Path, a: dict[str, np.ndarray], episodes: int) -> None:
        if a["actions"].ndim != 2:
            raise DataError(f"{path}: experience-pool arrays disagree in shape")
        E, T = a["actions"].shape
        if a["states"].shape[:2] != (E, T) or a["rewards"].shape != (E, T) or a["dones"].shape != (E, T) or episodes != E:
            raise DataError(f"{path}: experience-pool arrays disagree in shape")


class EpsilonGreedy:
    """Plays ``policy`` but takes a uniformly random quality with probability ``epsilon``."""

    def __init__(self, policy, epsilon: float, seed: int):
        self.policy, self.epsilon = policy, epsilon
        self.rng = np.random.default_rng(seed)

    def reset(self, n: int) -> None:
        self.policy.reset(n)

    def act(self, obs) -> np.ndarray:
        actions = np.asarray(self.policy.act(obs))
        explore = self.rng.random(actions.shape) < self.epsilon
        return np.where(explore, self.rng.integers(0, 6, actions.shape), actions).astype(np.int64)


def generate_pool(make_env: Callable[[int], AbrEnv], policies: dict[str, Any], *, passes: int = 1,
                  epsilon: float = 0.0, seed: int = 0, progress: bool = True) -> ExperiencePool:
    """Every policy plays every trace of ``make_env(seed)`` once per pass (a new seed per pass:
    other start points and noise). Passes after the first explore with ``epsilon`` (if > 0)."""
    parts: dict[str, list] = {k: [] for k in ExperiencePool.ARRAYS}
    names, traces = [], []
    bar = progress_bar(total=passes * len(policies), desc="experience pool", enabled=progress)
    for k in range(passes):
        for j, (name, policy) in enumerate(policies.items()):
            env = make_env(seed * 1000 + k)
            player = EpsilonGreedy(policy, epsilon, seed * 1000 + 100 * k + j) if k > 0 and epsilon > 0 else policy
            seen = Transitions()
            rollout(env, player, on_decision=seen.record)
            states, actions, rewards = seen.arrays()
            parts["states"].append(states)
            parts["actions"].append(actions)
            parts["rewards"].append(rewards)
            dones = np.zeros(rewards.shape, dtype=bool)
            dones[:, -1] = True
            parts["dones"].append(dones)
            label = name if player is policy else f"{name}+eps{epsilon:g}"
            names += [label] * env.n
            traces += env.trace_names
            bar.update(1)
    bar.close()
    meta = {"policies": list(policies), "passes": passes, "epsilon": epsilon, "seed": seed}
    return ExperiencePool(**{k: np.concatenate(v) for k, v in parts.items()}, policy=names, trace=traces, meta=meta)
