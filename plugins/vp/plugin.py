"""Entry point of the VP plugin (``vp = "mamba4net.plugins.vp.plugin"``).

Import-light: only pydantic models and the hook marker at import; torch and the data code are
imported inside the factories, when a config asks for a component.
"""

from __future__ import annotations

from mamba4net.core.hookspecs import hookimpl

from .config import (
    LinearRegressionParams,
    LSTMParams,
    NoMotionParams,
    RegressionHeadParams,
    TrajectoryEncoderParams,
    VelocityParams,
    VPParams,
)

MAMBA4NET_API = 1  # the plugin API this plugin is written for (mamba4net.core.hookspecs.PLUGIN_API)


def build_task(params: VPParams):
    from .task import VPTask

    return VPTask(params)


def build_encoder(params: TrajectoryEncoderParams, *, task, d_model: int):
    from .encoder import TrajectoryEncoder

    return TrajectoryEncoder(d_model, hidden=params.hidden, his_window=task.his_window, absolute=params.absolute)


def build_head(params: RegressionHeadParams, *, task, d_model: int):
    from .head import RegressionHead

    return RegressionHead(d_model, fut_window=task.fut_window, hidden=params.hidden, dropout=params.dropout)


def build_no_motion(params: NoMotionParams, *, task):
    from .baselines import NoMotionBaseline

    return NoMotionBaseline(task.fut_window)


def build_velocity(params: VelocityParams, *, task):
    from .baselines import VelocityBaseline

    return VelocityBaseline(task.fut_window, window=params.window)


def build_linear_regression(params: LinearRegressionParams, *, task):
    from .baselines import LinearRegressionBaseline

    return LinearRegressionBaseline(task.fut_window, window=params.window)


def build_lstm(params: LSTMParams, *, task):
    from .baselines import LSTMBaseline

    return LSTMBaseline(task.fut_window, params)


@hookimpl
def mamba4net_register_tasks(register):
    register("vp", build_task, params=VPParams)


@hookimpl
def mamba4net_register_encoders(register):
    register("vp_trajectory", build_encoder, params=TrajectoryEncoderParams)


@hookimpl
def mamba4net_register_heads(register):
    register("vp_regression", build_head, params=RegressionHeadParams)


@hookimpl
def mamba4net_register_baselines(register):
    register("no_motion", build_no_motion, params=NoMotionParams, task="vp")
    register("velocity", build_velocity, params=VelocityParams, task="vp")
    register("linear_regression", build_linear_regression, params=LinearRegressionParams, task="vp")
    register("lstm", build_lstm, params=LSTMParams, task="vp")


def load_manifest(params=None):
    from pathlib import Path

    from mamba4net.core.datasets import read_manifest

    return read_manifest(Path(__file__).with_name("data_manifest.json"))


@hookimpl
def mamba4net_register_datasets(register):
    register("vp", load_manifest)
