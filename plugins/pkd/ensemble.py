"""Ensembles of students and the anytime cascade, as predictors the task evaluates like a model.

An ensemble of students ``s1..sk`` answers ``F_k = sum_j w_j f_j`` (additive in the heads' outputs:
logits for classification, predictions for regression); its FLOPs per sample are the students'
summed. The cascade evaluates the students in order and stops, per sample, at the first prefix
ensemble whose confidence (largest class probability) reaches a threshold; its cost is the
average over samples of the FLOPs of the students it ran.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamba4net.core.protocols import Batch, ModelOutput


class Ensemble(nn.Module):
    """``F = sum_j w_j f_j`` over ``students``; ``flops`` per sample of each; ``teacher_flops`` for the fraction."""

    def __init__(self, students: list[nn.Module], weights: list[float], flops: list[float], teacher_flops: float):
        super().__init__()
        self.students = nn.ModuleList(students)
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32))
        self.flops, self.teacher_flops = list(flops), float(teacher_flops)

    def forward(self, batch: Batch) -> ModelOutput:
        preds = [s(batch).pred for s in self.students]
        return ModelOutput(pred=sum(w * p for w, p in zip(self.weights, preds)))

    def extra_scores(self) -> dict[str, float]:
        total = float(sum(self.flops))
        return {"flops_per_sample": total, "flops_fraction": total / self.teacher_flops}


class Cascade(nn.Module):
    """Students in order; per sample, exit at the first prefix ensemble with max softmax >= ``threshold``.
    ``prefix_weights[k]``: the weights of the ensemble of the first k+1 students."""

    def __init__(self, students: list[nn.Module], prefix_weights: list[list[float]], flops: list[float],
                 teacher_flops: float, threshold: float):
        super().__init__()
        self.students = nn.ModuleList(students)
        self.prefix_weights = [list(w) for w in prefix_weights]
        self.flops, self.teacher_flops, self.threshold = list(flops), float(teacher_flops), threshold
        self.samples, self.spent = 0, 0.0

    def forward(self, batch: Batch) -> ModelOutput:
        preds = [s(batch).pred for s in self.students]  # every student: the exit is chosen after
        out, spent = cascade_exit(preds, self.prefix_weights, self.flops, self.threshold)
        self.samples += len(out)
        self.spent += float(spent.sum())
        return ModelOutput(pred=out)

    def extra_scores(self) -> dict[str, float]:
        avg = self.spent / max(1, self.samples)
        return {"flops_per_sample": avg, "flops_fraction": avg / self.teacher_flops, "threshold": self.threshold}


def prefix_outputs(preds: list[Tensor], prefix_weights: list[list[float]]) -> list[Tensor]:
    """``F_k`` for every prefix k (``prefix_weights[k]`` holds k+1 weights)."""
    return [sum(w * p for w, p in zip(weights, preds)) for weights in prefix_weights[: len(preds)]]


def cascade_exit(preds: list[Tensor], prefix_weights: list[list[float]], flops: list[float],
                 threshold: float) -> tuple[Tensor, Tensor]:
    """(the cascade's logits (B, C), FLOPs spent per sample (B,)) for every student's logits."""
    prefixes = prefix_outputs(preds, prefix_weights)
    confident = torch.stack([F.softmax(p.float(), -1).amax(-1) >= threshold for p in prefixes], 1)  # (B, K)
    confident[:, -1] = True  # the last prefix always answers
    exit_at = confident.float().argmax(1)  # first confident prefix, (B,)
    stacked = torch.stack(prefixes, 1)  # (B, K, C)
    out = stacked[torch.arange(len(exit_at)), exit_at]
    cumulative = torch.tensor(flops, dtype=torch.float64).cumsum(0)
    return out, cumulative[exit_at]


def fit_weights(preds: list[Tensor], loss_fn, init: list[float], steps: int = 200) -> list[float]:
    """Weights ``w`` of ``F = sum_j w_j f_j`` minimising ``loss_fn(F)`` on held-out outputs (Adam on
    a handful of scalars, from ``init``)."""
    w = torch.tensor(init, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    stacked = torch.stack([p.float() for p in preds])  # (K, N, ...)
    shape = (-1,) + (1,) * (stacked.dim() - 1)
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn((w.view(shape) * stacked).sum(0))
        loss.backward()
        opt.step()
    return [float(x) for x in w.detach()]
