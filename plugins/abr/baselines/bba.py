"""BBA (Huang et al., SIGCOMM'14), as Pensieve's test script parameterises it."""

from __future__ import annotations

import numpy as np

from ..sim import Observation
from ..video import N_QUALITIES


class BBA:
    name = "bba"

    def __init__(self, reservoir_s: float = 5.0, cushion_s: float = 10.0):
        self.reservoir, self.cushion = reservoir_s, cushion_s

    def fit(self, task) -> None:  # rule-based
        pass

    def reset(self, n: int) -> None:
        pass

    def act(self, obs: Observation) -> np.ndarray:
        """Quality grows linearly with the buffer between reservoir and reservoir + cushion."""
        b = obs.buffer_s
        q = (N_QUALITIES - 1) * (b - self.reservoir) / self.cushion
        q = np.where(b < self.reservoir, 0, np.where(b >= self.reservoir + self.cushion, N_QUALITIES - 1, q))
        return q.astype(np.int64)  # truncation toward zero, as int() does
