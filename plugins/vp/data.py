"""Viewport traces -> (history, future) samples, in the representation models learn on.

A trace is a CSV without header, ``time_s, roll, pitch, yaw`` (degrees, 5 Hz). A sample starting at
step ``t`` (NetLLM's sliding window, ``viewport_prediction/dataset/load_dataset.py``) is

    history = trace[t - his_window : t]      # what the model sees
    future  = trace[t : t + fut_window]      # what it must predict
    t in range(trim_start, len(trace) - trim_end, stride)

Representation (ours; NetLLM feeds absolute angles / (180, 90, 180)): every angle is taken
**relative to the last observed sample** ``last = trace[t - 1]``, the difference wrapped into
[-180, 180) so that crossing the yaw/roll seam is a small step, then divided by SCALE.
Models predict ``target = wrap(future - last) / SCALE``; :func:`to_absolute` maps a prediction back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mamba4net.core.errors import DataError

from .config import VPParams

SCALE = (180.0, 90.0, 180.0)  # roll, pitch, yaw (degrees per normalised unit)
ANGLES = ("roll", "pitch", "yaw")


class TraceFormatError(DataError, ValueError):
    """A trace file that can't be parsed; the message names the file and the line."""


# ---- angles ---------------------------------------------------------------------------------


def wrap_deg(x):
    """Wrap degrees into [-180, 180). Works on numpy arrays, tensors and floats."""
    return (x + 180.0) % 360.0 - 180.0


def _scale_like(x) -> Any:
    if isinstance(x, Tensor):
        return torch.tensor(SCALE, dtype=x.dtype, device=x.device)
    return np.asarray(SCALE)


def to_relative(angles, last):
    """Absolute degrees ``(..., T, 3)`` -> normalised wrapped offsets from ``last`` ``(..., 3)``."""
    return wrap_deg(angles - last[..., None, :]) / _scale_like(angles)


def to_absolute(pred, last):
    """Normalised offsets ``(..., T, 3)`` from ``last`` ``(..., 3)`` -> absolute degrees in [-180, 180)."""
    return wrap_deg(last[..., None, :] + pred * _scale_like(pred))


# ---- trace files ----------------------------------------------------------------------------

_TRACE_CACHE: dict[tuple[str, int, int], np.ndarray] = {}


def trace_path(dataset_dir: Path, video: int, user: int, frequency: int = 5) -> Path:
    return Path(dataset_dir) / f"video{video}" / f"{frequency}Hz" / f"simple_{frequency}Hz_user{user}.csv"


