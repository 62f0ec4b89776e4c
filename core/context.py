"""What the stages of one run share: config, registry, run directory, device, task and models."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from mamba4net.core.checkpoint import StageCheckpoints, load_into
from mamba4net.core.config import LoadedConfig
from mamba4net.core.errors import Mamba4netError
from mamba4net.core.model import NetModel, build_netmodel
from mamba4net.core.runs import RunDir

log = logging.getLogger("mamba4net")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise Mamba4netError(f"runtime.device is '{name}' but no CUDA device is available")
    return device


@dataclass
class RunContext:
    loaded: LoadedConfig
    registry: Any
    run: RunDir  # where checkpoints are read from (the training run)
    out: RunDir  # where results/report go (the run itself, or an evaluation folder)
    resume: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    results: dict[str, Any] = field(default_factory=dict)
    _task: Any = None
    _models: dict[str, NetModel] = field(default_factory=dict)

    @property
    def cfg(self):
        return self.loaded.cfg

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def progress(self) -> bool:
        return self.cfg.runtime.progress

    @property
    def task(self):
        if self._task is None:
            self._task = self.registry.get("tasks", self.cfg.task["name"]).build(self.loaded.params["task"])
        return self._task

    def checkpoints(self, stage: str) -> StageCheckpoints:
        return StageCheckpoints(self.run.stage_dir(stage))

    def model(self, role: str) -> NetModel:
        """The teacher or student, built once, with the weights of the latest finished stage."""
        if role not in self._models:
            model = build_netmodel(self.registry, self.loaded, role, self.task, self.seed).to(self.device)
            self._models[role] = model
            for stage in (("adapt_teacher",) if role == "teacher" else ("init_student", "distill")):
                ckpt = self.checkpoints(stage)
                if ckpt.done() is not None:
                    load_into(model, ckpt.final_tensors(), ckpt.dir / "final.safetensors")
        return self._models[role]

    def require_done(self, stage: str) -> None:
        if self.checkpoints(stage).done() is None:
            raise Mamba4netError(f"{self.run.root}: stage '{stage}' has not finished in this run")
