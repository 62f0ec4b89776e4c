"""Throughput traces (``<time_s> <throughput_Mbps>`` per line) on a 1-second grid, and splits by source.

The FCC traces are 320-s segments of longer measurements: segments of one measurement (``trace_<id>_``
and ``test_fcc_trace_<id>_`` share the id) go to the same split, so no test window comes from a
measurement seen in training. The Norway HSDPA logs are grouped by route.
"""

import hashlib
import re
from pathlib import Path

import numpy as np

from mamba4net.api import DataError

FCC_ID = re.compile(r"trace_(\d+)_")


def read_trace(path: Path) -> np.ndarray:
    """Throughput (Mbps) sampled every second, holding the last measured value (a bad file: DataError)."""
    try:
        rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
        data = np.array([[float(r[0]), float(r[1])] for r in rows], dtype=np.float64)
    except (OSError, UnicodeDecodeError, ValueError, IndexError) as exc:
        raise DataError(f"{path}: not a '<time_s> <throughput_Mbps>' trace ({type(exc).__name__})") from None
    if len(data) < 3 or not np.isfinite(data).all() or (np.diff(data[:, 0]) <= 0).any() or (data[:, 1] < 0).any():
        raise DataError(f"{path}: a trace needs 3+ rows of increasing time and finite, non-negative throughput")
    grid = np.arange(np.ceil(data[0, 0]), np.floor(data[-1, 0]) + 1)
    return data[np.searchsorted(data[:, 0], grid, side="right") - 1, 1]


def source_of(name: str) -> str:
    m = FCC_ID.search(name)
    if m and not name.endswith(".log"):
        return f"fcc-{m.group(1)}"
    return name.split("-")[0]  # a Norway route, e.g. "bus.ljansbakken"


def split_of(source: str, fractions: tuple[float, float], seed: int) -> str:
    """``"valid"``, ``"test"`` or ``"train"``, a fixed function of the source and the seed."""
    u = int(hashlib.sha256(f"{seed}:{source}".encode()).hexdigest()[:8], 16) / 2**32
    return "valid" if u < fractions[0] else "test" if u < fractions[0] + fractions[1] else "train"


def load_split(folder: Path, split: str, fractions: tuple[float, float], seed: int) -> list[np.ndarray]:
    if not folder.is_dir():
        raise DataError(f"{folder}: trace folder not found (set task.data_dir, or run mamba4net data fetch)")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return [read_trace(p) for p in files if split_of(source_of(p.name), fractions, seed) == split]
