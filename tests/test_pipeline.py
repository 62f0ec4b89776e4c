"""The pipeline end to end on the toy task: run directory, resume after SIGKILL, errors, evaluate."""

import json
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mamba4net.core.config import validate_data
from mamba4net.core.errors import ConfigError, Mamba4netError, TrainingError
from mamba4net.core.hookspecs import hookimpl
from mamba4net.core.pipeline import evaluate_run, run_pipeline

RUNNER = textwrap.dedent("""
    import os, signal, sys, json
    from mamba4net.registry.manager import Registry, set_default_registry
    from mamba4net.testing.toy import ToyPlugin, tiny_pipeline_config
    from mamba4net.core.config import validate_data
    from mamba4net.core.pipeline import run_pipeline
    from mamba4net.core import checkpoint

    out, resume, kill_at = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
    if kill_at != "-":
        stage, step = kill_at.split(":")
        original = checkpoint.StageCheckpoints.save
        def save_then_die(self, s, *a, **k):
            path = original(self, s, *a, **k)
            if self.dir.name == stage and s == int(step):
                os.kill(os.getpid(), signal.SIGKILL)
            return path
        checkpoint.StageCheckpoints.save = save_then_die
    reg = Registry(); reg.add_plugin(ToyPlugin(), name="toy"); set_default_registry(reg)
    cfg = tiny_pipeline_config(train={"distill": {"steps": 16}})
    run_pipeline(validate_data(cfg, registry=reg), out, resume=resume, registry=reg)
""")


def _run(script, out, resume=False, kill_at="-"):
    return subprocess.run([sys.executable, str(script), str(out), "1" if resume else "0", kill_at],
                          capture_output=True, text=True, timeout=300)


def test_run_directory(tmp_path, tiny_config, m4n_registry):
    run = run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    results = json.loads(run.results_path.read_text())
    assert results["task"] == "toy" and results["split"] == "test" and results["metric"] == "mse"
    assert results["higher_is_better"] is False
    assert set(results["models"]) == {"teacher", "student", "toy_mean"}
    for model in results["models"].values():
        assert model["mse"] >= 0
    eff = results["efficiency"]
    assert eff["teacher"]["params"] > eff["student"]["params"] > 0
    assert eff["ratios"]["params_student_over_teacher"] == pytest.approx(
        eff["student"]["params"] / eff["teacher"]["params"], rel=1e-3)
    # the models learned something: both beat predicting the mean
    assert results["models"]["student"]["mse"] < results["models"]["toy_mean"]["mse"]
    assert results["models"]["teacher"]["mse"] < results["models"]["toy_mean"]["mse"]
    for name in ("config.yaml", "metrics.jsonl", "report.md", "models.png", "training.png"):
        assert (run.root / name).exists(), name
    stages = {json.loads(line)["stage"] for line in run.metrics_path.read_text().splitlines()}
    assert stages == {"adapt_teacher", "distill"}
    student = load_file(str(run.checkpoints / "distill" / "final.safetensors"))
    assert student and all(torch.isfinite(t).all() for t in student.values())
    resolved = yaml.safe_load(run.config_path.read_text())
    assert validate_data(resolved, registry=m4n_registry).resolved() == resolved
    assert "| student |" in run.report_path.read_text()


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    full = _run(script, tmp_path / "full")
    assert full.returncode == 0, full.stderr
    killed = _run(script, tmp_path / "killed", kill_at="distill:8")
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "results.json").exists()
    assert (tmp_path / "killed" / "checkpoints" / "distill" / "step-000008").exists()
    resumed = _run(script, tmp_path / "killed", resume=True)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((tmp_path / "full" / "results.json").read_text())["models"]
    b = json.loads((tmp_path / "killed" / "results.json").read_text())["models"]
    for name in a:
        assert b[name]["mse"] == pytest.approx(a[name]["mse"], rel=1e-6, abs=1e-7), name
    wa = load_file(str(tmp_path / "full" / "checkpoints" / "distill" / "final.safetensors"))
    wb = load_file(str(tmp_path / "killed" / "checkpoints" / "distill" / "final.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-6, atol=1e-7)
    # the metrics log has no duplicated steps after the replay
    rows = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["stage"], r["step"], "loss" in r) for r in rows]
    assert len(keys) == len(set(keys))


