"""Entry point of the CJS plugin (``cjs = "mamba4net.plugins.cjs.plugin"``).

Import-light: only pydantic models and the hook marker at import; torch, torch_geometric and the
simulator are imported inside the factories.
"""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl

from .config import DecimaParams, RuleSchedulerParams


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
