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


DEFAULT_VIDEO = "video1"
VIDEO_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]*"  # a folder name, no path: <abr_dir>/video/<name>_sizes


def available_videos(abr_dir: str | Path) -> list[str]:
    """The names of the ``<name>_sizes`` folders under ``<abr_dir>/video/``."""
    folder = Path(abr_dir) / "video"
    return sorted(p.name[: -len("_sizes")] for p in folder.glob("*_sizes") if p.is_dir()) if folder.is_dir() else []


def load_video_sizes(abr_dir: str | Path, video: str = DEFAULT_VIDEO) -> np.ndarray:
    """``<abr_dir>/video/<video>_sizes/video_size_{0..5}`` -> int64 ``(6, >= 49)`` bytes.

    Each file holds one integer per line, one line per chunk; the simulator reads one more
    entry than there are chunks (the "next chunk" after the last), so 49 lines are needed.
    A video has exactly the six qualities of ``BITRATES_KBPS``: a seventh file is an error too.
    """
    folder = Path(abr_dir) / "video" / f"{video}_sizes"
    if not folder.is_dir():
        known = ", ".join(available_videos(abr_dir)) or "none"
        raise TraceError(f"{folder}: video folder not found (task.video={video!r}; videos in "
                         f"{folder.parent}: {known})")
    extra = sorted(p.name for p in folder.glob("video_size_*")
                   if p.name not in {f"video_size_{q}" for q in range(N_QUALITIES)})
    if extra:
        raise TraceError(f"{folder / extra[0]}: unexpected quality file; a video has {N_QUALITIES} qualities "
                         f"(video_size_0..{N_QUALITIES - 1}, {'/'.join(map(str, BITRATES_KBPS))} kbps)")
    rows = []
    for q in range(N_QUALITIES):
        path = folder / f"video_size_{q}"
        if not path.is_file():
            raise TraceError(f"{path}: chunk-size file not found; a video has {N_QUALITIES} qualities "
                             f"(video_size_0..{N_QUALITIES - 1})")
        sizes = []
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise TraceError(f"{path}: not a text file of chunk sizes") from None
        for lineno, line in enumerate(text.splitlines(), 1):
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
