"""One trainer for every stage: AdamW, warm-up + cosine, gradient accumulation and clipping.

Determinism: the batch at optimizer step ``s`` and the dropout RNG of that step are pure functions of
(seed, stage, s) (:mod:`mamba4net.core.seeding`). A run resumed from the checkpoint at step ``s`` therefore replays exactly what an
uninterrupted run would have done, with nothing but weights and optimizer moments to restore.

Two engines drive the same loop (``runtime.engine``): plain PyTorch, or DeepSpeed (ZeRO 0-3, one
or several processes). With N processes, each rank takes its 1/N slice of the step's global batch,
so the gradient DeepSpeed averages over ranks is the single-process gradient of the whole batch;
losses are averaged over ranks before they are logged, and only rank 0 writes anything.

Model selection (``keep_best``, plain PyTorch engine): each validation that beats the best so far
writes the trainable weights to ``best-<step>.safetensors`` in the stage folder, then points
``best.json`` at it (with the previous best, whose file is kept); at the end of the stage the model
takes those weights back, so what is exported is the best model on the validation split, not the
last one. A resumed stage takes the best at or before its checkpoint from ``best.json``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import torch
from torch import Tensor, nn

from mamba4net.core import distributed as dist
from mamba4net.core.checkpoint import (
    StageCheckpoints, load_checked, load_into, restore_optimizer, save_checked, sidecar, trainable_state,
)
from mamba4net.core.schema import RuntimeParams, TrainParams
from mamba4net.core.errors import DataError, TrainingError
from mamba4net.core.progress import progress_bar
from mamba4net.core.protocols import Batch, TaskData
from mamba4net.core.io import read_json, write_json
from mamba4net.core.runs import RunDir
from mamba4net.core.seeding import batch_indices, move, stream_seed

log = logging.getLogger("mamba4net")

LossFn = Callable[[Batch], tuple[Tensor, dict[str, float]]]


def lr_at(step: int, p: TrainParams) -> float:
    """Linear warm-up to ``lr`` then cosine decay to ``lr * min_lr_ratio`` at ``steps``."""
    if p.warmup_steps and step < p.warmup_steps:
        return p.lr * (step + 1) / p.warmup_steps
    span = max(1, p.steps - p.warmup_steps)
    progress = min(1.0, (step - p.warmup_steps) / span)
    floor = p.lr * p.min_lr_ratio
    return floor + (p.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def adamw(module: nn.Module, params: TrainParams) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on vectors (norms, biases)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": params.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=params.lr,
        betas=(0.9, 0.95),
    )


class _WithLoss(nn.Module):
    """The stage's module (same children, same parameter names) whose forward is the loss.

    DeepSpeed wraps this, so its forward hooks (autocast, ZeRO-3 bookkeeping) surround the whole
    loss computation, teacher call included.
    """

    def __init__(self, module: nn.Module, loss_fn: LossFn):
        super().__init__()
        for name, child in module.named_children():
            self.add_module(name, child)
        self._loss_fn = loss_fn

    def forward(self, batch: Batch):
        return self._loss_fn(batch)


# -- engines: what differs between plain PyTorch and DeepSpeed, nothing else -------------------------
class TorchEngine:
    """Today's loop: ``(loss / grad_accum).backward()`` per micro-batch, clip, ``opt.step()``."""

    name = "torch"

    def __init__(self, trainer: "Trainer"):
        self.t = trainer
        self.opt = adamw(trainer.module, trainer.p)

    @property
    def param_groups(self) -> list[dict]:
        return self.opt.param_groups  # a new list after load_state_dict: never cache it

    def forward(self, batch: Batch):
        return self.t.loss_fn(batch)

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def backward(self, loss: Tensor, micro: int) -> None:
        (loss / self.t.p.grad_accum).backward()

    def step(self, check_norm: Callable[[float], None]) -> float:
        params = [p for g in self.opt.param_groups for p in g["params"]]
        if self.t.p.clip_norm is not None:
            gnorm = float(torch.nn.utils.clip_grad_norm_(params, self.t.p.clip_norm))
        else:
            gnorm = float(torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None])))
        check_norm(gnorm)
        self.opt.step()
        return gnorm

    def save(self, step: int, state: dict) -> None:
        self.t.ckpt.save(step, trainable_state(self.t.module), self.opt, state)

    def load(self, path, state: dict) -> None:
        if state.get("format", "torch") != "torch":
            raise DataError(f"{path}: written by engine {state.get('format')}; resume it with runtime.engine: "
                            f"{state.get('format')} (or start a new run)")
        model_t, opt_t, _ = self.t.ckpt.load(path)
        load_into(self.t.module, model_t, path / "model.safetensors")
        restore_optimizer(self.opt, opt_t, state["optimizer"])

    def export(self, part: nn.Module, trainable_only: bool) -> dict[str, Tensor]:
        return trainable_state(part) if trainable_only else part.state_dict()


