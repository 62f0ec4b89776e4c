"""The ABR report's figures: QoE CDF over test traces, and one trace's bitrate/buffer timeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mamba4net.core.plotting import plot_cdf, pyplot, save_figure


def plot_qoe_cdf(details: dict[str, dict], path: Path) -> bool:
    """One step curve per model: fraction of traces whose mean QoE is <= x."""
    series = {k: v["per_trace_qoe"] for k, v in details.items() if v.get("per_trace_qoe")}
    return plot_cdf(series, path, xlabel="mean QoE per trace", ylabel="fraction of traces", higher_is_better=True)


def plot_timeline(details: dict[str, dict], path: Path) -> bool:
    """Bitrate and buffer per chunk on the same trace, one line per model."""
    series = {k: v["timeline"] for k, v in details.items() if v.get("timeline")}
    if not series:
        return False
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.0, 5.0), sharex=True)
    for name, tl in sorted(series.items()):
        chunks = np.arange(len(tl["bitrate_mbps"]))
        top.step(chunks, tl["bitrate_mbps"], where="post", label=name)
        bottom.plot(chunks, tl["buffer_s"], label=name)
    trace = next(iter(series.values()))["trace"]
    top.set_title(f"trace {trace}", fontsize=9)
    top.set_ylabel("bitrate (Mbps)")
    bottom.set_ylabel("buffer (s)")
    bottom.set_xlabel("chunk")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    top.legend(fontsize=7, ncol=3)
    save_figure(fig, path, dpi=120)
    return True
