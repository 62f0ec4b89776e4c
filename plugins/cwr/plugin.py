"""Student initializers: ``random`` (the student's own initialisation, the ablation's control)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mamba4net.core.hookspecs import hookimpl


class RandomInitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None = None  # re-initialise with this seed; None keeps the student's own init


def build_random(params: RandomInitParams):
    def initialize(teacher, student) -> dict:
        if params.seed is not None:
            import torch

            torch.manual_seed(params.seed)
            for module in student.modules():
                if module is not student and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        return {"initializer": "random", "seed": params.seed}

    return initialize


@hookimpl
def mamba4net_register_initializers(register):
    register("random", build_random, params=RandomInitParams)
