"""Progressive distillation (pkd): sizes, ensembles, the cascade, early stops, and the method's
contract on the toy task, on digits and on VP at tiny scale."""

import json

import pytest
import torch

from mamba4net.core.config import validate_data
from mamba4net.core.errors import ConfigError
from mamba4net.core.pipeline import run_pipeline
from mamba4net.core.protocols import ModelOutput
from mamba4net.plugins.pkd.ensemble import Ensemble, cascade_exit, fit_weights
from mamba4net.testing.methods import check_method
from mamba4net.testing.toy import tiny_pipeline_config

TINY_STUDENT = {"name": "hybrid_mamba", "d_model": 32, "n_layers": 2, "attn_layers": [], "d_state": 8,
                "headdim": 16, "chunk_size": 8, "d_intermediate": 32}
TINY_TRAIN = {"steps": 8, "batch_size": 32, "lr": 3e-3, "warmup_steps": 2, "log_every": 4, "checkpoint_every": 4}


def _digits(method: dict, **over) -> dict:
    students = method.get("students") or [None] * method.get("count", 4)
    cfg = tiny_pipeline_config(
        name="pkd-tiny", task={"name": "image_classification", "dataset": "digits"},
        teacher={"name": "vit", "d_model": 64, "n_layers": 3, "n_heads": 2}, student=TINY_STUDENT,
        method={"name": "pkd", **method},
        **{"benchmark": {"repeats": 1, "warmup": 0, "seq_lens": [16], "history_lens": [4], "memory": False}, **over})
    cfg["train"] = {n: dict(TINY_TRAIN) for n in ["teacher"] + [f"s{k + 1}" for k in range(len(students))]}
    return cfg


def test_student_sizes_from_a_list_or_a_shrink_rule(m4n_registry):
    loaded = validate_data(_digits({"count": 3, "shrink": {"d_model": 0.5, "d_intermediate": 0.5},
                                    "multiple_of": {"d_model": 8}}), registry=m4n_registry)
    assert [loaded.role_params[r].d_model for r in ("s1", "s2", "s3")] == [32, 16, 8]
    assert [loaded.role_params[r].d_intermediate for r in ("s1", "s2", "s3")] == [32, 16, 8]
    assert loaded.method.stage_names == ["teacher", "s1", "s2", "s3", "ensemble"]
    loaded = validate_data(_digits({"students": [{}, {"d_model": 16, "n_layers": 1}]}), registry=m4n_registry)
    assert (loaded.role_params["s2"].d_model, loaded.role_params["s2"].n_layers) == (16, 1)
    with pytest.raises(ConfigError, match="role 's1' of method 'pkd': shrink: the student node sets no 'colour'"):
        validate_data(_digits({"count": 2, "shrink": {"colour": 0.5}}), registry=m4n_registry)
    with pytest.raises(ConfigError, match=r"role 's2' of method 'pkd' overrides student.*headdim=16 must divide"):
        validate_data(_digits({"students": [{}, {"d_model": 4}]}), registry=m4n_registry)


def test_ensemble_and_cascade_arithmetic():
    a = torch.tensor([[4.0, 0.0], [0.0, 0.1]])  # student 1: sure of sample 0, unsure of sample 1
    b = torch.tensor([[0.0, 1.0], [0.0, 5.0]])
    weights = [[1.0], [1.0, 1.0]]
    out, spent = cascade_exit([a, b], weights, flops=[10.0, 30.0], threshold=0.9)
    assert torch.equal(out, torch.stack([a[0], a[1] + b[1]]))  # sample 0 exits after s1, sample 1 runs both
    assert spent.tolist() == [10.0, 40.0]
    out, spent = cascade_exit([a, b], weights, flops=[10.0, 30.0], threshold=1.0)
    assert spent.tolist() == [40.0, 40.0]  # nobody is that sure: the whole chain
    ens = Ensemble([_Const(a), _Const(b)], [0.5, 2.0], [10.0, 30.0], teacher_flops=80.0)
    assert torch.allclose(ens({}).pred, 0.5 * a + 2.0 * b)
    assert ens.extra_scores() == {"flops_per_sample": 40.0, "flops_fraction": 0.5}


class _Const(torch.nn.Module):
    """A 'model' that always answers the same logits."""

    def __init__(self, t):
        super().__init__()
        self.t = t

    def forward(self, batch):
        return ModelOutput(pred=self.t)


