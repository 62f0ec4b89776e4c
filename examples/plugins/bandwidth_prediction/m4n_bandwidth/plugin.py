"""Registers the ``bandwidth`` task, its encoder and head, and two rule baselines.

Import-light: torch and the trace reader are imported by the factories only.
"""

from pydantic import BaseModel, ConfigDict, Field

from mamba4net.api import hookimpl

MAMBA4NET_API = 1  # the plugin API this plugin was written for


class BandwidthParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data_dir: str | None = None  # the shared data folder (default: mamba4net's, i.e. $MAMBA4NET_DATA or ../shared/data)
    history: int = Field(10, ge=2)  # seconds of past throughput the models see
    horizon: int = Field(5, ge=1)  # seconds ahead to predict
    stride: int = Field(5, ge=1)  # seconds between two windows of a trace
    max_windows: dict[str, int] = {"train": 8000, "valid": 1500, "test": 3000}
    split_fractions: tuple[float, float] = (0.15, 0.15)  # (valid, test) share of the trace sources
    seed: int = 0


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HarmonicParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: int = Field(5, ge=1)  # RobustMPC: the harmonic mean of the last 5 throughputs


def build_task(params: BandwidthParams):
    from .task import BandwidthTask

    return BandwidthTask(params)


def build_encoder(params, *, task, d_model: int):
    from .model import ThroughputEncoder

    return ThroughputEncoder(d_model)


def build_head(params, *, task, d_model: int):
    from .model import HorizonHead

    return HorizonHead(d_model, task.params.horizon)


def build_last_value(params, *, task):
    from .baselines import LastValue

    return LastValue()


def build_harmonic_mean(params: HarmonicParams, *, task):
    from .baselines import HarmonicMean

    return HarmonicMean(params.window)


@hookimpl
def mamba4net_register_tasks(register):
    register("bandwidth", build_task, params=BandwidthParams)


@hookimpl
def mamba4net_register_encoders(register):
    register("bandwidth_encoder", build_encoder, params=NoParams)


@hookimpl
def mamba4net_register_heads(register):
    register("bandwidth_head", build_head, params=NoParams)


@hookimpl
def mamba4net_register_baselines(register):
    register("last_value", build_last_value, params=NoParams, task="bandwidth")
    register("harmonic_mean", build_harmonic_mean, params=HarmonicParams, task="bandwidth")
