"""``mamba4net new-plugin NAME [--dir DIR]``: a minimal working plugin package to start from.

It holds a task on a tiny synthetic data set (predict the next value of a noisy periodic signal,
a stand-in for a throughput or latency series), its encoder, head and one rule baseline, a YAML
pipeline using the built-in teacher, student and initializer, and tests written with the public
API and the testing kit only. It installs (``pip install -e``) and passes its own tests unchanged.
"""

from __future__ import annotations

import keyword
import re
from importlib.util import find_spec
from pathlib import Path

from mamba4net.core.errors import PluginError

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{1,30}$")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "mamba4net-{dist}"
version = "0.1.0"
description = "A mamba4net plugin: the {name} task"
requires-python = ">=3.11"
dependencies = ["mamba4net"]

# This table is all it takes for mamba4net to find the plugin.
[project.entry-points.mamba4net]
{name} = "{name}.plugin"

[tool.setuptools]
packages = ["{name}"]
'''

README = '''\
# {name}: a mamba4net task plugin

Made by `mamba4net new-plugin {name}`. The task predicts the next value of a noisy periodic
signal from the last `history` values (replace `data.py` with your own measurements).

```bash
pip install -e .                                  # registers the plugin (entry point group mamba4net)
mamba4net plugins | grep {name}                   # the task, encoder, head and baseline are listed
python -m pytest -q tests                         # its own tests
mamba4net run configs/pipeline.yaml               # teacher -> student on the task, with the baseline
```

What is where: `{name}/plugin.py` registers the components (import-light: torch is imported by
the factories), `{name}/data.py` makes the data, `{name}/task.py` is the task (splits, loss,
metric, evaluation), `{name}/components.py` the encoder, head and baseline. Import from
`mamba4net.api` only; the hook reference is mamba4net's `docs/hooks.md`.
'''

INIT = '''\
"""The {name} task plugin for mamba4net."""
'''

PLUGIN = '''\
"""Registers the {name} task, its encoder, head and baseline (import-light: no torch here)."""

from pydantic import BaseModel, ConfigDict, Field

from mamba4net.api import hookimpl

MAMBA4NET_API = 1  # the plugin API this plugin was written for


class TaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: int = Field(16, ge=2)  # past values the models see
    n_train: int = Field(512, gt=0)
    n_valid: int = Field(128, gt=0)
    n_test: int = Field(128, gt=0)
    noise: float = Field(0.05, ge=0.0)
    seed: int = 0


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def build_task(params: TaskParams):
    from .task import {cls}Task

    return {cls}Task(params)


def build_encoder(params, *, task, d_model: int):
    from .components import ValueEncoder

    return ValueEncoder(d_model)


def build_head(params, *, task, d_model: int):
    from .components import NextValueHead

    return NextValueHead(d_model)


def build_last_value(params, *, task):
    from .components import LastValue

    return LastValue()


@hookimpl
def mamba4net_register_tasks(register):
    register("{name}", build_task, params=TaskParams)


@hookimpl
def mamba4net_register_encoders(register):
    register("{name}_encoder", build_encoder, params=NoParams)


@hookimpl
def mamba4net_register_heads(register):
    register("{name}_head", build_head, params=NoParams)


@hookimpl
def mamba4net_register_baselines(register):
    register("{name}_last_value", build_last_value, params=NoParams, task="{name}")
'''

DATA = '''\
"""The data: windows of a noisy periodic signal, and the value that follows each window."""

import torch


class Split:
    """``x (N, history, 1)`` past values, ``y (N, 1)`` the next one."""

    def __init__(self, n: int, history: int, noise: float, seed: int):
        g = torch.Generator().manual_seed(seed)
        period = 4 + 12 * torch.rand(n, 1, generator=g)  # (N, 1) samples per cycle
        phase = 6.283 * torch.rand(n, 1, generator=g)
        t = torch.arange(history + 1, dtype=torch.float32)  # (history + 1,)
        signal = torch.sin(6.283 * t / period + phase)  # (N, history + 1)
        signal = signal + noise * torch.randn(signal.shape, generator=g)
        self.x = signal[:, :history, None]  # (N, history, 1)
        self.y = signal[:, history:]  # (N, 1)

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, indices):
        return {{"x": self.x[indices], "y": self.y[indices]}}
'''

TASK = '''\
"""The {name} task: splits, loss, metric and evaluation."""

import torch
import torch.nn.functional as F

from .data import Split


class {cls}Task:
    name = "{name}"
    metric = "mae"
    higher_is_better = False
    default_encoder = "{name}_encoder"
    default_head = "{name}_head"
    default_baselines = ["{name}_last_value"]

    def __init__(self, params):
        self.params = params
        sizes = {{"train": params.n_train, "valid": params.n_valid, "test": params.n_test}}
        self.splits = {{s: Split(n, params.history, params.noise, params.seed * 3 + i)
                       for i, (s, n) in enumerate(sizes.items())}}

    def data(self, split: str) -> Split:
        return self.splits[split]

    def loss(self, out, batch):
        return F.mse_loss(out.pred, batch["y"])

    @torch.no_grad()
    def evaluate(self, predictor, split: str) -> dict:
        data = self.data(split)
        batch = data.batch(torch.arange(len(data)))
        if hasattr(predictor, "predict"):  # a baseline
            pred = predictor.predict(batch)
        else:  # a model: batch -> ModelOutput
            was = predictor.training
            predictor.eval()
            pred = predictor(batch).pred
            predictor.train(was)
        err = (pred - batch["y"]).abs()
        return {{"mae": float(err.mean()), "within_0.1": float((err < 0.1).float().mean()),
                "n_samples": len(data)}}
