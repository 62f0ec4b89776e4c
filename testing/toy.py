"""A tiny synthetic regression task, registered like any plugin, for fast engine tests.

Samples are sequences ``x (L, 2)``; the answer is ``y (2,)``: the mean of the sequence plus the
sine of its last step. A small backbone learns it in a few dozen steps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from mamba4net.core.hookspecs import hookimpl
from mamba4net.core.protocols import Batch, ModelOutput


class ToyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n_train: int = Field(256, gt=0)
    n_valid: int = Field(64, gt=0)
    n_test: int = Field(64, gt=0)
    seq_len: int = Field(8, gt=1)
    seed: int = 0


class ToyData:
    def __init__(self, n: int, seq_len: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, seq_len, 2, generator=g)  # (N, L, 2)
        self.y = self.x.mean(1) + torch.sin(self.x[:, -1])  # (N, 2)

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, indices: Tensor) -> Batch:
        return {"x": self.x[indices], "y": self.y[indices]}


class ToyTask:
    name = "toy"
    metric = "mse"
    higher_is_better = False
    default_encoder = "toy_encoder"
    default_head = "toy_head"
    default_baselines = ["toy_mean"]

    def __init__(self, params: ToyParams):
        self.params = params
        sizes = {"train": params.n_train, "valid": params.n_valid, "test": params.n_test}
        self._data = {s: ToyData(n, params.seq_len, params.seed * 10 + i) for i, (s, n) in enumerate(sizes.items())}

    def data(self, split: str) -> ToyData:
        return self._data[split]

    def loss(self, out: ModelOutput, batch: Batch) -> Tensor:
        return F.mse_loss(out.pred, batch["y"])

    @torch.no_grad()
    def evaluate(self, predictor: Any, split: str) -> dict[str, float]:
        data = self.data(split)
        batch = data.batch(torch.arange(len(data)))
        if hasattr(predictor, "predict"):
            pred = predictor.predict(batch)
        else:
            was = predictor.training
            predictor.eval()
            pred = predictor(batch).pred
            predictor.train(was)
        return {"mse": float(F.mse_loss(pred, batch["y"])), "n_samples": len(data)}


class ToyEncoder(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(2, d_model)

    def forward(self, batch: Batch) -> Tensor:
        return self.proj(batch["x"])  # (B, L, 2) -> (B, L, D)


class ToyHead(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.out = nn.Linear(d_model, 2)

    def forward(self, hidden: Tensor, batch: Batch) -> Tensor:
        return self.out(hidden[:, -1])  # (B, D) -> (B, 2)


class ToyMean:
    """Predicts the training mean of y (a baseline any model should beat)."""

    name = "toy_mean"

    def fit(self, task: ToyTask) -> None:
        self.mean = task.data("train").y.mean(0)

    def predict(self, batch: Batch) -> Tensor:
        return self.mean.expand(len(batch["x"]), 2)


class ToyPlugin:
    """Add with ``registry.add_plugin(ToyPlugin(), name="toy")``."""

    @hookimpl
    def mamba4net_register_tasks(self, register):
        register("toy", ToyTask, params=ToyParams)

    @hookimpl
    def mamba4net_register_encoders(self, register):
        register("toy_encoder", lambda params, task, d_model: ToyEncoder(d_model))

    @hookimpl
    def mamba4net_register_heads(self, register):
        register("toy_head", lambda params, task, d_model: ToyHead(d_model))

    @hookimpl
    def mamba4net_register_baselines(self, register):
        register("toy_mean", lambda params, task: ToyMean(), task="toy")


def tiny_pipeline_config(**overrides: Any) -> dict[str, Any]:
    """A complete pipeline config on the toy task with tiny random models (a few seconds on CPU)."""
    from mamba4net.core.yamlio import deep_merge

    base = {
        "name": "tiny",
        "seed": 0,
        "task": {"name": "toy"},
        "teacher": {
            "name": "hf_causal_lm",
            "model": "random",
            "random_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                              "num_key_value_heads": 2, "intermediate_size": 64},
            "lora": {"r": 4, "alpha": 8},
        },
        "student": {"name": "hybrid_mamba", "d_model": 16, "n_layers": 3, "d_state": 8, "headdim": 8,
                    "chunk_size": 4, "attn_heads": 2, "attn_kv_heads": 2, "attn_layers": [2],
                    "d_intermediate": 32},
        "train": {
            "adapt_teacher": {"steps": 12, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2,
                              "log_every": 2, "checkpoint_every": 4},
            "distill": {"steps": 12, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "log_every": 2,
                        "checkpoint_every": 4, "losses": [{"name": "task"}, {"name": "mse_to_teacher"}]},
        },
        "benchmark": {"repeats": 2},
        "runtime": {"threads": 1, "progress": False},
    }
    return deep_merge(base, overrides)


def toy_registry():
    """A fresh registry: every installed plugin plus the toy task."""
    from mamba4net.registry.manager import Registry

    registry = Registry()
    registry.add_plugin(ToyPlugin(), name="toy")
    return registry


def run_tiny_pipeline(root, **overrides: Any):
    """:func:`tiny_pipeline_config` (with ``overrides``) run into the folder ``root`` with a registry
    of its own; returns ``root``. For module-scoped fixtures that need one finished run."""
    from mamba4net.core.config import validate_data
    from mamba4net.core.pipeline import run_pipeline

    registry = toy_registry()
    run_pipeline(validate_data(tiny_pipeline_config(**overrides), registry=registry), root, registry=registry)
    return root