def load_trace(path: str | Path) -> np.ndarray:
    """The ``(T, 3)`` float64 array of (roll, pitch, yaw) in degrees; cached, read-only.

    Raises :class:`TraceFormatError` (``<file>:<line>: <problem>``) for a missing or empty file,
    a row without 4 comma-separated fields, or a field that is not a finite number.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise TraceFormatError(f"{path}: cannot read viewport trace ({e.strerror or e})") from None
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    cached = _TRACE_CACHE.get(key)
    if cached is not None:
        return cached
    arr = _parse_trace(path)
    arr.setflags(write=False)
    _TRACE_CACHE[key] = arr
    return arr


def _parse_trace(path: Path) -> np.ndarray:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines are harmless
        lines.pop()
    if not lines:
        raise TraceFormatError(f"{path}:1: empty file, expected rows 'time_s,roll,pitch,yaw'")
    try:  # fast path: one conversion for the whole file
        data = np.array([ln.split(",") for ln in lines], dtype=np.float64)
        ok = data.ndim == 2 and data.shape[1] == 4 and bool(np.isfinite(data).all())
    except ValueError:
        ok = False
    if not ok:
        _raise_first_bad_line(path, lines)
    return np.ascontiguousarray(data[:, 1:])  # drop the time column


def _raise_first_bad_line(path: Path, lines: list[str]) -> None:
    for no, ln in enumerate(lines, start=1):
        fields = ln.split(",")
        if len(fields) != 4:
            raise TraceFormatError(
                f"{path}:{no}: expected 4 comma-separated fields (time_s,roll,pitch,yaw), "
                f"got {len(fields)}: {ln.strip()[:80]!r}"
            )
        for col, f in zip(("time_s", "roll", "pitch", "yaw"), fields):
            try:
                v = float(f)
            except ValueError:
                raise TraceFormatError(f"{path}:{no}: {col} is not a number: {f.strip()[:40]!r}") from None
            if not np.isfinite(v):
                raise TraceFormatError(f"{path}:{no}: {col} is not finite: {f.strip()!r}")
    raise TraceFormatError(f"{path}: malformed viewport trace")  # unreachable in practice


# ---- windows --------------------------------------------------------------------------------


def window_starts(n: int, his_window: int, fut_window: int, stride: int, trim_start: int, trim_end: int) -> np.ndarray:
    """First future step of every sample in a trace of ``n`` rows (NetLLM's rule, kept in bounds)."""
    lo = max(trim_start, his_window)
    hi = min(n - trim_end, n - fut_window + 1)  # exclusive
    return np.arange(lo, max(lo, hi), stride, dtype=np.int64)


@dataclass(frozen=True)
class _Windows:
    history: np.ndarray  # (N, H, 3) degrees
    future: np.ndarray  # (N, F, 3) degrees
    video: np.ndarray  # (N,)
    user: np.ndarray  # (N,)
    t: np.ndarray  # (N,) first future step


def _cut_windows(params: VPParams, split: str) -> _Windows:
    H, F = params.his_window, params.fut_window
    root = params.dataset_dir
    offsets = np.arange(-H, F)  # (H+F,)
    hist, fut, vids, users, ts = [], [], [], [], []
    for video in params.videos(split):  # NetLLM order: videos outer, users inner
        for user in params.users(split):
            trace = load_trace(trace_path(root, video, user, params.frequency))
            starts = window_starts(len(trace), H, F, params.stride, params.trim_start, params.trim_end)
            if len(starts) == 0:
                continue
            win = trace[starts[:, None] + offsets]  # (k, H+F, 3)
            hist.append(win[:, :H])
            fut.append(win[:, H:])
            vids.append(np.full(len(starts), video))
            users.append(np.full(len(starts), user))
            ts.append(starts)
    if not hist:
        raise DataError(
            f"VP split '{split}' has no samples: videos {params.videos(split)}, users "
            f"{params.users(split)} in {root} are all shorter than trim_start+trim_end+windows"
        )
    return _Windows(np.concatenate(hist), np.concatenate(fut), np.concatenate(vids),
                    np.concatenate(users), np.concatenate(ts))


def subset_indices(n: int, k: int | None) -> np.ndarray:
    """``k`` evenly spaced indices out of ``n`` (all of them when ``k`` is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.round(np.linspace(0, n - 1, k)).astype(np.int64)  # distinct since spacing >= 1


# ---- the split ------------------------------------------------------------------------------


class VPData:
    """One split of the VP task (implements ``TaskData``).

    ``batch(indices)`` returns a dict of tensors:

    * ``history``     (B, H, 3) float32, offsets from ``last``, wrapped, / SCALE  (model input)
    * ``history_abs`` (B, H, 3) float32, absolute angles / SCALE                 (optional input)
    * ``target``      (B, F, 3) float32, ``wrap(future - last) / SCALE``         (what to predict)
    * ``last``        (B, 3)    float32, absolute degrees of the last observed sample
    * ``future``      (B, F, 3) float32, absolute degrees (ground truth for the metric)
    * ``video``, ``user``, ``t`` (B,) int64, where the sample comes from
    """

    def __init__(self, params: VPParams, split: str):
        self.params = params
        self.split = split
        w = _cut_windows(params, split)
        keep = subset_indices(len(w.t), (params.max_samples or {}).get(split))
        hist, fut = w.history[keep], w.future[keep]
        last = hist[:, -1]  # (N, 3)
        f32 = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        self.tensors: dict[str, Tensor] = {
            "history": f32(to_relative(hist, last)),
            "history_abs": f32(hist / np.asarray(SCALE)),
            "target": f32(to_relative(fut, last)),
            "last": f32(last),
            "future": f32(fut),
            "video": torch.from_numpy(w.video[keep].astype(np.int64)),
            "user": torch.from_numpy(w.user[keep].astype(np.int64)),
            "t": torch.from_numpy(w.t[keep].astype(np.int64)),
        }

    def __len__(self) -> int:
        return int(self.tensors["t"].shape[0])

    def batch(self, indices) -> dict[str, Tensor]:
        if not isinstance(indices, (Tensor, slice)):
            indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return {k: v[indices] for k, v in self.tensors.items()}

    def __repr__(self) -> str:
        return f"VPData(split={self.split!r}, n={len(self)}, dataset={self.params.dataset!r})"


def clear_cache() -> None:
    """Forget parsed traces (tests; long-lived processes after data changed on disk)."""
    _TRACE_CACHE.clear()


__all__ = [
    "ANGLES", "SCALE", "TraceFormatError", "VPData", "clear_cache", "load_trace", "subset_indices",
    "to_absolute", "to_relative", "trace_path", "window_starts", "wrap_deg",
]
