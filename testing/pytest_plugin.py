"""pytest fixtures for plugin authors (auto-loaded through the ``pytest11`` entry point)."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def m4n_registry():
    """A fresh registry: every installed plugin plus the toy task; made the process default."""
    from mamba4net.registry.manager import set_default_registry
    from mamba4net.testing.toy import toy_registry

    registry = toy_registry()
    set_default_registry(registry)
    yield registry
    set_default_registry(None)


@pytest.fixture
def toy_task():
    from mamba4net.testing.toy import ToyParams, ToyTask

    return ToyTask(ToyParams())


@pytest.fixture
def tiny_config():
    """A tiny pipeline config (plain data) on the toy task; tweak it, then validate/run it."""
    from mamba4net.testing.toy import tiny_pipeline_config

    return tiny_pipeline_config()


@pytest.fixture
def tiny_teacher(m4n_registry):
    """A 2-layer random Llama teacher backbone with LoRA (width 32, 4 heads, 2 KV heads)."""
    import torch

    from mamba4net.testing.toy import tiny_pipeline_config

    torch.manual_seed(0)
    node = tiny_pipeline_config()["teacher"]
    return m4n_registry.build("teachers", node)


@pytest.fixture
def tiny_student(m4n_registry):
    """A 3-layer hybrid Mamba student backbone (width 16, attention in the last layer)."""
    import torch

    from mamba4net.testing.toy import tiny_pipeline_config

    torch.manual_seed(0)
    return m4n_registry.build("students", tiny_pipeline_config()["student"])
