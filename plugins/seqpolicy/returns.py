"""Returns-to-go: what the episodes of a pool earned from each decision on, and what a playing
policy still asks for."""

from __future__ import annotations

import numpy as np


def returns_to_go(rewards: np.ndarray, episode_ptr: np.ndarray | None = None) -> np.ndarray:
    """Suffix sums of each episode's rewards.

    ``rewards`` (E, T) with ``episode_ptr=None``: one episode per row, the result is (E, T) in the
    rewards' dtype. ``rewards`` (D,) flat with ``episode_ptr`` (E+1,) offsets: episode e is
    ``rewards[ptr[e]:ptr[e+1]]``, the result is (D,) float64.
    """
    rewards = np.asarray(rewards)
    if episode_ptr is None:
        if rewards.ndim != 2:
            raise ValueError(f"rewards without episode offsets must be (episodes, T), got shape {rewards.shape}")
        return np.flip(np.cumsum(np.flip(rewards, 1), 1), 1).copy()
    out = np.empty(len(rewards), dtype=np.float64)
    for s, e in zip(episode_ptr[:-1], episode_ptr[1:]):
        out[s:e] = np.cumsum(rewards[s:e][::-1], dtype=np.float64)[::-1]
    return out


def best_per_group(returns, groups, k: int) -> np.ndarray:
    """Indices of the ``k`` highest-returning episodes of each group (e.g. each trace), in
    ascending order: the episodes a filtered imitation keeps. Ties go to the earlier episode."""
    returns, groups = np.asarray(returns, dtype=np.float64), np.asarray(groups)
    if returns.shape != groups.shape or returns.ndim != 1:
        raise ValueError(f"returns {returns.shape} and groups {groups.shape} must be the same 1-D shape")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    keep = []
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        keep.extend(idx[np.argsort(-returns[idx], kind="stable")[:k]])
    return np.sort(np.asarray(keep, dtype=np.int64))


class ReturnToGo:
    """The return each of ``n`` streams still asks for, in model units (divided by ``scale``).

    ``reset(n)`` asks ``target`` of every stream; ``spend(reward)`` lowers each by what it just
    earned. ``dtype`` is the arithmetic's precision (float32 matches a float32 pool's windows)."""

    def __init__(self, target: float, scale: float, dtype=np.float32):
        self.target, self.scale, self.dtype = float(target), float(scale), np.dtype(dtype)
        self.value = np.zeros(0, dtype=self.dtype)

    def reset(self, n: int) -> np.ndarray:
        self.value = np.full(n, self.target / self.scale, dtype=self.dtype)
        return self.value

    def spend(self, reward) -> np.ndarray:
        self.value = (self.value - np.asarray(reward, dtype=self.dtype) / self.scale).astype(self.dtype)
        return self.value
