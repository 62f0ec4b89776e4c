"""One trainer for every stage: AdamW, warm-up + cosine, gradient accumulation and clipping.

Determinism: the batch at optimizer step ``s`` and the dropout RNG of that step are pure functions of
(seed, stage, s). A run resumed from the checkpoint at step ``s`` therefore replays exactly what an
uninterrupted run would have done, with nothing but weights and optimizer moments to restore.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from typing import Callable

import torch
from torch import Tensor

from mamba4net.core.checkpoint import StageCheckpoints, load_into, restore_optimizer, trainable_state
from mamba4net.core.config import TrainParams
from mamba4net.core.errors import TrainingError
from mamba4net.core.progress import progress_bar
from mamba4net.core.protocols import Batch, TaskData
from mamba4net.core.runs import RunDir

log = logging.getLogger("mamba4net")

LossFn = Callable[[Batch], tuple[Tensor, dict[str, float]]]


def stream_seed(seed: int, stage: str, *parts: int) -> int:
    """A 63-bit seed derived from the run seed, the stage name and integers (epoch, step...)."""
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


def lr_at(step: int, p: TrainParams) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    if p.warmup_steps and step < p.warmup_steps:
        return p.lr * (step + 1) / p.warmup_steps
    span = max(1, p.steps - p.warmup_steps)
    progress = min(1.0, (step - p.warmup_steps) / span)
    floor = p.lr * p.min_lr_ratio
    return floor + (p.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def move(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Trainer:
    """Trains whatever in ``module`` has ``requires_grad``; checkpoints exactly that."""

    def __init__(
        self,
        stage: str,
        module: torch.nn.Module,
        loss_fn: LossFn,
        data: TaskData,
        params: TrainParams,
        run: RunDir,
        seed: int,
        device: torch.device,
        valid_fn: Callable[[], dict[str, float]] | None = None,
        progress: bool = True,
    ):
        self.stage, self.module, self.loss_fn, self.data = stage, module, loss_fn, data
        self.p, self.run, self.seed, self.device = params, run, seed, device
        self.valid_fn, self.progress = valid_fn, progress
        self.ckpt = StageCheckpoints(run.stage_dir(stage))
        trainable = [p for p in module.parameters() if p.requires_grad]
        if not trainable:
            raise TrainingError(f"stage {stage}: nothing to train (no parameter requires grad)")
        decay = [p for p in trainable if p.ndim >= 2]
        no_decay = [p for p in trainable if p.ndim < 2]
        self.opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": params.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=params.lr,
            betas=(0.9, 0.95),
        )

    def _resume(self) -> int:
        found = self.ckpt.latest()
        if found is None:
            self.run.truncate_metrics(self.stage, 0)  # killed before its first checkpoint
            return 0
        step, path = found
        model_t, opt_t, state = self.ckpt.load(path)
        load_into(self.module, model_t, path / "model.safetensors")
        restore_optimizer(self.opt, opt_t, state["optimizer"])
        self.run.truncate_metrics(self.stage, step)
        log.info("stage %s: resumed from %s (step %d)", self.stage, path, step)
        return step

    def _batch(self, step: int, micro: int) -> Batch:
        first = (step * self.p.grad_accum + micro) * self.p.batch_size
        idx = batch_indices(len(self.data), self.p.batch_size, first, self.seed, self.stage)
        return move(self.data.batch(idx), self.device)

    def fit(self, resume: bool = False) -> dict[str, float]:
        start = self._resume() if resume else 0
        self.module.train()
        last: dict[str, float] = {}
        bar = progress_bar(total=self.p.steps, initial=start, desc=self.stage, enabled=self.progress)
        t0 = time.perf_counter()
        for step in range(start, self.p.steps):
            torch.manual_seed(stream_seed(self.seed, self.stage, step, 1))
            for group in self.opt.param_groups:
                group["lr"] = lr_at(step, self.p)
            self.opt.zero_grad(set_to_none=True)
            terms: dict[str, float] = {}
            total = 0.0
            for micro in range(self.p.grad_accum):
                loss, parts = self.loss_fn(self._batch(step, micro))
                if not torch.isfinite(loss):
                    self._fail(step, loss, parts)
                (loss / self.p.grad_accum).backward()
                total += loss.item() / self.p.grad_accum
                for k, v in parts.items():
                    terms[k] = terms.get(k, 0.0) + v / self.p.grad_accum
            params = [p for g in self.opt.param_groups for p in g["params"]]
            if self.p.clip_norm is not None:
                gnorm = float(torch.nn.utils.clip_grad_norm_(params, self.p.clip_norm))
            else:
                gnorm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
            if not math.isfinite(gnorm):
                self._fail(step, torch.tensor(gnorm), {"grad_norm": gnorm})
            self.opt.step()
            done = step + 1
            last = {"loss": total, **terms, "lr": self.opt.param_groups[0]["lr"], "grad_norm": gnorm}
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}")
            if done % self.p.log_every == 0 or done == self.p.steps:
                last["sec_per_step"] = (time.perf_counter() - t0) / max(1, done - start)
                self.run.log_metrics(self.stage, done, last)
                if bar.disable:  # no terminal: a log line instead of the bar
                    log.info("%s step %d/%d loss %.4f", self.stage, done, self.p.steps, total)
            if self.valid_fn and self.p.eval_every and done % self.p.eval_every == 0 and done < self.p.steps:
                self._validate(done)
            if done % self.p.checkpoint_every == 0 and done < self.p.steps:
                self.ckpt.save(done, trainable_state(self.module), self.opt, {"stage": self.stage, "seed": self.seed})
        bar.close()
        if self.valid_fn:
            last.update(self._validate(self.p.steps))
        return last

    def _validate(self, step: int) -> dict[str, float]:
        was_training = self.module.training
        self.module.eval()
        with torch.no_grad():
            values = {f"valid_{k}": v for k, v in self.valid_fn().items()}
        self.module.train(was_training)
        self.run.log_metrics(self.stage, step, values)
        return values

    def _fail(self, step: int, loss: Tensor, parts: dict[str, float]) -> None:
        found = self.ckpt.latest()
        where = f"last checkpoint {found[1]}" if found else "no checkpoint of this stage yet"
        detail = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
        raise TrainingError(
            f"stage {self.stage} step {step + 1}: loss is {float(loss.detach())} ({detail}); "
            f"stopped, {where} (resume with --resume after fixing the cause)"
        )
