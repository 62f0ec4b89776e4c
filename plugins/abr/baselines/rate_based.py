"""Rate-based ABR: the highest bitrate the predicted throughput sustains."""

from __future__ import annotations

import numpy as np

from ..sim import BITRATES_MBPS, Observation


def harmonic_mean(samples: np.ndarray) -> np.ndarray:
    """(N, k) throughput samples, 0 = missing -> (N,) harmonic mean of the present ones (0 if none)."""
    present = samples > 0
    inv = np.where(present, 1.0 / np.where(present, samples, 1.0), 0.0).sum(1)
    count = present.sum(1)
    return np.where(count > 0, count / np.where(inv > 0, inv, 1.0), 0.0)


class RateBased:
    name = "rate_based"

    def __init__(self, past: int = 5, safety: float = 1.0):
        self.past, self.safety = past, safety

    def fit(self, task) -> None:  # rule-based
        pass

    def reset(self, n: int) -> None:
        pass

    def act(self, obs: Observation) -> np.ndarray:
        predicted = harmonic_mean(obs.throughput_mbps[:, -self.past :]) * self.safety  # (N,) Mbps
        fits = BITRATES_MBPS[None, :] <= predicted[:, None]  # (N, 6)
        return np.where(fits.any(1), fits.shape[1] - 1 - np.argmax(fits[:, ::-1], 1), 0).astype(np.int64)
