"""The real CLI on real Jin2022 data at tiny scale: `mamba4net run`, then `mamba4net evaluate`."""

import json
import subprocess
import sys

import yaml

from mamba4net.testing.toy import tiny_pipeline_config


def test_vp_cli_end_to_end(tmp_path):
    cfg = tiny_pipeline_config(
        name="vp-tiny",
        task={"name": "vp", "max_samples": {"train": 256, "valid": 64, "test": 64}},
        evaluate={"baselines": ["linear_regression", "velocity", "no_motion",
                                {"name": "lstm", "steps": 5, "valid_every": 5}]},
    )
    path = tmp_path / "vp_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cli = [sys.executable, "-m", "mamba4net.core.cli"]
    run = subprocess.run(cli + ["run", str(path), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| teacher |" in run.stdout and "| student |" in run.stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["task"] == "vp" and results["metric"] == "mae_deg" and results["higher_is_better"] is False
    assert set(results["models"]) == {"linear_regression", "velocity", "no_motion", "lstm", "teacher", "student"}
    for name, metrics in results["models"].items():
        assert 0 < metrics["mae_deg"] < 180 and metrics["n_samples"] == 64, name
    for role in ("teacher", "student"):
        assert results["efficiency"][role]["params"] > 0 and results["efficiency"][role]["disk_bytes"] > 0
    # re-evaluate on the validation split without training
    ev = subprocess.run(cli + ["evaluate", str(tmp_path / "run"), "--set", "evaluate.split=valid"],
                        capture_output=True, text=True, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    [folder] = list((tmp_path / "run" / "evaluations").iterdir())
    again = json.loads((folder / "results.json").read_text())
    assert again["split"] == "valid" and set(again["models"]) == set(results["models"])
    # the LSTM was trained once and reused, not refitted
    assert again["models"]["lstm"]["fit_seconds"] == 0.0
    # export the student to ONNX; onnxruntime predicts the test windows as PyTorch does
    from export_checks import check_vp_export

    check_vp_export(tmp_path / "run")
