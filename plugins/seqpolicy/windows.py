"""Training samples as windows over the episodes of a pool."""

from __future__ import annotations

import numpy as np


def episode_windows(episode_ptr, window: int, stride: int = 1, *, partial: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the windows of every episode, episode by episode, in order.

    Episode e covers decisions ``ptr[e]:ptr[e+1]``. A window starts at its episode's start and then
    every ``stride`` decisions; it holds ``window`` decisions, fewer where the episode ends first.
    With ``partial=False`` only whole windows are kept (``stride=1`` then gives every start
    ``0 .. T - window`` of an episode of T).
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window ({window}) and stride ({stride}) must be at least 1")
    ptr = np.asarray(episode_ptr, dtype=np.int64)
    starts, ends = [], []
    for s, e in zip(ptr[:-1], ptr[1:]):
        last = e if partial else e - window + 1
        t = np.arange(s, max(s, last), stride, dtype=np.int64)
        starts.append(t)
        ends.append(np.minimum(t + window, e))
    if not starts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(starts), np.concatenate(ends)
