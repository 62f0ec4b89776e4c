"""Seeds derived from the run seed, and the seeded sample order every training stage draws from.

Determinism: the batch at optimizer step ``s`` and the dropout RNG of that step are pure functions of
(seed, stage, s), so a run resumed at step ``s`` replays what an uninterrupted run would have done.
"""

from __future__ import annotations

import zlib

import torch
from torch import Tensor


def stream_seed(seed: int, stage: str, *parts: int) -> int:
    """A 63-bit seed derived from the run seed, a stream name (a stage, "build:<role>") and integers."""
    key = f"{seed}:{stage}:" + ":".join(str(p) for p in parts)
    return zlib.crc32(key.encode()) * 2654435761 % (2**63 - 1)


def batch_indices(n: int, batch_size: int, first_sample: int, seed: int, stage: str) -> Tensor:
    """Samples ``first_sample .. first_sample+batch_size-1`` of an endless stream of seeded epochs."""
    out = []
    pos, end = first_sample, first_sample + batch_size
    while pos < end:
        epoch, offset = divmod(pos, n)
        g = torch.Generator().manual_seed(stream_seed(seed, stage, epoch))
        take = torch.randperm(n, generator=g)[offset : offset + end - pos]
        out.append(take)
        pos += len(take)
    return torch.cat(out)


def move(batch: dict, device: torch.device) -> dict:
    """A batch (dict of tensors and other values) with its tensors on ``device``."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
