"""`mamba4net run CONFIG --seeds ...`: one run per seed, and the mean and interval over them."""

from __future__ import annotations

import json
import math

import pytest

from mamba4net.core.cli import main
from mamba4net.core.errors import ConfigError
from mamba4net.core.seeds import aggregate, for_seed, parse_seeds, run_seeds, seeds_markdown
from mamba4net.core.stats import mean_interval
from mamba4net.testing.toy import tiny_pipeline_config, toy_registry


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5, 2,2,0-1") == [5, 2, 0, 1]
    for bad in ("a", "", "1,x", "-1", "3-"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_interval_is_student_t():
    mean, half = mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)
    assert mean_interval([4.0]) == (4.0, 0.0)


def _results(folder, values: dict[str, float]):
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "task": "toy", "metric": "mse", "higher_is_better": False,
        "models": {m: {"mse": v} for m, v in values.items()}}).replace("NaN", "NaN"))


def test_aggregate_orders_models_and_leaves_non_finite_seeds_out(tmp_path):
    _results(tmp_path / "a", {"student": 1.0, "teacher": 2.0, "only_here": 0.1})
    _results(tmp_path / "b", {"student": 3.0, "teacher": float("nan")})
    summary = aggregate({0: tmp_path / "a", 1: tmp_path / "b"})
    assert list(summary["models"]) == ["student", "teacher"]  # in both runs only, best mean first
    assert summary["models"]["student"]["mean"] == 2.0 and summary["models"]["student"]["n"] == 2
    assert summary["models"]["teacher"]["n"] == 1 and summary["models"]["teacher"]["not_finite"] == [1]
    assert summary["models"]["student"]["item_ci95"] is None  # no run gave an interval over its items


def test_aggregate_keeps_the_runs_intervals_over_items(tmp_path):
    for folder, value, half in (("a", 1.0, 0.2), ("b", 3.0, 0.4)):
        _results(tmp_path / folder, {"student": value})
        res = json.loads((tmp_path / folder / "results.json").read_text())
        res["models"]["student"]["mse_ci95"] = half
        (tmp_path / folder / "results.json").write_text(json.dumps(res))
    summary = aggregate({0: tmp_path / "a", 1: tmp_path / "b"})
    assert summary["models"]["student"]["item_ci95"] == pytest.approx(0.3)
    assert "± 0.3 |" in seeds_markdown(summary)


def test_run_seeds_makes_one_run_per_seed_and_resumes_them(tmp_path):
    registry = toy_registry()
    cfg = tiny_pipeline_config()
    summary = run_seeds(cfg, tmp_path / "s", [0, 1], registry=registry)
    runs = {s: json.loads((tmp_path / "s" / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)}
    student = [runs[s]["models"]["student"]["mse"] for s in (0, 1)]
    assert student[0] != student[1]  # the seed reached training
    row = summary["models"]["student"]
    assert row["per_seed"] == {0: student[0], 1: student[1]} and row["mean"] == pytest.approx(sum(student) / 2)
    assert row["ci95"] == pytest.approx(mean_interval(student)[1])
    assert "seed: 1" in (tmp_path / "s" / "seed-1" / "config.yaml").read_text()
    saved = json.loads((tmp_path / "s" / "seeds.json").read_text())
    assert set(saved["models"]) == {"student", "teacher", "toy_mean"}
    assert "| student |" in (tmp_path / "s" / "seeds.md").read_text()
    done = tmp_path / "s" / "seed-0" / "checkpoints" / "distill" / "done.json"
    before = done.stat().st_mtime_ns
    again = run_seeds(cfg, tmp_path / "s", [0, 1], resume=True, registry=registry)  # finished: nothing retrained
    assert done.stat().st_mtime_ns == before and again["models"]["student"]["mean"] == row["mean"]


def test_cli_refuses_seeds_with_nproc_and_resume_without_out(capsys):
    assert main(["run", "examples/vp.yaml", "--seeds", "0,1", "--nproc", "2"]) == 2
    assert "drop --nproc" in capsys.readouterr().err
    assert main(["run", "examples/vp.yaml", "--seeds", "0,1", "--resume"]) != 0
    assert "needs --out" in capsys.readouterr().err
    assert main(["run", "examples/vp.yaml", "--seeds", "zero"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_seed_placeholder_in_overrides(tmp_path, capsys):
    """``{seed}`` in a --set value is each seed's under --seeds (a chain of runs per seed), every
    seed's config is checked before any run starts, and outside --seeds it is refused."""
    assert for_seed(["task.pool.runs=[{dir: r/seed-{seed}}]", "x=1"], 2) == [
        "task.pool.runs=[{dir: r/seed-2}]", "x=1", "seed=2"]
    (tmp_path / "prev" / "seed-0").mkdir(parents=True)
    (tmp_path / "prev" / "seed-0" / "config.yaml").write_text("name: prev\n")  # seed 1 has no run
    chain = f"task.pool.runs=[{{dir: {tmp_path}/prev/seed-{{seed}}}}]"
    assert main(["run", "examples/abr.yaml", "--seeds", "0,1", "--set", chain, "--out", str(tmp_path / "s")]) == 2
    assert "prev/seed-1 is not a run directory" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # nothing started
    assert main(["run", "examples/abr.yaml", "--set", chain]) == 2
    assert "{seed} is filled in per seed by --seeds only" in capsys.readouterr().err
