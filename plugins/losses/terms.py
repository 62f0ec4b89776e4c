"""The built-in loss terms. Each is ``term(student_out, teacher_out, batch) -> scalar``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamba4net.core.protocols import Batch, ModelOutput


class TaskLoss:
    needs_teacher = False

    def __init__(self, task):
        self.task = task

    def __call__(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> Tensor:
        return self.task.loss(student, batch)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over all leading dimensions.

    Computed by the kernel registry's ``kd_loss`` op for the logits' device: the fused Triton kernel
    on GPUs, :func:`kd_loss_ref` otherwise (``runtime.kernels: {kd_loss: ...}`` overrides)."""
    from mamba4net.core.kernels import resolve_kernel

    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"kd_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    return resolve_kernel("kd_loss", student_logits.device.type)(student_logits, teacher_logits, temperature)


def kd_loss_ref(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """The readable PyTorch ``kd_loss``: two log-softmaxes and the KL sum (the reference twin)."""
    t = temperature
    s_logp = F.log_softmax(student_logits / t, dim=-1)  # (..., C)
    t_logp = F.log_softmax(teacher_logits / t, dim=-1)  # (..., C)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # (...)
    return kl.mean() * t * t


class KDLoss:
    needs_teacher = True

    def __init__(self, temperature: float, alpha: float):
        self.temperature, self.alpha = temperature, alpha

    def __call__(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> Tensor:
        return self.alpha * kd_loss(student.pred, teacher.pred.detach(), self.temperature)


class MSEToTeacher:
    needs_teacher = True

    def __call__(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> Tensor:
        return F.mse_loss(student.pred, teacher.pred.detach())


class HiddenAlign(nn.Module):
    """A linear map d_student -> d_teacher, trained with the student; MSE or cosine distance."""

    needs_teacher = True
    needs_teacher_hidden = True

    def __init__(self, d_student: int, d_teacher: int, metric: str, tokens: str):
        super().__init__()
        self.proj = nn.Linear(d_student, d_teacher, bias=False)
        self.metric, self.tokens = metric, tokens

    def forward(self, student: ModelOutput, teacher: ModelOutput | None, batch: Batch) -> Tensor:
        s, t = student.hidden, teacher.hidden.detach()  # (B, L, Ds), (B, L, Dt)
        if self.tokens == "last":
            s, t = s[:, -1:], t[:, -1:]
        s = self.proj(s)  # (B, L, Dt)
        if self.metric == "cosine":
            return (1 - F.cosine_similarity(s, t, dim=-1)).mean()
        return F.mse_loss(s, t) / t.pow(2).mean().clamp_min(1e-8)  # scale-free: teacher norms vary
