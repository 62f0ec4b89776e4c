"""Entry point of the ABR plugin (``abr = "mamba4net.plugins.abr.plugin"``).

Import-light: only pydantic models and the hook marker at import; numpy, torch and the simulator
are imported inside the factories, when a config asks for a component.
"""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl

from .baselines.config import BBAParams, PensieveParams, RateBasedParams, RobustMPCParams
from .config import ABRParams, PolicyHeadParams, StateEncoderParams

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def build_task(params: ABRParams):
    from .task import ABRTask

    return ABRTask(params)


def build_encoder(params: StateEncoderParams, *, task, d_model: int):
    from .encoder import ABRStateEncoder

    return ABRStateEncoder(d_model, layout=task.params.token_layout, hidden=params.hidden,
                           conv_channels=params.conv_channels)


def build_head(params: PolicyHeadParams, *, task, d_model: int):
    from .head import PolicyHead

    return PolicyHead(d_model, task.params.tokens_per_decision, hidden=params.hidden)


@hookimpl
def mamba4net_register_tasks(register):
    register("abr", build_task, params=ABRParams)


@hookimpl
def mamba4net_register_encoders(register):
    register("abr_state", build_encoder, params=StateEncoderParams)


@hookimpl
def mamba4net_register_heads(register):
    register("abr_policy", build_head, params=PolicyHeadParams)


# --- baselines (rule policies and the learned Pensieve policy) ---------------------------------
def build_bba(params: BBAParams, *, task):
    from .baselines.bba import BBA

    return BBA(params.reservoir_s, params.cushion_s)


def build_robust_mpc(params: RobustMPCParams, *, task):
    from .baselines.mpc import RobustMPC

    return RobustMPC(params.horizon, params.past, params.max_jump, params.genet_sizes)


def build_rate_based(params: RateBasedParams, *, task):
    from .baselines.rate_based import RateBased

    return RateBased(params.past, params.safety)


def build_pensieve(params: PensieveParams, *, task):
    from .baselines.pensieve import Pensieve

    return Pensieve(params)


@hookimpl
def mamba4net_register_baselines(register):
    register("bba", build_bba, params=BBAParams, task="abr")
    register("robust_mpc", build_robust_mpc, params=RobustMPCParams, task="abr")
    register("rate_based", build_rate_based, params=RateBasedParams, task="abr")
    register("pensieve", build_pensieve, params=PensieveParams, task="abr")


def load_manifest(params=None):
    from pathlib import Path

    from mamba4net.core.datasets import read_manifest

    return read_manifest(Path(__file__).with_name("data_manifest.json"))


@hookimpl
def mamba4net_register_datasets(register):
    register("abr", load_manifest)
