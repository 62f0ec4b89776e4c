"""The three stages of Mamba4Net, written against the public stage context only. Other methods
reuse ``fit_on_task`` and ``distill_from`` (mohawk, pkd).

    adapt_teacher   LoRA on the teacher LLM (encoder and head trained fully) on the task loss
    init_student    the configured initializer maps the teacher's weights into the student (CWR)
    distill         the student learns from the task loss plus terms that read the frozen teacher

torch is imported inside the functions: the method is built when a config is validated.
"""

from __future__ import annotations

import time


def fit_on_task(ctx, role: str) -> None:
    """Train ``role`` on the stage's loss terms alone (no teacher), validated on the task."""
    model = ctx.model(role)
    objective = ctx.objective(model)
    ctx.fit({"model": model, "objective": objective}, lambda batch: objective(model(batch), None, batch),
            valid=model)


def adapt_teacher(ctx) -> None:
    """Adapt the teacher LLM to the task: LoRA on the backbone, encoder and head trained fully."""
    fit_on_task(ctx, "teacher")


def init_student(ctx) -> dict:
    """Initialise the student backbone from the teacher's (CWR) or otherwise, by the initializer."""
    import torch

    student, teacher = ctx.model("student"), ctx.model("teacher")
    initialize = ctx.build("initializer")
    t0 = time.perf_counter()
    with torch.no_grad():
        report = initialize(teacher.backbone, student.backbone)
    return {"initializer": ctx.config.initializer["name"], "seconds": time.perf_counter() - t0, "report": report}


def distill(ctx) -> None:
    """Train the student on the task loss plus terms that pull it toward the frozen teacher."""
    distill_from(ctx, "student", "teacher")


def distill_from(ctx, student_role: str, teacher_role: str) -> None:
    """Train ``student_role`` on the stage's loss terms, which may read the frozen ``teacher_role``'s
    outputs (computed once over the training split with ``cache_teacher``, else every step)."""
    student = ctx.model(student_role)
    teacher = ctx.frozen(teacher_role)  # inference only; never in the optimizer
    objective = ctx.objective(student, teacher)
    s_taps, t_taps = objective.taps("student"), objective.taps("teacher")
    data = ctx.task.data("train")
    if ctx.params.cache_teacher and objective.needs_teacher:
        data = ctx.cache_outputs(teacher_role, teacher, data, hidden=objective.needs_teacher_hidden, taps=t_taps)

    def loss_fn(batch):
        teacher_out = ctx.outputs(teacher_role, teacher, batch, taps=t_taps) if objective.needs_teacher else None
        return objective(ctx.forward(student, batch, s_taps), teacher_out, batch)

    ctx.fit({"model": student, "objective": objective}, loss_fn, data, valid=student)