'''

COMPONENTS = '''\
"""Encoder (values -> tokens), head (last hidden state -> next value) and a rule baseline."""

from torch import nn


class ValueEncoder(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(1, d_model)  # the last layer projects to the backbone's width

    def forward(self, batch):
        return self.proj(batch["x"])  # (B, history, 1) -> (B, history, d_model)


class NextValueHead(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.out = nn.Linear(d_model, 1)

    def forward(self, hidden, batch):
        return self.out(hidden[:, -1])  # (B, L, d_model) -> (B, 1)


class LastValue:
    """Predicts that the next value equals the last one."""

    name = "last_value"

    def fit(self, task) -> None:
        pass

    def predict(self, batch):
        return batch["x"][:, -1]  # (B, 1)
'''

PIPELINE = '''\
# The {name} task, distilled from the built-in teacher into the built-in hybrid Mamba student.
# Tiny by default (a random teacher, seconds on a CPU): set teacher.model: smollm2 for the real one.
name: {name}
seed: 0
task: {{name: {name}}}
teacher:
  name: hf_causal_lm
  model: random
  random_config: {{hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
                  intermediate_size: 128}}
  lora: {{r: 4, alpha: 8}}
student: {{name: hybrid_mamba, d_model: 32, n_layers: 2, d_state: 8, headdim: 8, chunk_size: 8,
          attn_heads: 2, attn_kv_heads: 2, attn_layers: [1], d_intermediate: 64}}
initializer: {{name: cwr, strategy: svd, rank: 16}}
method: {{name: mamba4net}}
train:
  adapt_teacher: {{steps: 60, batch_size: 32, lr: 3.0e-3, warmup_steps: 5, checkpoint_every: 30}}
  distill: {{steps: 60, batch_size: 32, lr: 3.0e-3, warmup_steps: 5, checkpoint_every: 30,
            losses: [{{name: task}}, {{name: mse_to_teacher}}]}}
benchmark: {{enabled: false}}
runtime: {{threads: 1}}
'''

TESTS = '''\
"""The {name} plugin: discovered through its entry point, components fit together, and a short
pipeline beats the rule baseline. Uses mamba4net's public API and testing kit only."""

from pathlib import Path

import torch

from mamba4net.api import ConfigError, ModelOutput, default_registry, run_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pipeline.yaml"


def test_components_are_registered():
    reg = default_registry()
    assert "{name}" in reg.kind("tasks")
    for kind, name in (("encoders", "{name}_encoder"), ("heads", "{name}_head"),
                       ("baselines", "{name}_last_value")):
        assert name in reg.kind(kind), name


def test_encoder_head_and_baseline_shapes():
    reg = default_registry()
    task = reg.build("tasks", {{"name": "{name}", "n_train": 8, "n_valid": 4, "n_test": 4}})
    batch = task.data("train").batch(torch.arange(8))
    enc = reg.get("encoders", "{name}_encoder").build({{}}, task=task, d_model=16)
    head = reg.get("heads", "{name}_head").build({{}}, task=task, d_model=16)
    tokens = enc(batch)
    assert tokens.shape == (8, task.params.history, 16)
    assert head(tokens, batch).shape == batch["y"].shape
    baseline = reg.get("baselines", "{name}_last_value").build({{}}, task=task)
    baseline.fit(task)
    scores = task.evaluate(baseline, "test")
    assert scores["mae"] > 0 and scores["n_samples"] == 4
    assert float(task.loss(ModelOutput(pred=batch["y"]), batch)) == 0.0


def test_pipeline_runs_and_learns(tmp_path):
    results = run_config(CONFIG, tmp_path / "run")
    models = results["models"]
    assert set(models) == {{"teacher", "student", "{name}_last_value"}}
    assert models["student"]["mae"] < models["{name}_last_value"]["mae"]


def test_bad_config_is_one_clear_error(tmp_path):
    try:
        run_config(CONFIG, tmp_path / "bad", overrides=["task.history=1"])
    except ConfigError as err:
        assert "task.history" in str(err)
    else:
        raise AssertionError("history=1 was accepted")
'''


def _check_name(name: str, dest: Path) -> None:
    from mamba4net.registry import default_registry

    if not NAME_RE.match(name) or keyword.iskeyword(name):
        raise PluginError(f"new-plugin: '{name}' is not a valid name: lowercase letters, digits and '_', "
                          "starting with a letter, 2-31 characters")
    reg = default_registry()
    taken = [kind for kind in ("tasks", "encoders", "heads", "baselines") if name in reg.kind(kind)]
    if name in reg.plugins or taken:
        raise PluginError(f"new-plugin: '{name}' is taken (an installed plugin or {', '.join(taken) or 'plugin'} "
                          "of that name); choose another")
    if find_spec(name) is not None:
        raise PluginError(f"new-plugin: '{name}' is already an importable Python module; choose another")
    if dest.exists():
        raise PluginError(f"new-plugin: {dest} already exists; choose another --dir or name")


def new_plugin(name: str, folder: str | Path = ".") -> Path:
    """Write the package ``folder/name``; returns its path."""
    dest = Path(folder) / name
    _check_name(name, dest)
    fields = {"name": name, "dist": name.replace("_", "-"), "cls": "".join(p.title() for p in name.split("_"))}
    files = {
        "pyproject.toml": PYPROJECT, "README.md": README, f"{name}/__init__.py": INIT,
        f"{name}/plugin.py": PLUGIN, f"{name}/data.py": DATA, f"{name}/task.py": TASK,
        f"{name}/components.py": COMPONENTS, "configs/pipeline.yaml": PIPELINE, f"tests/test_{name}.py": TESTS,
    }
    for rel, template in files.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**fields))
    return dest
