"""The three stages of Mamba4Net, written against the public stage context only.

    adapt_teacher   LoRA on the teacher LLM (encoder and head trained fully) on the task loss
    init_student    the configured initializer maps the teacher's weights into the student (CWR)
    distill         the student learns from the task loss plus terms that read the frozen teacher

torch is imported inside the functions: the method is built when a config is validated.
"""

from __future__ import annotations

import time


def adapt_teacher(ctx) -> None:
    """Adapt the teacher LLM to the task: LoRA on the backbone, encoder and head trained fully."""
    teacher = ctx.model("teacher")
    objective = ctx.objective(teacher)
    ctx.fit({"model": teacher, "objective": objective}, lambda batch: objective(teacher(batch), None, batch),
            valid=teacher)


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
    student = ctx.model("student")
    teacher = ctx.frozen("teacher")  # inference only; never in the optimizer
    objective = ctx.objective(student, teacher)
    s_taps, t_taps = objective.taps("student"), objective.taps("teacher")
    data = ctx.task.data("train")
    if ctx.params.cache_teacher and objective.needs_teacher:
        data = ctx.cache_outputs("teacher", teacher, data, hidden=objective.needs_teacher_hidden, taps=t_taps)

    def loss_fn(batch):
        teacher_out = ctx.outputs("teacher", teacher, batch, taps=t_taps) if objective.needs_teacher else None
        return objective(ctx.forward(student, batch, s_taps), teacher_out, batch)

    ctx.fit({"model": student, "objective": objective}, loss_fn, data, valid=student)