def test_existing_run_needs_resume_and_same_config(tmp_path, tiny_config, m4n_registry):
    loaded = validate_data(tiny_config, registry=m4n_registry)
    run_pipeline(loaded, tmp_path / "run", registry=m4n_registry)
    with pytest.raises(Mamba4netError, match="already holds a run"):
        run_pipeline(loaded, tmp_path / "run", registry=m4n_registry)
    # how it trains may change on resume (a lower lr after a NaN), what the models are may not
    tiny_config["train"]["distill"]["lr"] = 0.5
    run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "run", resume=True,
                 registry=m4n_registry)
    tiny_config["student"]["d_model"] = 32
    changed = validate_data(tiny_config, registry=m4n_registry)
    with pytest.raises(ConfigError, match=r"differs .* student\.d_model"):
        run_pipeline(changed, tmp_path / "run", resume=True, registry=m4n_registry)


class _NaNLoss:
    @hookimpl
    def mamba4net_register_losses(self, register):
        def build(params, *, task, d_student, d_teacher):
            calls = {"n": 0}

            def term(student, teacher, batch):
                calls["n"] += 1
                bad = torch.tensor(float("nan")) if calls["n"] > 6 else torch.tensor(0.0)
                return student.pred.sum() * 0 + bad

            return term

        register("nan_after_6", build)


def test_nan_loss_stops_with_clear_error(tmp_path, tiny_config, m4n_registry):
    m4n_registry.add_plugin(_NaNLoss(), name="nanloss")
    tiny_config["train"]["adapt_teacher"]["losses"] = [{"name": "task"}, {"name": "nan_after_6"}]
    loaded = validate_data(tiny_config, registry=m4n_registry)
    with pytest.raises(TrainingError, match=r"stage adapt_teacher step 7: loss is nan .*last checkpoint .*step-000004"):
        run_pipeline(loaded, tmp_path / "run", registry=m4n_registry)
    assert (tmp_path / "run" / "checkpoints" / "adapt_teacher" / "step-000004" / "model.safetensors").exists()
    assert (tmp_path / "run" / "config.yaml").exists()


def test_evaluate_finished_run(tmp_path, tiny_config, m4n_registry):
    run = run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    original = json.loads(run.results_path.read_text())
    out = evaluate_run(run.root, ["task.seed=5"], registry=m4n_registry)
    assert out.root.parent == run.root / "evaluations"
    again = json.loads(out.results_path.read_text())
    assert set(again["models"]) == set(original["models"])
    # another data seed: other numbers, and the original results untouched
    assert again["models"]["student"]["mse"] != original["models"]["student"]["mse"]
    assert json.loads(run.results_path.read_text()) == original
    with pytest.raises(Mamba4netError, match="not a run directory"):
        evaluate_run(tmp_path / "nothing", registry=m4n_registry)


def test_cached_teacher_outputs_match_live_teacher(tmp_path, tiny_config, m4n_registry):
    live = run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "live", registry=m4n_registry)
    tiny_config["train"]["distill"]["cache_teacher"] = True
    tiny_config["train"]["distill"]["losses"].append({"name": "hidden_align", "weight": 0.1})
    cached_cfg = validate_data(tiny_config, registry=m4n_registry)
    cached = run_pipeline(cached_cfg, tmp_path / "cached", registry=m4n_registry)
    a = json.loads(live.results_path.read_text())["models"]
    b = json.loads(cached.results_path.read_text())["models"]
    assert b["teacher"]["mse"] == pytest.approx(a["teacher"]["mse"], rel=1e-6)
    assert b["student"]["mse"] > 0 and "hidden_align" in (cached.metrics_path.read_text())
    # same objective without the extra term: cached and live teachers train the same student
    tiny_config["train"]["distill"]["losses"].pop()
    same = run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "same", registry=m4n_registry)
    c = json.loads(same.results_path.read_text())["models"]
    assert c["student"]["mse"] == pytest.approx(a["student"]["mse"], rel=1e-3)


def test_corrupt_checkpoint_is_named(tmp_path, tiny_config, m4n_registry):
    from mamba4net.core.errors import DataError

    run = run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    final = run.checkpoints / "distill" / "final.safetensors"
    final.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(DataError, match=r"distill/final\.safetensors: damaged"):
        evaluate_run(run.root, registry=m4n_registry)
