"""The CJS report's figure: the CDF of job completion times, one curve per scheduler."""

from __future__ import annotations

from pathlib import Path

from mamba4net.core.plotting import plot_cdf


def plot_jct_cdf(details: dict[str, dict], path: Path) -> bool:
    """One step curve per model: fraction of jobs whose JCT is <= x (log x axis)."""
    series = {k: v["jct_s"] for k, v in details.items() if isinstance(v, dict) and v.get("jct_s")}
    return plot_cdf(series, path, xlabel="job completion time (s)", ylabel="fraction of jobs",
                    higher_is_better=False, fmt=".1f", log_x=True)
