"""The one interval every headline number carries: the mean and its 95% Student-t half-width."""

from __future__ import annotations

import math
from typing import Iterable


def mean_interval(values: Iterable[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% Student-t interval of the mean); half-width 0 for one value.

    Over a test set's items (traces, windows, jobs) it says how far the mean moves with the items
    drawn; over training seeds, how far it moves with retraining."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        raise ValueError("no values to take an interval of")
    mean = math.fsum(vals) / n
    if n < 2:
        return mean, 0.0
    from scipy import stats

    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))
