"""CJS baselines as engine components: each is a scheduler ``sim -> (stage, limit)``.

The rule-based ones wrap :mod:`.schedulers`; the learned Decima-style one is in :mod:`.decima`.
"""

from __future__ import annotations

from typing import Any

from .schedulers import RULES
from .sim import ClusterSim, Stage


class RuleBaseline:
    """``fifo``, ``fair`` or ``srwf``. Nothing to learn: ``fit`` is a no-op and there is no
    ``state_dict`` (the engine only keeps weights of baselines that have one)."""

    def __init__(self, name: str):
        if name not in RULES:
            raise ValueError(f"unknown rule scheduler {name!r}; known: {', '.join(RULES)}")
        self.name = name
        self._rule = RULES[name]

    def fit(self, task: Any = None, budget: Any = None) -> None:
        return None

    def __call__(self, sim: ClusterSim) -> tuple[Stage, int]:
        return self._rule(sim)
