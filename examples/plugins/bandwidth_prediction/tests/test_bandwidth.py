"""The bandwidth plugin, tested with mamba4net's public API and testing kit only."""

from pathlib import Path

import pytest
import torch

from mamba4net.api import DataError, ModelOutput, default_data_dir, default_registry, run_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "bandwidth.yaml"
needs_data = pytest.mark.skipif(not (default_data_dir() / "abr" / "traces").is_dir(), reason="no shared data")


def test_components_come_from_the_entry_point():
    reg = default_registry()
    assert reg.get("tasks", "bandwidth").owner == "bandwidth_prediction"
    assert {"last_value", "harmonic_mean"} <= set(reg.kind("baselines").names())


def _task(**params):
    return default_registry().build("tasks", {"name": "bandwidth", **params})


def test_harmonic_mean_and_last_value():
    reg = default_registry()
    x = torch.tensor([[1.0, 2.0, 4.0, 4.0, 1.0]])[..., None]  # (1, 5, 1)
    batch = {"x": x, "y": torch.zeros(1, 3)}
    hm = reg.build("baselines", {"name": "harmonic_mean", "window": 4}, task=None).predict(batch)
    assert torch.allclose(hm, torch.full((1, 3), 4 / (1 / 2 + 1 / 4 + 1 / 4 + 1)))
    last = reg.build("baselines", {"name": "last_value"}, task=None).predict(batch)
    assert torch.equal(last, torch.ones(1, 3))


@needs_data
def test_splits_are_disjoint_by_source_and_shapes_fit():
    from m4n_bandwidth.traces import source_of, split_of

    task = _task(max_windows={"train": 64, "valid": 32, "test": 32})
    names = [p.name for p in task.folder.iterdir()]
    splits = {s: {source_of(n) for n in names if split_of(source_of(n), (0.15, 0.15), 0) == s}
              for s in ("train", "valid", "test")}
    assert not splits["train"] & splits["test"] and not splits["train"] & splits["valid"]
    assert all(splits.values())
    batch = task.data("train").batch(torch.arange(8))
    assert batch["x"].shape == (8, 10, 1) and batch["y"].shape == (8, 5)
    reg = default_registry()
    enc = reg.get("encoders", "bandwidth_encoder").build({}, task=task, d_model=16)
    head = reg.get("heads", "bandwidth_head").build({}, task=task, d_model=16)
    assert head(enc(batch), batch).shape == (8, 5)
    assert float(task.loss(ModelOutput(pred=batch["y"]), batch)) == 0.0


def test_a_damaged_trace_is_one_line(tmp_path):
    folder = tmp_path / "abr" / "traces" / "train" / "fcc-train"
    folder.mkdir(parents=True)
    (folder / "trace_1_x").write_text("0 1.0\n1 oops\n2 1.0\n")
    with pytest.raises(DataError, match=r"trace_1_x: not a"):
        for split in ("train", "valid", "test"):
            _task(data_dir=str(tmp_path), split_fractions=(0.0, 0.0)).data(split)


@needs_data
def test_tiny_pipeline_end_to_end(tmp_path):
    """A tiny run (random teacher, few steps) end to end: every model is scored on the same windows."""
    results = run_config(CONFIG, tmp_path / "run", overrides=[
        "teacher.model=random", "teacher.random_config.hidden_size=32", "teacher.random_config.num_hidden_layers=2",
        "teacher.random_config.num_attention_heads=4", "teacher.random_config.num_key_value_heads=2",
        "teacher.random_config.intermediate_size=64", "teacher.num_layers=null", "initializer.rank=8",
        "student.d_model=32", "student.n_layers=2", "student.attn_layers=[1]", "student.headdim=8",
        "student.d_intermediate=64", "train.adapt_teacher.steps=20", "train.distill.steps=20",
        "train.adapt_teacher.warmup_steps=2", "train.distill.warmup_steps=2",
        "task.max_windows={train: 256, valid: 64, test: 128}", "runtime.threads=1"])
    models = results["models"]
    assert set(models) == {"teacher", "student", "last_value", "harmonic_mean"}
    assert {m["n_windows"] for m in models.values()} == {128}
    assert all(0 < m["mae_mbps"] < 5 for m in models.values())
