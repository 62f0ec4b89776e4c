"""Entry-point module of the ``hf_teacher`` plugin: registers the ``hf_causal_lm`` teacher.

Import-light: only pydantic parameters and the hook marker load here; torch, transformers and
peft are imported when a config actually builds the teacher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mamba4net.core.hookspecs import hookimpl

from .config import HFTeacherParams, LoRAParams, RandomTeacherConfig

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)

if TYPE_CHECKING:  # pragma: no cover
    from .model import HFTeacherBackbone

__all__ = ["HFTeacherParams", "LoRAParams", "RandomTeacherConfig", "build_teacher"]


def build_teacher(params: HFTeacherParams | None = None) -> "HFTeacherBackbone":
    """Factory of ``hf_causal_lm``: load (or convert once) the model, truncate, add LoRA."""
    from .model import HFTeacherBackbone

    return HFTeacherBackbone.from_params(params if params is not None else HFTeacherParams())


@hookimpl
def mamba4net_register_teachers(register):
    register("hf_causal_lm", build_teacher, params=HFTeacherParams)
