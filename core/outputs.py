"""A frozen model's outputs computed once over a split and served with every batch.

A frozen model (the teacher, or an earlier student) is deterministic in eval mode, so its answer for
a sample never changes while another model learns from it: computing it once costs one pass over
the split instead of one forward per step (``cache_teacher: true``). What is kept: the prediction,
the last hidden state if a loss term reads it, and the taps the terms ask for. The cache is kept as
safetensors in the stage's checkpoint folder (``outputs-<role>.safetensors``), so ``--resume``
reuses it; core deletes it when the stage finishes.

With several processes each rank computes an equal share of the split (padded, so that a ZeRO-3
sharded teacher sees the same number of forward calls on every rank), the shares are gathered so
every rank holds the whole cache, and rank 0 writes the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from mamba4net.core import distributed as dist
from mamba4net.core.checkpoint import load_checked, save_checked
from mamba4net.core.progress import progress_bar
from mamba4net.core.protocols import Batch, ModelOutput, TaskData
from mamba4net.core.seeding import move
from mamba4net.core.taps import expand, forward_with_taps, tap_points

log = logging.getLogger("mamba4net")

PRED, HIDDEN, TAP = "pred", "hidden", "tap."


@torch.no_grad()
def compute_outputs(model, data: TaskData, device, keep_hidden: bool, taps: Sequence[str] = (),
                    batch_size: int = 256, progress: bool = True, desc: str = "teacher cache") -> dict[str, Tensor]:
    """``{"pred", ["hidden"], ["tap.<name>" ...]}``, one row per sample of ``data``."""
    model.eval()
    rows: dict[str, list[Tensor]] = {}
    n, world, rank = len(data), dist.world_size(), dist.rank()
    per = -(-n // world)  # samples per rank, the last rank's share padded up to it
    mine = torch.arange(rank * per, min(n, (rank + 1) * per))
    if len(mine) < per:  # padding rows repeat a valid sample and are dropped after the gather
        mine = torch.cat([mine, torch.full((per - len(mine),), int(mine[-1]) if len(mine) else 0)])
    bar = progress_bar(total=per, desc=desc, enabled=progress and dist.is_main())
    for start in range(0, per, batch_size):
        idx = mine[start : start + batch_size]
        out = forward_with_taps(model, move(data.batch(idx), device), taps)
        kept = {PRED: out.pred, **({HIDDEN: out.hidden} if keep_hidden else {}),
                **{TAP + name: value for name, value in out.taps.items()}}
        for key, value in kept.items():
            rows.setdefault(key, []).append(value.float().cpu())
        bar.update(len(idx))
    bar.close()
    cache = {key: torch.cat(values) for key, values in rows.items()}
    if world > 1:  # (world * per, ...) in rank order -> the n real rows
        keep = torch.arange(world * per) < n  # row r*per + j holds sample r*per + j when < n
        cache = {k: dist.all_gather_rows(v)[keep] for k, v in cache.items()}
    return cache


def load_or_compute(path: Path, model, data: TaskData, device, keep_hidden: bool, taps: Sequence[str] = (),
                    progress: bool = True) -> dict[str, Tensor]:
    """The cache in ``path`` when it covers ``data`` and holds what is asked, else computed anew."""
    if taps:
        taps = expand(taps, tap_points(model))  # the names the cache keeps, not the patterns
    if path.exists():
        cache = load_checked(path, "output cache")
        wanted = [PRED] + ([HIDDEN] if keep_hidden else []) + [TAP + t for t in taps]
        if all(k in cache for k in wanted) and len(cache[PRED]) == len(data):
            log.info("output cache: reusing %s", path)
            return cache
    cache = compute_outputs(model, data, device, keep_hidden, taps, progress=progress)
    if dist.is_main():
        save_checked(path, cache, {"rows": len(data)})
    dist.barrier()
    return cache


def _key(role: str, name: str) -> str:
    return f"_out:{role}:{name}"


class WithOutputs:
    """A split whose batches also carry the cached outputs of ``role`` for their samples."""

    def __init__(self, data: TaskData, role: str, cache: dict[str, Tensor]):
        self.data, self.role, self.cache = data, role, cache

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, indices: Tensor) -> Batch:
        batch = dict(self.data.batch(indices))
        for key, values in self.cache.items():
            batch[_key(self.role, key)] = values[indices]
        return batch


def pop_outputs(batch: Batch, role: str) -> ModelOutput | None:
    """Take ``role``'s cached outputs out of a batch (so task code never sees them); None if absent."""
    pred = batch.pop(_key(role, PRED), None)
    if pred is None:
        return None
    prefix = _key(role, TAP)
    taps = {k[len(prefix):]: batch.pop(k) for k in [k for k in batch if k.startswith(prefix)]}
    return ModelOutput(pred=pred, hidden=batch.pop(_key(role, HIDDEN), None), taps=taps)
