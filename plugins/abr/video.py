"""The video: 48 chunks of 4 s at six bitrates; chunk sizes in bytes per quality level."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .traces import TraceError

BITRATES_KBPS = (300, 750, 1200, 1850, 2850, 4300)
N_QUALITIES = len(BITRATES_KBPS)
N_CHUNKS = 48
CHUNK_S = 4.0
DEFAULT_QUALITY = 1  # the first chunk is fetched at this level, before any decision


def load_video_sizes(abr_dir: str | Path, video: str = "video1") -> np.ndarray:
    """``<abr_dir>/video/<video>_sizes/video_size_{0..5}`` -> int64 ``(6, >= 49)`` bytes.

    Each file holds one integer per line, one line per chunk; the simulator reads one more
    entry than there are chunks (the "next chunk" after the last), so 49 lines are needed.
    """
    folder = Path(abr_dir) / "video" / f"{video}_sizes"
    rows = []
    for q in range(N_QUALITIES):
        path = folder / f"video_size_{q}"
        if not path.is_file():
            raise TraceError(f"{path}: chunk-size file not found")
        sizes = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                size = int(line.split()[0])
            except ValueError:
                raise TraceError(f"{path}:{lineno}: chunk size is not an integer: {line.strip()!r}") from None
            if size <= 0:
                raise TraceError(f"{path}:{lineno}: chunk size must be positive, got {size}")
            sizes.append(size)
        if len(sizes) < N_CHUNKS + 1:
            raise TraceError(f"{path}: {len(sizes)} chunk sizes, need at least {N_CHUNKS + 1}")
        rows.append(sizes[: N_CHUNKS + 1])
    return np.asarray(rows, dtype=np.int64)