def test_fitted_weights_lower_the_validation_loss():
    torch.manual_seed(0)
    y = torch.randn(64)
    preds = [y + 0.5 * torch.randn(64), 2 * y]  # the second is right up to a factor 2

    def loss(f):
        return ((f - y) ** 2).mean()

    w = fit_weights(preds, loss, [0.5, 0.5], steps=400)
    assert loss(w[0] * preds[0] + w[1] * preds[1]) < 0.5 * loss(0.5 * preds[0] + 0.5 * preds[1])
    assert abs(w[1] - 0.5) < 0.1 and abs(w[0]) < 0.1


def test_check_method_pkd_on_the_toy_task(m4n_registry, tmp_path):
    summary = check_method("pkd", registry=m4n_registry, workdir=tmp_path,
                           method_params={"count": 2, "soft": "mse_to_teacher"})
    assert summary["stages"] == ["teacher", "s1", "s2", "ensemble"] and summary["kill"] == ["s2", 4]
    assert {"teacher", "s1", "s2", "ensemble_2", "toy_mean"} == set(summary["models"])


def test_pkd_on_digits_tiny(m4n_registry, tmp_path):
    cfg = _digits({"students": [{}, {"d_model": 16}]}, evaluate={"baselines": []})
    run = run_pipeline(validate_data(cfg, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    results = json.loads(run.results_path.read_text())
    models = results["models"]
    assert {"teacher", "s1", "s2", "ensemble_2", "cascade"} == set(models)
    assert models["teacher"]["flops_fraction"] == 1.0
    assert 0 < models["s2"]["flops_fraction"] < models["s1"]["flops_fraction"] < 1
    assert models["ensemble_2"]["flops_per_sample"] == pytest.approx(
        models["s1"]["flops_per_sample"] + models["s2"]["flops_per_sample"])
    assert models["s1"]["flops_per_sample"] <= models["cascade"]["flops_per_sample"] <= models["ensemble_2"]["flops_per_sample"]
    assert (run.root / "pkd_flops.png").exists()
    report = run.report_path.read_text()
    assert "## Method pkd" in report and "Cascade on test" in report and "pkd_flops.png" in report
    done = json.loads((run.checkpoints / "ensemble" / "done.json").read_text())
    assert done["students"] == ["s1", "s2"] and len(done["prefix_weights"]) == 2 and done["writes"] == {}


def test_the_chain_stops_early(m4n_registry, tmp_path):
    cfg = _digits({"students": [{}, {"d_model": 16}, {"d_model": 8, "headdim": 8}], "stop_metric": 0.0},
                  evaluate={"baselines": []}, benchmark={"enabled": False})
    run = run_pipeline(validate_data(cfg, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    models = json.loads(run.results_path.read_text())["models"]
    assert set(models) == {"teacher", "s1"}  # accuracy >= 0 is reached by s1 alone: s2, s3 skipped
    assert "reached valid accuracy" in json.loads((run.checkpoints / "s2" / "done.json").read_text())["skipped"]
    assert "earlier student" in json.loads((run.checkpoints / "s3" / "done.json").read_text())["skipped"]
    assert not (run.checkpoints / "export" / "s2.safetensors").exists()
    cfg = _digits({"students": [{}, {"d_model": 16}], "flops_budget": 1e-6}, evaluate={"baselines": []},
                  benchmark={"enabled": False})
    run = run_pipeline(validate_data(cfg, registry=m4n_registry), tmp_path / "budget", registry=m4n_registry)
    assert set(json.loads(run.results_path.read_text())["models"]) == {"teacher"}


def test_pkd_on_vp_tiny(m4n_registry, tmp_path):
    cfg = tiny_pipeline_config(
        name="pkd-vp", task={"name": "vp", "max_samples": {"train": 128, "valid": 32, "test": 32}},
        method={"name": "pkd", "count": 2, "soft": "mse_to_teacher"}, evaluate={"baselines": ["no_motion"]},
        benchmark={"enabled": False})
    cfg["train"] = {n: dict(TINY_TRAIN) for n in ("teacher", "s1", "s2")}
    run = run_pipeline(validate_data(cfg, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    results = json.loads(run.results_path.read_text())
    assert {"no_motion", "teacher", "s1", "s2", "ensemble_2"} == set(results["models"])  # no cascade: regression
    assert results["models"]["s2"]["flops_fraction"] < results["models"]["s1"]["flops_fraction"] < 1
    assert "mae_deg" in run.report_path.read_text() and (run.root / "pkd_flops.png").exists()
