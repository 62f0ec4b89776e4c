"""Registers the ``mohawk`` method: roles teacher and student; stages [adapt_teacher] ->
mohawk_init -> mohawk_matrix -> mohawk_hidden -> mohawk_distill. A stage left out of
``method.stages`` is skipped (its ``train`` section may stay: ablations change one key)."""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl
from mamba4net.core.method import Method, Role, Stage

from .config import DistillParams, HiddenParams, MatrixParams, MohawkParams

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def build_mohawk(params: MohawkParams) -> Method:
    """MOHAWK (Bick et al. 2024; Llamba 2025): matrix orientation, hidden-state alignment, then
    end-to-end distillation of a Transformer into Mamba-2 mixers."""
    from . import stages

    chosen = []
    if params.adapt_teacher:
        chosen.append(Stage("adapt_teacher", stages.adapt_teacher, writes=("teacher",), trains=True,
                            description="LoRA-adapt the teacher to the task"))
    both, student = ("teacher", "student"), ("student",)
    chosen += [
        Stage("mohawk_init", stages.init(params), reads=("teacher",), writes=student,
              description="attention -> mixer weights (the initializer), embeddings copied"),
        Stage("mohawk_matrix", stages.matrix(params), reads=both, writes=student, trains=True, params=MatrixParams,
              losses=(), taps={"teacher": ("block_in.*", "attn_probs.*")},
              description="stage 1: mixer matrices toward the attention matrices"),
        Stage("mohawk_hidden", stages.hidden(params), reads=both, writes=student, trains=True, params=HiddenParams,
              losses=(), taps={"teacher": ("block_in.*", "block_out.*")},
              description="stage 2: each block toward the teacher's block"),
        Stage("mohawk_distill", stages.distill(params), reads=both, writes=student, trains=True,
              params=DistillParams, losses=({"name": "kd", "temperature": 1.0},),
              description="stage 3: end-to-end distillation"),
    ]
    return Method(name="mohawk", roles=(Role("teacher", "teacher"), Role("student", "student")),
                  stages=tuple(chosen), description=build_mohawk.__doc__)


@hookimpl
def mamba4net_register_methods(register):
    register("mohawk", build_mohawk, params=MohawkParams)
