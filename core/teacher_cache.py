"""Teacher outputs computed once over a split and served with every batch (``cache_teacher: true``).

The frozen teacher is deterministic in eval mode, so its answer for a sample never changes during
distillation: computing it once costs one pass over the split instead of one forward per step.
The cache is kept as safetensors in the stage's checkpoint folder, so ``--resume`` reuses it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor

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
    n = len(data)
    bar = progress_bar(total=n, desc="teacher cache", enabled=progress)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size))
        out = teacher(move(data.batch(idx), device))
        preds.append(out.pred.float().cpu())
        if keep_hidden:
            hiddens.append(out.hidden.float().cpu())
        bar.update(len(idx))
    bar.close()
    cache = {PRED: torch.cat(preds)}
    if keep_hidden:
        cache[HIDDEN] = torch.cat(hiddens)
    return cache


def load_or_compute(path: Path, teacher, data: TaskData, device, keep_hidden: bool, progress: bool) -> dict:
    if path.exists():
        cache = load_tensors(path)
        if len(cache[PRED]) == len(data) and (HIDDEN in cache or not keep_hidden):
            log.info("teacher cache: reusing %s", path)
            return cache
    cache = compute_teacher_outputs(teacher, data, device, keep_hidden, progress=progress)
    save_tensors(path, cache)
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
