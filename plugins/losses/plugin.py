"""Built-in loss terms: task, kd, mse_to_teacher, hidden_align."""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl
from mamba4net.plugins.losses.config import HiddenAlignParams, KDParams, MSEToTeacherParams, TaskLossParams

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def build_task_loss(params, *, task, d_student=None, d_teacher=None):
    from mamba4net.plugins.losses.terms import TaskLoss

    return TaskLoss(task)


def build_kd(params, *, task, d_student=None, d_teacher=None):
    from mamba4net.plugins.losses.terms import KDLoss

    own = getattr(task, "kd_loss", None)  # a task whose prediction is not one distribution names its own
    if own:
        raise ValueError(f"loss 'kd' does not fit task '{task.name}' (its prediction is not one softmax "
                         f"distribution): use '{own}'")

    return KDLoss(params.temperature, params.alpha)


def build_mse_to_teacher(params, *, task, d_student=None, d_teacher=None):
    from mamba4net.plugins.losses.terms import MSEToTeacher

    return MSEToTeacher()


def build_hidden_align(params, *, task, d_student, d_teacher):
    from mamba4net.plugins.losses.terms import HiddenAlign

    return HiddenAlign(d_student, d_teacher or d_student, params.metric, params.tokens)


def kd_loss_torch():
    """The ``kd_loss`` op in PyTorch (the reference every other implementation is tested against)."""
    from mamba4net.plugins.losses.terms import kd_loss_ref

    return kd_loss_ref


@hookimpl
def mamba4net_register_kernels(register):
    register("kd_loss_torch", kd_loss_torch, op="kd_loss", priority=0)


@hookimpl
def mamba4net_register_losses(register):
    register("task", build_task_loss, params=TaskLossParams)
    register("kd", build_kd, params=KDParams)
    register("mse_to_teacher", build_mse_to_teacher, params=MSEToTeacherParams)
    register("hidden_align", build_hidden_align, params=HiddenAlignParams)
