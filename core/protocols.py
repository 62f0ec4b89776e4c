"""The shapes of the objects plugins hand to the engine.

These are structural (``typing.Protocol``): a plugin needs no base class, only the attributes and
methods below. The engine never looks inside a task's batches: a batch is whatever dict of tensors
the task's ``TaskData.batch`` returns, and only the task's own encoder, head, loss and evaluation
read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

Batch = dict[str, Tensor]


@dataclass
class ModelOutput:
    """What a networking model returns for one batch.

    ``pred``: the head's answer (regression values, action logits, ...).
    ``hidden``: the backbone's last hidden states ``(B, L, d_model)``, for hidden-state alignment.
    ``taps``: named intermediate tensors, filled only when a loss term asks for them
    (:mod:`mamba4net.core.taps`).
    """

    pred: Tensor
    hidden: Tensor | None = None
    taps: dict[str, Tensor] = field(default_factory=dict)


@runtime_checkable
class Backbone(Protocol):
    d_model: int

    def forward(self, inputs_embeds: Tensor) -> Tensor:  # (B, L, D) -> (B, L, D)
        ...


@runtime_checkable
class StreamingBackbone(Backbone, Protocol):
    def init_state(self, batch_size: int) -> Any:
        """A fresh recurrent state for ``batch_size`` independent streams."""

    def step(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        """One token per stream: ``x (B, D) -> y (B, D)``; memory is constant in the stream length."""


# Optional on any backbone: ``tap_points() -> {name: mamba4net.core.taps.TapPoint}``, the named
# intermediate tensors loss terms may ask for (see :mod:`mamba4net.core.taps`).


class TaskData(Protocol):
    """One split of a task, indexable by sample."""

    def __len__(self) -> int: ...

    def batch(self, indices: Tensor) -> Batch:
        """The samples at ``indices`` (a 1-D long tensor) as a dict of tensors."""


@runtime_checkable
class Baseline(Protocol):
    name: str

    def fit(self, task: "Task") -> None:
        """Train on the task's training split (a no-op for rule-based baselines)."""


@runtime_checkable
class Task(Protocol):
    """A networking task: data, loss, metric, evaluation and its default components."""

    name: str
    metric: str  # the headline metric's name, e.g. "mae_deg"
    higher_is_better: bool
    default_encoder: str  # registered encoder name
    default_head: str  # registered head name
    default_baselines: list[str]  # registered baseline names

    def data(self, split: str) -> TaskData:
        """``split`` is one of "train", "valid", "test"."""

    def loss(self, out: ModelOutput, batch: Batch) -> Tensor:
        """The supervised task loss (a scalar) for one batch."""

    def evaluate(self, predictor: Any, split: str) -> dict[str, float]:
        """Score a predictor on a split. ``predictor`` is either a :class:`NetModel`-like callable
        ``batch -> ModelOutput`` or a fitted baseline of this task. Must contain ``self.metric``.

        Optional: ``"<metric>_ci95"``, the half-width of the 95% interval of the metric's mean over
        the split's items (``mamba4net.api.mean_interval`` over per-item values), shown beside the
        metric in the report and ``seeds.md``. A ``"details"`` entry (any JSON-ready value, e.g. per-sample scores) is kept out
        of the scores, saved to ``evaluation_details.json`` and handed, for every model at once,
        to the task's optional ``figures(details: dict[name, value], out_dir) -> [{"title",
        "file"}]``, whose PNGs the report shows."""


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
