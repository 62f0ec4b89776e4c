"""Entry point of the CJS plugin (``cjs = "mamba4net.plugins.cjs.plugin"``).

Import-light: only pydantic models and the hook marker at import; torch, torch_geometric and the
simulator are imported inside the factories.
"""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl

from .config import RuleSchedulerParams


def _rule(name: str):
    def build(params: RuleSchedulerParams, *, task=None):
        from .baselines import RuleBaseline

        return RuleBaseline(name)

    return build


@hookimpl
def mamba4net_register_baselines(register):
    for name in ("fifo", "fair", "srwf"):
        register(name, _rule(name), params=RuleSchedulerParams, task="cjs")
