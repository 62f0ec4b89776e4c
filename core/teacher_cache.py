"""Teacher outputs computed once over a split and served with every batch (``cache_teacher: true``).

The frozen teacher is deterministic in eval mode, so its answer for a sample never changes during
distillation: computing it once costs one pass over the split instead of one forward per step.
The cache is kept as safetensors in the stage's checkpoint folder, so ``--resume`` reuses it.

With several processes each rank computes an equal share of the split (padded, so that a ZeRO-3
sharded teacher sees the same number of forward calls on every rank), the shares are gathered so
every rank holds the whole cache, and rank 0 writes the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

from mamba4net.core import distributed as dist
from mamba4net.core.checkpoint import load_tensors, save_tensors
from mamba4net.core.progress import progress_bar
from mamba4net.core.protocols import Batch, ModelOutput, TaskData

log = logging.getLogger("mamba4net")

PRED, HIDDEN = "_teacher_pred", "_teacher_hidden"


@torch.no_grad()
def compute_teacher_outputs(teacher, data: TaskData, device, keep_hidden: bool, batch_size: int = 256,
                            progress: bool = True) -> dict[str, Tensor]:
    from mamba4net.core.trainer import move

    teacher.eval()
    preds, hiddens = [], []
    n, world, rank = len(data), dist.world_size(), dist.rank()
    per = -(-n // world)  # samples per rank, the last rank's share padded up to it
    mine = torch.arange(rank * per, min(n, (rank + 1) * per))
    if len(mine) < per:  # padding rows repeat a valid sample and are dropped after the gather
        mine = torch.cat([mine, torch.full((per - len(mine),), int(mine[-1]) if len(mine) else 0)])
    bar = progress_bar(total=per, desc="teacher cache", enabled=progress and dist.is_main())
    for start in range(0, per, batch_size):
        idx = mine[start : start + batch_size]
        out = teacher(move(data.batch(idx), device))
        preds.append(out.pred.float().cpu())
        if keep_hidden:
            hiddens.append(out.hidden.float().cpu())
        bar.update(len(idx))
    bar.close()
    cache = {PRED: torch.cat(preds)}
    if keep_hidden:
        cache[HIDDEN] = torch.cat(hiddens)
    if world > 1:  # (world * per, ...) in rank order -> the n real rows
        keep = torch.arange(world * per) < n  # row r*per + j holds sample r*per + j when < n
        cache = {k: dist.all_gather_rows(v)[keep] for k, v in cache.items()}
    return cache


def load_or_compute(path: Path, teacher, data: TaskData, device, keep_hidden: bool, progress: bool) -> dict:
    if path.exists():
        cache = load_tensors(path)
        if len(cache[PRED]) == len(data) and (HIDDEN in cache or not keep_hidden):
            log.info("teacher cache: reusing %s", path)
            return cache
    cache = compute_teacher_outputs(teacher, data, device, keep_hidden, progress=progress)
    if dist.is_main():
        save_tensors(path, cache)
    dist.barrier()
    return cache


class WithTeacherOutputs:
    """A split whose batches also carry the cached teacher outputs of their samples."""

    def __init__(self, data: TaskData, cache: dict[str, Tensor]):
        self.data, self.cache = data, cache

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, indices: Tensor) -> Batch:
        batch = dict(self.data.batch(indices))
        for key, values in self.cache.items():
            batch[key] = values[indices]
        return batch


def pop_teacher_output(batch: Batch) -> ModelOutput | None:
    """Take the cached teacher outputs out of a batch (so task code never sees them)."""
    if PRED not in batch:
        return None
    return ModelOutput(pred=batch.pop(PRED), hidden=batch.pop(HIDDEN, None))
