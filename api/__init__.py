"""The public API of mamba4net: everything a plugin may import, and nothing else.

A plugin package (a task, an encoder, a teacher, a method...) imports from ``mamba4net.api`` and
from the testing kit ``mamba4net.testing`` only; every other module is internal and may change
between releases. The names below are kept stable within one plugin API version
(:data:`PLUGIN_API`); a plugin declares the version it was written for as ``MAMBA4NET_API = 1`` in
its plugin module. The reference of every hook is ``docs/hooks.md``.

Importing this module is light (no torch): the names that need torch are loaded on first use, so a
plugin module may import what it needs at its top without slowing down ``mamba4net validate``.
"""

from __future__ import annotations

import importlib
from typing import Any

from mamba4net.core.errors import ConfigError, DataError, Mamba4netError, PluginError, TrainingError
from mamba4net.core.hookspecs import PLUGIN_API, Register, hookimpl
from mamba4net.core.io import read_json, write_json
from mamba4net.core.method import Method, Role, Stage
from mamba4net.core.paths import cache_dir, default_data_dir

# name -> module, imported on first use (they import torch or pydantic-heavy modules)
_LAZY = {
    # what components return and receive (mamba4net.core.protocols)
    "Task": "mamba4net.core.protocols",
    "TaskData": "mamba4net.core.protocols",
    "Backbone": "mamba4net.core.protocols",
    "StreamingBackbone": "mamba4net.core.protocols",
    "Baseline": "mamba4net.core.protocols",
    "ModelOutput": "mamba4net.core.protocols",
    "Batch": "mamba4net.core.protocols",
    "count_parameters": "mamba4net.core.protocols",
    # what one deployed decision is (a task's optional deploy_spec, for `mamba4net export`)
    "DeploySpec": "mamba4net.core.onnx_export",
    "ExportError": "mamba4net.core.onnx_export",
    # streaming decisions: a backbone's decoder, and the thread count decisions run with
    "decoder_for": "mamba4net.core.streaming",
    "decision_threads": "mamba4net.core.runtime",
    # return-conditioned sequence policies for decision tasks (the seqpolicy library; abr and cjs use it)
    "ReturnConditionedPolicy": "mamba4net.plugins.seqpolicy",
    "ReturnToGo": "mamba4net.plugins.seqpolicy",
    "StoredPool": "mamba4net.plugins.seqpolicy",
    "cached_pool": "mamba4net.plugins.seqpolicy",
    "episode_windows": "mamba4net.plugins.seqpolicy",
    "returns_to_go": "mamba4net.plugins.seqpolicy",
    "best_per_group": "mamba4net.plugins.seqpolicy",
    "PoolRun": "mamba4net.plugins.seqpolicy",
    "open_pool_run": "mamba4net.plugins.seqpolicy",
    # the 95% interval of a mean (a task's evaluate reports "<metric>_ci95" over its test items)
    "mean_interval": "mamba4net.core.stats",
    # what a method's stage works with
    "StageContext": "mamba4net.core.context",
    "MethodContext": "mamba4net.core.context",
    "TrainParams": "mamba4net.core.schema",
    "stream_seed": "mamba4net.core.seeding",
    # running pipelines and finding components (notebooks, a plugin's own tests)
    "run_config": "mamba4net.core.pipeline",
    "evaluate_run": "mamba4net.core.pipeline",
    "open_run": "mamba4net.core.pipeline",
    "default_registry": "mamba4net.registry.manager",
    # files a plugin writes and reads back (checked: sha256 recorded and verified)
    "save_arrays": "mamba4net.core.artifacts",
    "load_arrays": "mamba4net.core.artifacts",
    "cached": "mamba4net.core.artifacts",
    "save_checked": "mamba4net.core.checkpoint",
    "load_checked": "mamba4net.core.checkpoint",
    # the testing kit's entry points (need the test extras: pytest, hypothesis)
    "check_method": "mamba4net.testing.methods",
    "check_initializer": "mamba4net.testing.initializers",
    "ToyPlugin": "mamba4net.testing.toy",
    "tiny_pipeline_config": "mamba4net.testing.toy",
}

__all__ = [
    "PLUGIN_API", "Register", "hookimpl",
    "Mamba4netError", "ConfigError", "DataError", "PluginError", "TrainingError",
    "Method", "Role", "Stage",
    "read_json", "write_json", "cache_dir", "default_data_dir",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"mamba4net.api has no name {name!r} (the public API is mamba4net.api.__all__)")


def __dir__() -> list[str]:
    return sorted(__all__)
