"""Tests of the example plugin, written with the fixtures mamba4net ships (mamba4net.testing)."""

import pytest
import torch


def test_registered_from_its_entry_point(m4n_registry):
    component = m4n_registry.get("baselines", "damped_velocity")
    assert component.owner == "m4n_example" and component.meta["task"] == "vp"
    assert m4n_registry.plugins["m4n_example"].distribution == "m4n-example"


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_extrapolates_a_steady_turn(m4n_registry, gamma):
    baseline = m4n_registry.build("baselines", {"name": "damped_velocity", "gamma": gamma}, task=None)
    history = torch.arange(-9, 1, dtype=torch.float32)[None, :, None].expand(1, 10, 3) * 0.01
    pred = baseline.predict({"history": history})  # 0.01 per step, decaying by gamma
    expected = 0.01 * sum(gamma**j for j in range(1, 4))
    assert pred.shape == (1, 20, 3)
    assert pred[0, 2, 0].item() == pytest.approx(expected, abs=1e-6)
