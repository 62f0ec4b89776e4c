"""Registers the ``pkd`` method: roles teacher and students s1..sK, stages teacher -> s1 -> ... ->
sK -> ensemble; predictors ensemble_k and cascade; a FLOPs summary."""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl
from mamba4net.core.method import Method, Role, Stage

from .config import PKDParams

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def shrink_rule(params: PKDParams, k: int):
    """Overrides of student k (0-based) under the shrink rule: the node's integer params times the
    factors, k times, rounded to their multiple (at least that multiple, at least 1)."""

    def overrides(node: dict) -> dict:
        out = {}
        for key, factor in params.shrink.items():
            if key not in node:
                raise ValueError(f"shrink: the student node sets no '{key}' to shrink (give it explicitly)")
            step = params.multiple_of.get(key, 1)
            value = node[key] * factor ** k
            out[key] = max(step, int(round(value / step)) * step)
        return out

    return overrides


def build_pkd(params: PKDParams) -> Method:
    """Progressive distillation (Mamba-PKD): a chain of ever smaller students, each learning what its
    predecessors still get wrong; ensembles and an anytime cascade, with FLOPs accounted."""
    from . import report, stages

    names = [f"s{k + 1}" for k in range(params.n_students)]
    sizes = params.students if params.students is not None else [shrink_rule(params, k) for k in range(len(names))]
    soft = ({"name": "task", "weight": params.alpha}, {"name": params.soft, "weight": 1.0 - params.alpha})
    students = tuple(Role(n, "student", overrides=size) for n, size in zip(names, sizes))
    chain = [Stage(n, stages.student_stage(k, names, params), reads=("teacher", *names[:k]), writes=(n,),
                   trains=True, losses=soft, description=f"student {k + 1} of the chain")
             for k, n in enumerate(names)]
    return Method(
        name="pkd",
        roles=(Role("teacher", "teacher"), *students),
        stages=(Stage("teacher", stages.train_teacher, writes=("teacher",), trains=True,
                      description="the teacher learns the task"),
                *chain,
                Stage(stages.ENSEMBLE_STAGE, stages.ensemble_stage(names, params), reads=tuple(names),
                      description="prefix-ensemble weights and the cascade threshold, fitted on valid")),
        predictors=report.predictors,
        summarize=lambda ctx, results: report.summarize(ctx, results, params),
        description=build_pkd.__doc__,
    )


@hookimpl
def mamba4net_register_methods(register):
    register("pkd", build_pkd, params=PKDParams)
