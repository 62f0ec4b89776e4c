"""The pipeline stages. Strategies (plugins) choose which run, in which order.

Every stage is idempotent under ``--resume``: a finished stage (``checkpoints/<stage>/done.json``) is
skipped, an unfinished training stage continues from its latest checkpoint.

Under DeepSpeed every rank runs the training stages (and ``init_student``, which is deterministic);
after one, the trained model is dropped from the context and rebuilt from its ``final.safetensors``
the next time a stage asks for it (a ZeRO engine has changed the module in place).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from mamba4net.core import distributed as dist
from mamba4net.core.context import RunContext
from mamba4net.core.objective import build_objective
from mamba4net.core.teacher_cache import WithTeacherOutputs, load_or_compute, pop_teacher_output
from mamba4net.core.trainer import Trainer

log = logging.getLogger("mamba4net")


@dataclass(frozen=True)
class Stage:
    fn: Callable[[RunContext], None]
    trains: bool  # whether the stage has a `train.<stage>` section


def _freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def _release(ctx: RunContext, *roles: str) -> None:
    """After a DeepSpeed stage: forget the engine-wrapped models; ``ctx.model`` rebuilds them."""
    if ctx.cfg.runtime.engine == "deepspeed":
        for role in roles:
            ctx._models.pop(role, None)


def adapt_teacher(ctx: RunContext) -> None:
    """Adapt the teacher LLM to the task: LoRA on the backbone, encoder and head trained fully."""
    ckpt = ctx.checkpoints("adapt_teacher")
    teacher = ctx.model("teacher")
    if ckpt.done():
        log.info("adapt_teacher: already done, weights loaded")
        return
    task = ctx.task
    objective = build_objective(ctx.registry, ctx.loaded, "adapt_teacher", task, teacher.d_model, None)
    module = nn.ModuleDict({"model": teacher, "objective": objective}).to(ctx.device)

    def loss_fn(batch):
        return objective(teacher(batch), None, batch)

    t0 = time.perf_counter()
    trainer = Trainer(
        "adapt_teacher", module, loss_fn, task.data("train"), ctx.cfg.train_params("adapt_teacher"),
        ctx.run, ctx.seed, ctx.device, valid_fn=lambda: task.evaluate(teacher, "valid"), progress=ctx.progress,
        runtime=ctx.cfg.runtime, select=(f"valid_{task.metric}", task.higher_is_better),
    )
    final = trainer.fit(resume=ctx.resume)
    ckpt.mark_done(trainer.export(teacher, trainable_only=True), {"final": final, "seconds": time.perf_counter() - t0})
    _release(ctx, "teacher")


def init_student(ctx: RunContext) -> None:
    """Initialise the student backbone from the teacher's (CWR) or otherwise, by the initializer."""
    ckpt = ctx.checkpoints("init_student")
    student = ctx.model("student")
    if ckpt.done():
        return
    teacher = ctx.model("teacher")
    init = ctx.registry.get("initializers", ctx.cfg.initializer["name"]).build(ctx.loaded.params["initializer"])
    t0 = time.perf_counter()
    with torch.no_grad():
        report = init(teacher.backbone, student.backbone)
    info = {"initializer": ctx.cfg.initializer["name"], "seconds": time.perf_counter() - t0, "report": report}
    ckpt.mark_done(student.state_dict(), info)


def distill(ctx: RunContext) -> None:
    """Train the student on the task loss plus terms that pull it toward the frozen teacher."""
    ckpt = ctx.checkpoints("distill")
    ctx.require_done("init_student")
    student = ctx.model("student")
    if ckpt.done():
        log.info("distill: already done, weights loaded")
        return
    task = ctx.task
    teacher = _freeze(ctx.model("teacher"))  # inference only, on every rank; never in the optimizer
    if ctx.cfg.runtime.shard_teacher:
        from mamba4net.core.ds_engine import inference_engine

        teacher = inference_engine(teacher, ctx.cfg.runtime)  # ZeRO-3: 1/N of its weights per rank
    objective = build_objective(ctx.registry, ctx.loaded, "distill", task, student.d_model, teacher.d_model)
    module = nn.ModuleDict({"model": student, "objective": objective}).to(ctx.device)
    params = ctx.cfg.train_params("distill")
    data = task.data("train")
    if params.cache_teacher and objective.needs_teacher:
        cache = load_or_compute(ckpt.dir / "teacher_outputs.safetensors", teacher, data, ctx.device,
                                objective.needs_teacher_hidden, ctx.progress)
        data = WithTeacherOutputs(data, cache)

    def loss_fn(batch):
        teacher_out = pop_teacher_output(batch)
        if teacher_out is None and objective.needs_teacher:
            with torch.no_grad():
                teacher_out = teacher(batch)
        return objective(student(batch), teacher_out, batch)

    t0 = time.perf_counter()
    trainer = Trainer(
        "distill", module, loss_fn, data, params,
        ctx.run, ctx.seed, ctx.device, valid_fn=lambda: task.evaluate(student, "valid"), progress=ctx.progress,
        runtime=ctx.cfg.runtime, select=(f"valid_{task.metric}", task.higher_is_better),
    )
    final = trainer.fit(resume=ctx.resume)
    ckpt.mark_done(trainer.export(student), {"final": final, "seconds": time.perf_counter() - t0})
    if dist.is_main():
        (ckpt.dir / "teacher_outputs.safetensors").unlink(missing_ok=True)
    _release(ctx, "student", "teacher")


def evaluate(ctx: RunContext) -> None:
    """Teacher, student and the task's baselines on one split, side by side -> results.json."""
    from mamba4net.core.evaluation import evaluate_all

    evaluate_all(ctx)


def benchmark(ctx: RunContext) -> None:
    """Size and speed of teacher vs student (the efficiency section of results.json)."""
    from mamba4net.core.efficiency import measure_efficiency

    measure_efficiency(ctx)


STAGES: dict[str, Stage] = {
    "adapt_teacher": Stage(adapt_teacher, trains=True),
    "init_student": Stage(init_student, trains=False),
    "distill": Stage(distill, trains=True),
    "evaluate": Stage(evaluate, trains=False),
    "benchmark": Stage(benchmark, trains=False),
}