class DeepSpeedEngine:
    """``deepspeed.initialize`` on the module (with the trainer's AdamW); DeepSpeed does the
    accumulation (it scales each micro-batch loss by 1/grad_accum), reduction, clipping and step."""

    name = "deepspeed"

    def __init__(self, trainer: "Trainer"):
        from mamba4net.core import ds_engine

        self.t = trainer
        rt = trainer.runtime
        self.config = ds_engine.build_config(trainer.p, rt, dist.world_size(), trainer.device)
        self.engine = ds_engine.training_engine(_WithLoss(trainer.module, trainer.loss_fn),
                                                adamw(trainer.module, trainer.p), self.config)

    @property
    def param_groups(self) -> list[dict]:
        return self.engine.optimizer.param_groups

    def forward(self, batch: Batch):
        return self.engine(batch)

    def zero_grad(self) -> None:
        pass  # DeepSpeed clears gradients after its optimizer step

    def backward(self, loss: Tensor, micro: int) -> None:
        self.engine.backward(loss)
        if micro < self.t.p.grad_accum - 1:
            self.engine.step()  # not a boundary: DeepSpeed only counts the micro-batch

    def step(self, check_norm: Callable[[float], None]) -> float:
        assert self.engine.is_gradient_accumulation_boundary()
        if not self.engine.zero_optimization():
            # ZeRO stage 0 keeps no norm: take it from the (already averaged) gradients, before the update
            grads = [p.grad for p in self.engine.module.parameters() if p.grad is not None]
            gnorm = float(torch.norm(torch.stack([g.detach().float().norm() for g in grads])))
            check_norm(gnorm)
            self.engine.step()
            return gnorm
        self.engine.step()
        gnorm = float(self.engine.get_global_grad_norm())
        check_norm(gnorm)  # the update is applied already; the run stops before it is checkpointed
        return gnorm

    def _meta(self) -> dict:
        return {"format": "deepspeed", "world_size": dist.world_size(),
                "zero_stage": self.config["zero_optimization"]["stage"]}

    def save(self, step: int, state: dict) -> None:
        self.t.ckpt.save_deepspeed(step, self.engine, {**state, **self._meta()})

    def load(self, path, state: dict) -> None:
        want = self._meta()
        got = {k: state.get(k, "torch" if k == "format" else None) for k in want}
        if got != want:
            raise DataError(f"{path}: checkpoint written with {got}, this run is {want}; resume with the same "
                            "engine, --nproc and zero_stage (or start a new run)")
        loaded, _ = self.engine.load_checkpoint(str(path.parent), tag=path.name, load_module_strict=False,
                                                load_optimizer_states=True, load_lr_scheduler_states=False)
        if loaded is None:
            raise DataError(f"{path}: DeepSpeed could not load this checkpoint")

    def export(self, part: nn.Module, trainable_only: bool) -> dict[str, Tensor]:
        from mamba4net.core.ds_engine import full_state

        return full_state(self.engine, part, trainable_only)


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
        runtime: RuntimeParams | None = None,
        select: tuple[str, bool] | None = None,
    ):
        """``select``: (key of ``valid_fn``'s result, higher is better) that ``keep_best`` ranks by."""
        self.stage, self.module, self.loss_fn, self.data = stage, module, loss_fn, data
        self.p, self.run, self.seed, self.device = params, run, seed, device
        self.valid_fn, self.progress = valid_fn, progress and dist.is_main()
        self.runtime = runtime or RuntimeParams()
        self.ckpt = StageCheckpoints(run.stage_dir(stage))
        if not any(p.requires_grad for p in module.parameters()):
            raise TrainingError(f"stage {stage}: nothing to train (no parameter requires grad)")
        self.engine = DeepSpeedEngine(self) if self.runtime.engine == "deepspeed" else TorchEngine(self)
        # this rank's slice of every global batch
        self.slice = dist.shard_of(params.batch_size) if self.engine.name == "deepspeed" else (0, params.batch_size)
        self.select = select if params.keep_best else None
        if params.keep_best and (select is None or valid_fn is None or self.engine.name == "deepspeed"):
            raise TrainingError(f"stage {stage}: keep_best needs a validation split, a metric to rank by "
                                "and the torch engine")
        self.best: dict | None = None  # {"step", "value"} of the best validation so far

    @property
    def opt(self):
        """The torch optimizer (plain PyTorch engine)."""
        return self.engine.opt

    def _resume(self) -> int:
        found = self.ckpt.latest()
        if found is None:
            if dist.is_main():
                self.run.truncate_metrics(self.stage, 0)  # killed before its first checkpoint
            return 0
        step, path = found
        self.engine.load(path, self.ckpt.state(path))
        if self.select:
            self.best = self._best_at_or_before(step)
        if dist.is_main():
            self.run.truncate_metrics(self.stage, step)
        log.info("stage %s: resumed from %s (step %d)", self.stage, path, step)
        return step

    def _batch(self, step: int, micro: int) -> Batch:
        first = (step * self.p.grad_accum + micro) * self.p.batch_size
        idx = batch_indices(len(self.data), self.p.batch_size, first, self.seed, self.stage)
        lo, hi = self.slice
        return move(self.data.batch(idx[lo:hi]), self.device)

    def fit(self, resume: bool = False) -> dict[str, float]:
        start = self._resume() if resume else 0
        self.module.train()
        last: dict[str, float] = {}
        # without a terminal the loop logs its own lines (step, loss), so the bar logs none
        bar = progress_bar(total=self.p.steps, initial=start, desc=self.stage, enabled=self.progress,
                           log_lines=False)
        t0 = time.perf_counter()
        for step in range(start, self.p.steps):
            torch.manual_seed(stream_seed(self.seed, self.stage, step, 1))
            for group in self.engine.param_groups:
                group["lr"] = lr_at(step, self.p)
            self.engine.zero_grad()
            terms: dict[str, float] = {}
            total = 0.0
            for micro in range(self.p.grad_accum):
                loss, parts = self.engine.forward(self._batch(step, micro))
                if dist.any_rank(not torch.isfinite(loss)):
                    self._fail(step, loss, parts)
                self.engine.backward(loss, micro)
                total += loss.item() / self.p.grad_accum
                for k, v in parts.items():
                    terms[k] = terms.get(k, 0.0) + v / self.p.grad_accum
            gnorm = self.engine.step(lambda g: self._check_norm(step, g))
            if dist.world_size() > 1:  # the global batch's loss: the mean of the ranks' slices
                reduced = dist.mean_across_ranks({"loss": total, **terms})
                total = reduced.pop("loss")
                terms = reduced
            done = step + 1
            last = {"loss": total, **terms, "lr": self.engine.param_groups[0]["lr"], "grad_norm": gnorm}
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}")
            if done % self.p.log_every == 0 or done == self.p.steps:
                last["sec_per_step"] = (time.perf_counter() - t0) / max(1, done - start)
                if dist.is_main():
                    self.run.log_metrics(self.stage, done, last)
                if bar.disable and dist.is_main():  # no terminal: a log line instead of the bar
                    log.info("%s step %d/%d loss %.4f", self.stage, done, self.p.steps, total)
            if self.valid_fn and self.p.eval_every and done % self.p.eval_every == 0 and done < self.p.steps:
                self._validate(done)
            if done % self.p.checkpoint_every == 0 and done < self.p.steps:
                self.engine.save(done, {"stage": self.stage, "seed": self.seed})
        bar.close()
        if self.valid_fn:
            last.update(self._validate(self.p.steps))
        if self.best is not None and self.best["step"] != self.p.steps:
            path = self.ckpt.dir / self.best["file"]
            load_into(self.module, load_checked(path, "best weights"), path)
            log.info("stage %s: kept the weights of step %d (%s %.4g) over the last step's",
                     self.stage, self.best["step"], self.select[0], self.best["value"])
        if self.best is not None:
            last["best_step"], last["best_value"] = self.best["step"], self.best["value"]
        return last

    def export(self, part: nn.Module, trainable_only: bool = False) -> dict[str, Tensor]:
        """Whole tensors of ``part`` (the stage's model) after ``fit``, for ``final.safetensors``:
        its trainable parameters, or its full state dict. Under DeepSpeed this gathers the fp32
        weights from every rank (call it on every rank); the files are those of a 1-process run."""
        return self.engine.export(part, trainable_only)

    def _validate(self, step: int) -> dict[str, float]:
        was_training = self.module.training
        self.module.eval()
        with torch.no_grad():  # every rank evaluates (ZeRO-3 forwards are collective); rank 0 logs
            values = {f"valid_{k}": v for k, v in self.valid_fn().items()}
        self.module.train(was_training)
        if dist.is_main():
            self.run.log_metrics(self.stage, step, values)
        if self.select:
            self._keep_if_best(step, values)
        return values

    def _keep_if_best(self, step: int, values: dict[str, float]) -> None:
        key, higher = self.select
        value = values.get(key)
        if value is None:
            raise TrainingError(f"stage {self.stage}: keep_best ranks by '{key}', which validation does not report")
        if not math.isfinite(value):
            return
        if self.best is not None and not (value > self.best["value"] if higher else value < self.best["value"]):
            return
        previous = self.best
        self.best = {"step": step, "value": float(value), "file": f"best-{step}.safetensors"}
        self.ckpt.dir.mkdir(parents=True, exist_ok=True)
        save_checked(self.ckpt.dir / self.best["file"], trainable_state(self.module), {"step": step})
        write_json(self.ckpt.dir / "best.json", {**self.best, "previous": previous})  # the pointer, last
        keep = {self.best["file"], previous["file"] if previous else None}
        for old in self.ckpt.dir.glob("best-*.safetensors"):
            if old.name not in keep:
                old.unlink()
                sidecar(old).unlink(missing_ok=True)

    def _best_at_or_before(self, step: int) -> dict | None:
        """The best validation recorded at or before ``step`` (a later one was not checkpointed)."""
        info = read_json(self.ckpt.dir / "best.json", missing_ok=True, what="best-validation record")
        if info is None:
            return None
        path = self.ckpt.dir / "best.json"
        try:
            for cand in (info, info.get("previous")):
                if cand and cand["step"] <= step:
                    return {k: cand[k] for k in ("step", "value", "file")}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}: unreadable best-validation record ({exc!r})") from None
        return None

    def _check_norm(self, step: int, gnorm: float) -> None:
        if not math.isfinite(gnorm):
            self._fail(step, torch.tensor(gnorm), {"grad_norm": gnorm})

    def _fail(self, step: int, loss: Tensor, parts: dict[str, float]) -> None:
        try:
            found = self.ckpt.latest()
        except DataError as exc:
            found = (None, f"(damaged: {exc})")
        where = f"last checkpoint {found[1]}" if found else "no checkpoint of this stage yet"
        detail = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
        raise TrainingError(
            f"stage {self.stage} step {step + 1}: loss is {float(loss.detach())} ({detail}); "
            f"stopped, {where} (resume with --resume after fixing the cause)"
        )
