"""Bandwidth traces: ``<time_s> <throughput_Mbps>`` per line (tab or spaces), one file per trace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mamba4net.core.errors import DataError


class TraceError(DataError, ValueError):
    """A trace (or video) file that cannot be used; the message names the file and the line."""


@dataclass
class Trace:
    name: str
    path: Path
    time_s: np.ndarray  # (T,) float64, strictly increasing
    bw_mbps: np.ndarray  # (T,) float64, >= 0

    def __len__(self) -> int:
        return len(self.time_s)


def load_trace(path: str | Path) -> Trace:
    """Parse one trace file; raise :class:`TraceError` ``"<path>:<line>: <problem>"`` on bad input."""
    path = Path(path)
    times: list[float] = []
    bws: list[float] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TraceError(f"{path}: cannot read trace ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) < 2:
            raise TraceError(f"{path}:{lineno}: expected '<time_s> <throughput_Mbps>', got {line.strip()!r}")
        try:
            t, bw = float(fields[0]), float(fields[1])
        except ValueError:
            raise TraceError(f"{path}:{lineno}: non-numeric value in {line.strip()!r}") from None
        if not (np.isfinite(t) and np.isfinite(bw)):
            raise TraceError(f"{path}:{lineno}: non-finite value in {line.strip()!r}")
        if bw < 0:
            raise TraceError(f"{path}:{lineno}: negative bandwidth {bw}")
        if times and t <= times[-1]:
            raise TraceError(f"{path}:{lineno}: time {t} does not increase (previous {times[-1]})")
        times.append(t)
        bws.append(bw)
    if not times:
        raise TraceError(f"{path}: empty trace (no '<time_s> <throughput_Mbps>' lines)")
    if len(times) < 3:
        raise TraceError(f"{path}: only {len(times)} rows; a trace needs at least 3")
    if max(bws[1:]) <= 0:  # row 0 is never played (playback starts at row >= 1)
        raise TraceError(f"{path}: bandwidth is zero on every row; no chunk could ever download")
    return Trace(path.name, path, np.asarray(times), np.asarray(bws))


def load_traces(folder: str | Path) -> list[Trace]:
    """Every file of ``folder`` in sorted-name order (the order NetLLM's simulator uses)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise TraceError(f"{folder}: trace folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise TraceError(f"{folder}: no trace files")
    return [load_trace(p) for p in files]
