"""A training objective: the weighted sum of registered loss terms composed in YAML."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mamba4net.core.errors import ConfigError
from mamba4net.core.protocols import Batch, ModelOutput


class Objective(nn.Module):
    """``total = sum_i weight_i * term_i(student_out, teacher_out, batch)``; logs every term."""

    def __init__(self, terms: list[tuple[str, float, object]]):
        super().__init__()
        self.names = [name for name, _, _ in terms]
        self.weights = [float(w) for _, w, _ in terms]
        self.fns = [fn for _, _, fn in terms]
        # terms that own parameters (e.g. a hidden-state projector) are trained with the model
        self.modules_ = nn.ModuleDict({n: fn for n, _, fn in terms if isinstance(fn, nn.Module)})
        self.needs_teacher = any(getattr(fn, "needs_teacher", False) or (getattr(fn, "needs_taps", None) or {}).get("teacher")
                                 for fn in self.fns)
        self.needs_teacher_hidden = any(getattr(fn, "needs_teacher_hidden", False) for fn in self.fns)

    def taps(self, side: str) -> list[str]:
        """The tap patterns the terms read from ``side`` ("student" or "teacher"), each once."""
        out: list[str] = []
        for fn in self.fns:
            for pattern in (getattr(fn, "needs_taps", None) or {}).get(side, ()):
                if pattern not in out:
                    out.append(pattern)
        return out

    def forward(self, student_out: ModelOutput, teacher_out: ModelOutput | None, batch: Batch):
        total: Tensor = torch.zeros((), device=student_out.pred.device)
        parts: dict[str, float] = {}
        for name, weight, fn in zip(self.names, self.weights, self.fns):
            value = fn(student_out, teacher_out, batch)
            parts[name] = float(value.detach())
            total = total + weight * value
        return total, parts


def build_objective(registry, loaded, stage: str, task, d_student: int, d_teacher: int | None) -> Objective:
    terms = []
    seen: dict[str, int] = {}
    for i, node in enumerate(loaded.train_params(stage).losses):
        name = node["name"]
        component = registry.get("losses", name)
        fn = component.build(loaded.params.get(f"train.{stage}.losses.{i}"), task=task,
                             d_student=d_student, d_teacher=d_teacher)
        if getattr(fn, "needs_teacher", False) and d_teacher is None:
            raise ConfigError(f"train.{stage}.losses.{i}: loss '{name}' needs a teacher, stage {stage} has none")
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else f"{name}_{seen[name]}"
        terms.append((label, node.get("weight", 1.0), fn))
    return Objective(terms)
