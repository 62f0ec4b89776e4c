"""Registers the ``mamba4net`` method: roles teacher and student, stages adapt_teacher ->
init_student -> distill (then core evaluates, exports and benchmarks both roles)."""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl
from mamba4net.core.method import Method, Role, Stage

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def build_mamba4net(params: None) -> Method:
    """Mamba4Net (2025): adapt the teacher with LoRA, CWR-initialise the student, distil."""
    from mamba4net.plugins.mamba4net import stages

    return Method(
        name="mamba4net",
        roles=(Role("teacher", "teacher"), Role("student", "student")),
        stages=(
            Stage("adapt_teacher", stages.adapt_teacher, writes=("teacher",), trains=True,
                  description="LoRA-adapt the teacher LLM to the task"),
            Stage("init_student", stages.init_student, reads=("teacher",), writes=("student",),
                  description="initialise the student from the teacher (the config's initializer)"),
            Stage("distill", stages.distill, reads=("teacher", "student"), writes=("student",), trains=True,
                  losses=({"name": "task"}, {"name": "mse_to_teacher"}),
                  description="task loss plus terms that pull the student toward the frozen teacher"),
        ),
        description=build_mamba4net.__doc__,
    )


@hookimpl
def mamba4net_register_methods(register):
    register("mamba4net", build_mamba4net)
