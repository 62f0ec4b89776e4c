"""Entry point of the CJS plugin (``cjs = "mamba4net.plugins.cjs.plugin"``).

Import-light: only pydantic models and the hook marker at import; torch, torch_geometric and the
simulator are imported inside the factories.
"""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl

from .config import CJSKDParams, CJSParams, DecimaParams, RuleSchedulerParams, SeqEncoderParams, SeqHeadParams

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def _rule(name: str):
    def build(params: RuleSchedulerParams, *, task=None):
        from .baselines import RuleBaseline

        return RuleBaseline(name)

    return build


@hookimpl
def mamba4net_register_baselines(register):
    for name in ("fifo", "fair", "srwf"):
        register(name, _rule(name), params=RuleSchedulerParams, task="cjs")
    register("decima", build_decima, params=DecimaParams, task="cjs")


def build_graph_encoder(params, *, task=None, d_model: int):
    from .encoder import GraphTokenEncoder

    return GraphTokenEncoder(d_model, hidden=params.hidden, rounds=params.rounds)


def build_decima(params, *, task=None):
    from .config import ClusterParams
    from .decima import DecimaBaseline

    cluster = getattr(getattr(task, "params", None), "cluster", None)
    return DecimaBaseline(params, cluster if isinstance(cluster, ClusterParams) else None)


@hookimpl
def mamba4net_register_encoders(register):
    from .config import GraphEncoderParams

    register("cjs_graph", build_graph_encoder, params=GraphEncoderParams)
    register("cjs_tokens", build_token_encoder, params=SeqEncoderParams)


# --- the distillation task: return-conditioned sequence policies (see .task, .tokens) ----------
def build_task(params: CJSParams):
    from .task import CJSTask

    return CJSTask(params)


def build_token_encoder(params: SeqEncoderParams, *, task, d_model: int):
    from .tokens import CJSTokenEncoder

    tp = task.params
    return CJSTokenEncoder(d_model, hidden=params.hidden, rounds=params.rounds, window=tp.window,
                           limit_levels=tp.limit_levels)


def build_policy_head(params: SeqHeadParams, *, task, d_model: int):
    from .tokens import CJSPolicyHead

    tp = task.params
    return CJSPolicyHead(d_model, max_stages=tp.max_stages, limit_levels=tp.limit_levels, hidden=params.hidden)


def build_kd(params: CJSKDParams, *, task, d_student=None, d_teacher=None):
    from .tokens import CJSKDLoss

    max_stages = getattr(getattr(task, "params", None), "max_stages", None)
    if max_stages is None:
        raise ValueError(f"loss 'cjs_kd' needs the cjs task, got {getattr(task, 'name', task)!r}")
    return CJSKDLoss(max_stages, params.temperature, params.limit_weight)


@hookimpl
def mamba4net_register_tasks(register):
    register("cjs", build_task, params=CJSParams)


@hookimpl
def mamba4net_register_heads(register):
    register("cjs_policy", build_policy_head, params=SeqHeadParams)


@hookimpl
def mamba4net_register_losses(register):
    register("cjs_kd", build_kd, params=CJSKDParams)


def load_manifest(params=None):
    from pathlib import Path

    from mamba4net.core.datasets import read_manifest

    return read_manifest(Path(__file__).with_name("data_manifest.json"))


@hookimpl
def mamba4net_register_datasets(register):
    register("cjs", load_manifest)
