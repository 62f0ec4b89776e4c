"""Matplotlib for files only: every plot in the project gets pyplot from here."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed), imported on
    first use so that nothing pays for matplotlib until a plot is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
