"""Matplotlib for files only: every plot in the project gets pyplot from here."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed), imported on
    first use so that nothing pays for matplotlib until a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 110) -> None:
    """Lay out ``fig``, write it to ``path`` and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def log2_axes(axes, xlabel: str, legend_size: int = 7) -> None:
    """Log-2 x and log y, grid and legend on each of ``axes`` (the sweeps over lengths and contexts)."""
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=legend_size)


def plot_cdf(series: dict[str, list[float]], path, *, xlabel: str, ylabel: str, higher_is_better: bool,
             fmt: str = ".3f", log_x: bool = False) -> bool:
    """Empirical CDFs, one step curve per name (best mean first in the legend, the mean in its
    label) -> ``path``; ``False`` (nothing drawn) when no series has values."""
    import numpy as np

    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sign = -1.0 if higher_is_better else 1.0
    for name, values in sorted(series.items(), key=lambda kv: sign * float(np.mean(kv[1]))):
        x = np.sort(np.asarray(values, dtype=float))
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=f"{name} ({np.mean(x):{fmt}})")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path, dpi=120)
    return True
