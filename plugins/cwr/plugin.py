"""Entry point of the ``cwr`` plugin: the student initializers.

* ``random``: the student's own initialisation (the ablation's control);
* ``cwr``: cross-architecture weight reuse from the teacher (paper section III-C):
  Q->C, K->B, V->x, O->out_proj, norms and MLPs, the student's attention layers from the teacher's;
  ``copy`` for a student as wide as the teacher, ``svd`` (rank-r truncated SVD) for a narrower one.

Import-light: pydantic parameters only; torch is imported when a config builds an initializer.
"""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl

from .config import CWRParams, RandomInitParams

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)

__all__ = ["CWRParams", "RandomInitParams", "build_cwr", "build_random"]


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


def build_cwr(params: CWRParams):
    """``factory(params) -> callable(teacher, student) -> report`` (see ``initializer.py``)."""
    from .initializer import CWRInitializer

    return CWRInitializer(params)


@hookimpl
def mamba4net_register_initializers(register):
    register("random", build_random, params=RandomInitParams)
    register("cwr", build_cwr, params=CWRParams)
