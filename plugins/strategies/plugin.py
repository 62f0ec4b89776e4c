"""Distillation strategies: the stage sequence a pipeline runs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mamba4net.core.hookspecs import hookimpl


class Mamba4netStrategyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    benchmark: bool = True  # measure size/throughput/latency after evaluation


def build_mamba4net(params: Mamba4netStrategyParams) -> list[str]:
    """Mamba4Net (2025): adapt the teacher with LoRA, CWR-initialise the student, distil, evaluate."""
    stages = ["adapt_teacher", "init_student", "distill", "evaluate"]
    return stages + (["benchmark"] if params.benchmark else [])


@hookimpl
def mamba4net_register_strategies(register):
    register("mamba4net", build_mamba4net, params=Mamba4netStrategyParams)
