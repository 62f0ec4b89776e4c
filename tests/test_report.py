"""``mamba4net report`` and ``mamba4net bench RUN_DIR`` on a tiny finished run; report errors."""

import json

import pytest

from mamba4net.core.bench.sweep import STUDENT_STEP, TEACHER_KV, TEACHER_REENCODE
from mamba4net.core.cli import main
from mamba4net.core.config import validate_data
from mamba4net.core.pipeline import run_pipeline
from mamba4net.core.report import comparison_table, results_table
from mamba4net.core.io import write_json


def _bench_dict():
    """A small hand-made bench.json (numbers chosen so the ratios are exact)."""
    models = {r: {"params": p, "params_without_unused": q, "deploy_bytes": d, "deploy_bytes_without_unused": e,
                  "unused_params": p - q, "tensor_bytes": d}
              for r, p, q, d, e in (("teacher", 1000, 800, 4 * 2**20, 3 * 2**20), ("student", 100, 100, 2**19, 2**19))}
    return {
        "version": 1, "source": {"config": "x.yaml"},
        "setup": {"device": "cpu", "torch": "2", "torch_threads": 2, "cpu": "test", "memory_method": "m"},
        "plan": {"warmup": 1, "repeats": 3, "budget_s": 30.0},
        "models": models, "task_batch": {},
        "throughput": [
            {"role": "teacher", "batch_size": 1, "seq_len": 256, "status": "ok", "median_ms": 10.0,
             "tokens_per_s": 25600.0, "peak_bytes": 2**20},
            {"role": "student", "batch_size": 1, "seq_len": 256, "status": "ok", "median_ms": 2.5,
             "tokens_per_s": 102400.0, "peak_bytes": 2**19},
            {"role": "teacher", "batch_size": 1, "seq_len": 4096, "status": "skipped", "reason": "over budget"},
            {"role": "student", "batch_size": 1, "seq_len": 4096, "status": "ok", "median_ms": 40.0,
             "tokens_per_s": 102400.0, "peak_bytes": 2**22},
        ],
        "latency": [
            {"series": STUDENT_STEP, "history": 64, "status": "ok", "median_ms": 1.0, "state_bytes": 1024},
            {"series": TEACHER_REENCODE, "history": 64, "status": "ok", "median_ms": 8.0},
            {"series": TEACHER_KV, "history": 64, "status": "ok", "median_ms": 3.0, "state_bytes": 4096},
        ],
    }


def _results(efficiency):
    return {"task": "toy", "split": "test", "metric": "mse", "higher_is_better": False,
            "models": {"teacher": {"mse": 0.5}, "student": {"mse": 0.4}, "toy_mean": {"mse": 1.0}},
            "efficiency": efficiency}


def test_report_renders_results_and_bench(tmp_path, capsys):
    from mamba4net.core.bench.run import compute_ratios, headline

    bench = _bench_dict()
    bench["ratios"] = compute_ratios(bench)
    write_json(tmp_path / "bench.json", bench)
    write_json(tmp_path / "results.json", _results(headline(bench)))
    assert main(["report", str(tmp_path)]) == 0
    assert "report.md" in capsys.readouterr().out
    md = (tmp_path / "report.md").read_text()
    # the paper-style table: student size 1/8 of the teacher, throughput 4x at L=256
    assert "| student | 0.4 | 0.1250 | 4x |" in md
    assert "| teacher | 0.5 | 1 | 1x |" in md and "| toy_mean | 1 |  |  |" in md
    assert "| 1 | 4096 | skipped |" in md and "teacher B=1 L=4096: over budget" in md
    assert "| 64 | 1.00 | 3.00 | 8.00 | 3x | 8x |" in md
    for png in ("models.png", "bench_throughput.png", "bench_latency.png", "bench_memory.png"):
        assert (tmp_path / png).exists(), png
        assert f"({png})" in md


def test_report_embeds_task_figures_that_exist(tmp_path):
    results = _results({})
    results["figures"] = [{"title": "Error CDF", "file": "cdf.png"}, {"title": "Gone", "file": "gone.png"}]
    (tmp_path / "cdf.png").write_bytes(b"png")
    write_json(tmp_path / "results.json", results)
    assert main(["report", str(tmp_path)]) == 0
    md = (tmp_path / "report.md").read_text()
    assert "![Error CDF](cdf.png)" in md and "gone.png" not in md


def test_the_metric_carries_its_interval_over_test_items():
    res = _results({})
    res["models"]["student"]["mse_ci95"] = 0.05
    table = results_table(res)
    assert "0.4 ± 0.05" in table and "mse_ci95" not in table  # beside the metric, not a column of its own


def test_comparison_table_without_bench():
    table = comparison_table(_results({}))
    assert "| student | 0.4 |  |" in table and "throughput / teacher" not in table


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert "no such run directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 1
    assert "no results.json" in capsys.readouterr().err
    (tmp_path / "results.json").write_text("{not json")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "results.json: not valid JSON" in err and len(err.splitlines()) == 1
    write_json(tmp_path / "results.json", {"task": "toy"})
    assert main(["report", str(tmp_path)]) == 2
    assert "missing keys split, metric" in capsys.readouterr().err
    write_json(tmp_path / "results.json", _results({}))
    (tmp_path / "bench.json").write_text("[1, 2]")
    assert main(["report", str(tmp_path)]) == 2
    assert "bench.json: expected a JSON object" in capsys.readouterr().err


@pytest.fixture
def finished_run(tmp_path, tiny_config, m4n_registry):
    """A tiny run through every stage; its benchmark stage sweeps tiny lengths."""
    tiny_config["benchmark"] = {"seq_lens": [8], "batch_sizes": [1], "history_lens": [4], "repeats": 2}
    for stage in ("adapt_teacher", "distill"):  # training quality is not under test here
        tiny_config["train"][stage].update(steps=4, checkpoint_every=4)
    run = run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    return run


def test_pipeline_writes_bench_and_bench_run_dir_merges(finished_run, capsys):
    run = finished_run
    results = json.loads(run.results_path.read_text())
    eff = results["efficiency"]
    assert eff["bench_file"] == "bench.json" and (run.root / "bench.json").exists()
    assert set(eff["ratios"]["throughput_student_over_teacher_by_seq_len"]) == {"8"}
    assert eff["student"]["export_file_bytes"] == (run.checkpoints / "export" / "student.safetensors").stat().st_size
    assert "Teacher vs student" in run.report_path.read_text()

    # bench on the finished run: new lengths, headline merged into results.json, report re-rendered
    assert main(["bench", str(run.root), "--seq-lens", "8,16", "--history-lens", "4", "--no-progress"]) == 0
    results = json.loads(run.results_path.read_text())
    assert set(results["efficiency"]["ratios"]["throughput_student_over_teacher_by_seq_len"]) == {"8", "16"}
    assert results["models"]["student"]["mse"] >= 0  # the task results are kept
    bench = json.loads((run.root / "bench.json").read_text())
    assert bench["source"]["weights"] == "the run's finished stages"
    assert "throughput / teacher, L=16" in run.report_path.read_text()
