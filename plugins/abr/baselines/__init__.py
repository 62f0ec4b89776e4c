"""ABR baselines: rule policies (BBA, RobustMPC, rate-based) and a learned Pensieve-style policy."""

from .bba import BBA
from .mpc import RobustMPC
from .rate_based import RateBased

__all__ = ["BBA", "RobustMPC", "RateBased"]
