"""The real CLI on the real ABR traces at tiny scale: pool, teacher, streaming student, baselines,
model selection on the validation traces, results, figures and report."""

import json
import subprocess
import sys

import pytest
import torch
import yaml

from mamba4net.testing.toy import tiny_pipeline_config


def test_abr_cli_end_to_end(tmp_path, monkeypatch):
    train = {"steps": 8, "batch_size": 8, "lr": 3e-3, "warmup_steps": 2, "log_every": 2,
             "checkpoint_every": 4, "eval_every": 4, "keep_best": True}
    cfg = tiny_pipeline_config(
        name="abr-tiny",
        task={"name": "abr", "token_layout": "fused", "valid_traces": 4, "latency_decisions": 4,
              "pool": {"policies": ["bba", "rate_based"], "passes": 1}, "pool_dir": str(tmp_path / "pools")},
        train={"adapt_teacher": train,
               "distill": {**train, "cache_teacher": True,
                           "losses": [{"name": "task"}, {"name": "kd", "temperature": 1.0}]}},
        evaluate={"baselines": ["bba", {"name": "pensieve", "epochs": 2, "envs_per_epoch": 4, "valid_every": 1,
                                        "valid_traces": 2}]},
        benchmark={"repeats": 1, "sweep": False},
    )
    path = tmp_path / "abr_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([sys.executable, "-m", "mamba4net.core.cli", "run", str(path), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "run"
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "abr" and results["metric"] == "qoe" and results["higher_is_better"] is True
    assert set(results["models"]) == {"bba", "pensieve", "teacher", "student"}
    for name, m in results["models"].items():
        assert m["n_traces"] == 100 and m["qoe"] < 4.3 and m["bitrate_mbps"] >= 0.3, name
        assert m["decision_ms"] > 0, name
    assert abs(results["models"]["bba"]["qoe"] - 0.7526) < 1e-3  # the fidelity number, through the pipeline
    # validations at steps 4 and 8 of each stage; the best one's weights were kept
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for stage in ("adapt_teacher", "distill"):
        logged = [(m["valid_qoe"], m["step"]) for m in metrics if m["stage"] == stage and "valid_qoe" in m]
        assert [s for _, s in logged] == [4, 8]
        best = json.loads((out / "checkpoints" / stage / "best.json").read_text())
        assert (best["value"], best["step"]) == max(logged, key=lambda v: v[0])
    # figures: a QoE CDF and a timeline, shown in the report
    titles = {f["file"] for f in results["figures"]}
    assert titles == {"abr_qoe_cdf.png", "abr_timeline.png"} and all((out / t).exists() for t in titles)
    details = json.loads((out / "evaluation_details.json").read_text())
    from mamba4net.core.stats import mean_interval  # the interval over test traces, from their own QoE
    assert results["models"]["bba"]["qoe_ci95"] == pytest.approx(mean_interval(details["bba"]["per_trace_qoe"])[1])
    assert len(details["student"]["per_trace_qoe"]) == 100
    report = (out / "report.md").read_text()
    assert "![QoE per test trace (CDF)](abr_qoe_cdf.png)" in report
    # the training pool, and the small exact test pool the benchmark's task batch comes from, each
    # written once in the documented format (safetensors + JSON sidecar)
    names = sorted(p.name.split("-")[0] + p.suffix for p in (tmp_path / "pools").iterdir())
    assert names == ["test.json", "test.safetensors", "train.json", "train.safetensors"]
    # export the student to ONNX and replay the test split in onnxruntime: the same decisions
    from export_checks import check_abr_export

    check_abr_export(out, details["student"]["per_trace_qoe"])
    check_pool_from_run(tmp_path, out, monkeypatch)


def check_pool_from_run(tmp_path, out, monkeypatch):
    """Self-improvement across runs (``task.pool.runs``): a finished run's student plays the
    training traces into another run's pool, asked for its own run's target; cached by its weights."""
    import numpy as np

    from mamba4net.core.errors import ConfigError
    from mamba4net.core.pipeline import open_run
    from mamba4net.plugins.abr import pool as pool_mod
    from mamba4net.plugins.abr.config import ABRParams
    from mamba4net.plugins.abr.rollout import rollout
    from mamba4net.plugins.abr.task import ABRTask

    spec, pools = {"policies": ["bba"], "passes": 1}, str(tmp_path / "pools")
    base = ABRTask(ABRParams(pool_dir=pools, pool=spec)).pool("train")
    task = ABRTask(ABRParams(pool_dir=pools, pool={**spec, "runs": [{"dir": str(out)}]}, best_per_trace=1))
    pool, n = task.pool("train"), len(base)
    assert len(pool) == 2 * n and pool.trace == base.trace * 2 and pool.policy[n:] == [f"student:{out}"] * n
    assert np.array_equal(pool.actions[:n], base.actions)
    run = open_run(out, "student")
    with torch.no_grad():  # the same episodes as the student playing the first pass's traces itself
        played = rollout(task.env("train", noise=True, seed=1000), run.task.as_policy(run.model("student")))
    assert np.allclose(pool.rewards[n:], played.reward[:, 1:], atol=1e-5)
    assert len(task.kept_episodes("train")) == n  # the filter picks per trace from both
    # made once: a new task loads the run's episodes from the pool folder
    def fail(*a, **k):
        raise AssertionError("generated again")

    with monkeypatch.context() as patch:
        patch.setattr(pool_mod, "generate_pool", fail)
        again = ABRTask(ABRParams(pool_dir=pools, pool={**spec, "runs": [{"dir": str(out)}]})).pool("train")
    assert np.array_equal(again.actions, pool.actions)
    with pytest.raises(ValueError, match="not a run directory"):
        ABRParams(pool={"runs": [{"dir": str(tmp_path / "pools")}]})
    with pytest.raises(ConfigError, match="has no role 'critic'"):
        ABRTask(ABRParams(pool_dir=pools, pool={**spec, "runs": [{"dir": str(out), "role": "critic"}]})).pool("train")
    # a run whose stages writing the student were all skipped (an early stop) has no policy to play
    import shutil

    untrained = tmp_path / "untrained"
    shutil.copytree(out, untrained)
    for stage in ("init_student", "distill"):
        marker = untrained / "checkpoints" / stage / "done.json"
        marker.write_text(json.dumps({**json.loads(marker.read_text()), "skipped": "early stop"}))
    with pytest.raises(ConfigError, match="holds no trained weights of role 'student'"):
        ABRTask(ABRParams(pool_dir=pools, pool={**spec, "runs": [{"dir": str(untrained)}]})).pool("train")
