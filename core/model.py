"""A networking model is ``encoders -> backbone -> head`` (paper Fig. 2); built from the registry."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import nn

from mamba4net.core.protocols import Batch, ModelOutput
from mamba4net.core.seeding import stream_seed


class NetModel(nn.Module):
    """Glue only: the task's encoder makes tokens, the backbone mixes them, the head answers."""

    def __init__(self, encoder: nn.Module, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.backbone, self.head = encoder, backbone, head

    @property
    def d_model(self) -> int:
        return int(self.backbone.d_model)

    def forward(self, batch: Batch) -> ModelOutput:
        tokens = self.encoder(batch)  # (B, L, D)
        hidden = self.backbone(tokens)  # (B, L, D)
        return ModelOutput(pred=self.head(hidden, batch), hidden=hidden)


# the registry kind of each top-level node a role can be built from
BACKBONE_KINDS = {"teacher": "teachers", "student": "students"}


def build_netmodel(registry, loaded, role: str, task, seed: int) -> NetModel:
    """Build the model of one role of the config's method, freshly initialised (seeded by the run
    seed and the role's name; torch's global generator is left as it was, so the order in which
    roles are built changes nothing): the backbone from the role's node with its overrides, the
    task's encoder and head (or the config's) at the backbone's width."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(stream_seed(seed, f"build:{role}"))
        return _build(registry, loaded, role, task)


def _build(registry, loaded, role: str, task) -> NetModel:
    cfg = loaded.cfg
    spec = loaded.method.role(role)
    node = getattr(cfg, spec.config_key)
    backbone = registry.get(BACKBONE_KINDS[spec.config_key], node["name"]).build(loaded.role_params[role])
    d_model = int(backbone.d_model)
    parts = {}
    for part, kind, default in (("encoder", "encoders", task.default_encoder), ("head", "heads", task.default_head)):
        node = getattr(cfg, part)
        component = registry.get(kind, node["name"] if node else default)
        params = loaded.params.get(part) if node else None
        parts[part] = component.build(params if params is not None else {}, task=task, d_model=d_model)
    return NetModel(parts["encoder"], backbone, parts["head"])


@contextmanager
def eval_mode(predictor: Any) -> Iterator[None]:
    """Evaluation mode for the duration of a ``with`` block, then the previous mode again.
    Anything with a boolean ``training`` and a ``train(mode)`` method counts (an ``nn.Module``,
    a learned baseline); anything else (a rule baseline) is left alone."""
    modal = isinstance(predictor, nn.Module) or (
        isinstance(getattr(predictor, "training", None), bool) and callable(getattr(predictor, "train", None))
    )
    if not modal:
        yield
        return
    was_training = predictor.training
    predictor.train(False)
    try:
        yield
    finally:
        predictor.train(was_training)
