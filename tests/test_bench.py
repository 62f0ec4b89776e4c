"""The efficiency benchmark on tiny models: plan, measurement helpers, sizes, ratios, JSON, CLI.

No timing assertions: timings are only checked for presence and consistency (ratios computed from
the same rows), never against a speed.
"""

import json

import pytest
import torch
import yaml

from mamba4net.core.bench.measure import cpu_memory_supported, peak_rss_increase, time_call
from mamba4net.core.bench.plan import FULL_SEQ_LENS, make_plan
from mamba4net.core.bench.run import compute_ratios, headline, measure_all, write_bench
from mamba4net.core.bench.size import _unique, file_bytes, size_facts
from mamba4net.core.bench.sweep import STUDENT_ONNX, STUDENT_STEP, TEACHER_KV, TEACHER_REENCODE, Budget, state_bytes
from mamba4net.core.cli import main
from mamba4net.core.config import BenchmarkParams, validate_data
from mamba4net.core.context import RunContext
from mamba4net.core.errors import ConfigError
from mamba4net.core.runs import RunDir
from mamba4net.core.streaming import decoder_for

CPU = torch.device("cpu")
TINY_SWEEP = {"seq_lens": [8, 32], "batch_sizes": [1, 2], "history_lens": [4, 16], "repeats": 2, "warmup": 1}


# --- plan ------------------------------------------------------------------------------------

def test_plan_defaults_full_and_explicit_values():
    p = BenchmarkParams()
    plan = make_plan(p)
    assert plan.seq_lens == [256, 1024] and plan.batch_sizes == [1] and plan.roles == ("teacher", "student")
    full = make_plan(p, full=True)
    assert full.seq_lens == list(FULL_SEQ_LENS) and full.batch_sizes == [1, 4, 16, 64]
    mine = make_plan(p, full=True, seq_lens=[1024, 256, 256], repeats=2, budget_s=3, memory=False, roles=["student"])
    assert mine.seq_lens == [256, 1024] and mine.repeats == 2 and mine.budget_s == 3.0
    assert mine.memory is False and mine.roles == ("student",)
    assert mine.n_points == 2 * 4 * 1 + 6 * 2


@pytest.mark.parametrize("kwargs, match", [
    ({"roles": ["teacher", "studnet"]}, "unknown model role 'studnet'"),
    ({"seq_lens": [0, 8]}, "sequence lengths must be positive"),
    ({"repeats": -1}, "--repeats must be positive"),
])
def test_plan_rejects_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_plan(BenchmarkParams(), **kwargs)


def test_config_rejects_bad_sweep(tiny_config, m4n_registry):
    tiny_config["benchmark"] = {"seq_lens": [256, -1]}
    with pytest.raises(ConfigError, match="benchmark.seq_lens"):
        validate_data(tiny_config, registry=m4n_registry)


# --- measurement helpers -------------------------------------------------------------------------

def test_time_call_counts_and_budget():
    calls = []
    timing, peak = time_call(lambda: calls.append(1), warmup=2, repeats=5, budget_s=60, device=CPU)
    assert len(calls) == 7 and len(timing.times_ms) == 5
    assert len(timing.warmup_ms) == 2 and not timing.stopped_by_budget and peak is None
    assert timing.as_dict()["median_ms"] == pytest.approx(sorted(timing.times_ms)[2], abs=1e-3)
    # a budget already spent: one timed call, then stop (never hang)
    timing, _ = time_call(lambda: sum(range(10_000)), warmup=0, repeats=50, budget_s=1e-9, device=CPU)
    assert len(timing.times_ms) == 1 and timing.stopped_by_budget


def test_time_call_measures_memory_on_a_warmup_call_and_runs_after():
    seen, after = [], []
    timing, peak = time_call(lambda: None, warmup=1, repeats=3, budget_s=60, device=CPU,
                             after=lambda: after.append(1), memory=lambda fn: seen.append(fn()) or 123)
    assert peak == 123 and len(seen) == 1 and len(after) == 4


@pytest.mark.skipif(not cpu_memory_supported(), reason="needs Linux /proc/self/clear_refs")
def test_peak_rss_increase_sees_a_large_allocation_and_not_the_earlier_ones():
    def alloc():
        x = torch.ones(16 * 2**20 // 4 * 4)  # 64 MiB, written
        return float(x[-1])

    first = peak_rss_increase(alloc)
    second = peak_rss_increase(alloc)  # the first one's freed pages must not hide the second
    assert first >= 48 * 2**20 and second >= 48 * 2**20
    assert peak_rss_increase(lambda: None) < 16 * 2**20


def test_budget_skips_by_linear_extrapolation_and_after_an_overrun():
    b = Budget(budget_s=1.0, calls=2)
    assert b.skip_reason(100) is None
    b.record(100, 100.0, "L=100")  # 100 ms per call
    assert b.skip_reason(400) is None  # 400 ms x 2 calls fits 1 s
    assert "per-point budget" in b.skip_reason(1000)  # 1 s x 2 calls does not
    b.record(200, 1500.0, "L=200")
    assert "already took 1.5 s" in b.skip_reason(201)


# --- size ------------------------------------------------------------------------------------

def _ctx(loaded, registry, tmp_path):
    return RunContext(loaded, registry, run=RunDir(tmp_path / "run"), out=RunDir(tmp_path / "out"), device=CPU)


def test_size_facts(tiny_config, m4n_registry, tmp_path):
    ctx = _ctx(validate_data(tiny_config, registry=m4n_registry), m4n_registry, tmp_path)
    teacher, student = ctx.model("teacher"), ctx.model("student")
    t, s = size_facts(teacher, tmp_path), size_facts(student, tmp_path)
    assert t["params"] == sum(p.numel() for p in teacher.parameters())
    embed = teacher.backbone.base_model.get_input_embeddings().weight
    assert t["unused_params"] == embed.numel() and t["params_without_unused"] == t["params"] - embed.numel()
    assert len(t["unused_parameter_names"]) == 1 and "embed_tokens" in t["unused_parameter_names"][0]
    for f in (t, s):  # a safetensors file: the tensors plus a header
        assert f["tensor_bytes"] <= f["deploy_bytes"] < f["tensor_bytes"] + 64 * 1024
    # the embedding's bytes (plus its header entry) are what "without unused" leaves out
    saved = t["deploy_bytes"] - t["deploy_bytes_without_unused"]
    assert embed.numel() * 4 <= saved < embed.numel() * 4 + 512
    assert s["unused_params"] == 0 and s["deploy_bytes_without_unused"] == s["deploy_bytes"]
    lora = teacher.backbone.lora_state_dict()
    assert t["lora_params"] == sum(v.numel() for v in lora.values()) > 0
    assert t["lora_bytes"] < t["adapter_bytes"] < t["deploy_bytes"]
    assert "lora_bytes" not in s


def test_tied_tensors_are_written_once(tmp_path):
    w = torch.randn(64, 64)
    assert list(_unique({"a": w, "b": w, "c": w.clone()})) == ["a", "c"]
    assert file_bytes({"a": w, "b": w}, tmp_path) == file_bytes({"a": w}, tmp_path)


# --- streaming pieces ----------------------------------------------------------------------------

def test_teacher_kv_step_matches_the_parallel_forward(tiny_teacher):
    t = tiny_teacher.eval()
    x = torch.randn(2, 7, t.d_model)
    with torch.no_grad():
        full = t(x)
    hidden, cache = t.prefill_cache(x[:, :4])
    torch.testing.assert_close(hidden, full[:, :4], atol=1e-5, rtol=1e-4)
    for i in range(4, 7):
        y, cache = t.step_cached(x[:, i], cache)
        torch.testing.assert_close(y, full[:, i], atol=1e-5, rtol=1e-4)


def test_teacher_kv_decoder_equals_the_forward_over_each_stream(tiny_teacher):
    """The teacher's streaming decoder (a KV cache): tokens one at a time or several per call give
    the forward pass's hidden states, positions counted from the stream's start; ``reset`` starts
    a new stream (another batch size too) at position 0. Tolerances well below what a position
    off by one changes (about 3e-4 on this teacher)."""
    t = tiny_teacher.eval()
    x, y = torch.randn(2, 7, t.d_model), torch.randn(1, 5, t.d_model)
    close = dict(atol=1e-6, rtol=1e-5)
    with torch.no_grad():
        full_x, full_y = t(x), t(y)
    dec = decoder_for(t, 2)
    parts = [dec.step_many(x[:, :3]), dec.step(x[:, 3])[:, None], dec.step(x[:, 4])[:, None], dec.step_many(x[:, 5:])]
    torch.testing.assert_close(torch.cat(parts, 1), full_x, **close)
    assert dec.states().get_seq_length() == 7
    dec.reset(1)
    torch.testing.assert_close(torch.cat([dec.step_many(y[:, :2]), dec.step_many(y[:, 2:])], 1), full_y, **close)
    with pytest.raises(ValueError, match=r"expected \(1, T"):
        dec.step_many(x)


def test_teacher_kv_decoder_refuses_a_model_that_drops_its_cache(m4n_registry):
    """transformers turns the cache off while a checkpointed model trains: one clear error, not
    decisions from a stream whose positions restart at every call."""
    from mamba4net.testing.toy import tiny_pipeline_config

    node = dict(tiny_pipeline_config()["teacher"], gradient_checkpointing=True)
    t = m4n_registry.build("teachers", node).train()
    with pytest.raises(RuntimeError, match="no KV cache.*eval"):
        decoder_for(t, 1).step_many(torch.randn(1, 3, t.d_model))
    t.eval()
    assert decoder_for(t, 1).step_many(torch.randn(1, 3, t.d_model)).shape == (1, 3, t.d_model)


def test_state_sizes_constant_for_mamba_growing_for_kv(tiny_teacher, m4n_registry):
    node = {"name": "hybrid_mamba", "d_model": 16, "n_layers": 2, "d_state": 8, "headdim": 8,
            "chunk_size": 4, "attn_layers": [], "d_intermediate": 0}
    mamba = m4n_registry.build("students", node).eval()
    sizes, kv = [], []
    with torch.no_grad():
        for h in (4, 32):
            _, state = mamba.prefill(torch.randn(1, h, 16))
            sizes.append(state_bytes(state))
            _, cache = tiny_teacher.prefill_cache(torch.randn(1, h, tiny_teacher.d_model))
            kv.append(state_bytes(cache))
    assert sizes[0] == sizes[1] > 0
    assert kv[1] == kv[0] * 8  # keys and values of every position


# --- the whole measurement -------------------------------------------------------------------------

def _bench(tiny_config, m4n_registry, tmp_path, **sweep):
    tiny_config["benchmark"] = {**TINY_SWEEP, **sweep}
    loaded = validate_data(tiny_config, registry=m4n_registry)
    ctx = _ctx(loaded, m4n_registry, tmp_path)
    return measure_all(ctx, make_plan(loaded.cfg.benchmark), scratch=tmp_path, source={"config": "tiny"})


def test_measure_all_structure_and_ratios(tiny_config, m4n_registry, tmp_path):
    bench = _bench(tiny_config, m4n_registry, tmp_path)
    bench = json.loads(json.dumps(bench))  # JSON-safe
    assert set(bench) >= {"version", "source", "setup", "plan", "models", "task_batch", "throughput", "latency", "ratios"}
    assert bench["setup"]["torch_threads"] == torch.get_num_threads() and bench["setup"]["teacher_lora_merged"]
    assert "code_version" in bench["setup"] and bench["setup"]["memory_method"]
    rows = bench["throughput"]
    assert len(rows) == 2 * 2 * 2 and all(r["status"] == "ok" for r in rows)
    assert {(r["role"], r["batch_size"], r["seq_len"]) for r in rows} == {
        (role, b, n) for role in ("teacher", "student") for b in (1, 2) for n in (8, 32)}
    for r in rows:
        assert r["tokens"] == r["batch_size"] * r["seq_len"] and r["repeats"] == 2
        assert r["tokens_per_s"] == pytest.approx(r["tokens"] / (r["median_ms"] / 1e3), rel=1e-3)
    by = {(r["role"], r["batch_size"], r["seq_len"]): r for r in rows}
    ratios = bench["ratios"]
    assert len(ratios["throughput"]) == 4
    for x in ratios["throughput"]:
        s, t = by[("student", x["batch_size"], x["seq_len"])], by[("teacher", x["batch_size"], x["seq_len"])]
        assert x["student_over_teacher"] == pytest.approx(s["tokens_per_s"] / t["tokens_per_s"], rel=1e-3)
    m = bench["models"]
    assert ratios["size_student_over_teacher"] == pytest.approx(m["student"]["deploy_bytes"] / m["teacher"]["deploy_bytes"], rel=1e-4)
    assert ratios["params_student_over_teacher"] == pytest.approx(m["student"]["params"] / m["teacher"]["params"], rel=1e-4)
    series = {(r["series"], r["history"]) for r in bench["latency"] if r["status"] == "ok"}
    assert series == {(s, h) for s in (STUDENT_STEP, STUDENT_ONNX, TEACHER_KV, TEACHER_REENCODE) for h in (4, 16)}
    lat = {(r["series"], r["history"]): r for r in bench["latency"]}
    for x in ratios["latency"]:
        h = x["history"]
        assert x["teacher_kv_over_student"] == pytest.approx(
            lat[(TEACHER_KV, h)]["median_ms"] / lat[(STUDENT_STEP, h)]["median_ms"], rel=1e-3)
    assert lat[(TEACHER_KV, 16)]["state_bytes"] > lat[(TEACHER_KV, 4)]["state_bytes"]
    assert lat[(STUDENT_ONNX, 4)]["onnx_bytes"] > 0 and bench["setup"]["decision_threads"] == 1

    head = headline(bench)
    assert head["teacher"]["disk_bytes"] == m["teacher"]["deploy_bytes"]
    assert set(head["ratios"]["throughput_student_over_teacher_by_seq_len"]) == {"8", "32"}
    assert head["ratios"]["throughput_batch_size"] == 1

    written = write_bench(tmp_path / "bench", bench)
    names = {p.name for p in written}
    assert names == {"bench.json", "bench.md", "bench_throughput.png", "bench_latency.png", "bench_memory.png"} or (
        not cpu_memory_supported() and "bench_memory.png" not in names)
    for p in written:
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "bench" / "bench.md").read_text()
    assert "| 1 | 32 |" in md and "student / teacher" in md and "history" in md


def test_points_over_budget_are_skipped_and_listed(tiny_config, m4n_registry, tmp_path):
    bench = _bench(tiny_config, m4n_registry, tmp_path, point_budget_s=1e-6, seq_lens=[8, 16, 32],
                   batch_sizes=[1], history_lens=[4, 8])
    rows = {(r["role"], r["seq_len"]): r for r in bench["throughput"]}
    for role in ("teacher", "student"):
        assert rows[(role, 8)]["status"] == "ok"  # the first point always runs (once)
        assert rows[(role, 16)]["status"] == rows[(role, 32)]["status"] == "skipped"
        assert "budget" in rows[(role, 32)]["reason"]
    assert any(r["status"] == "skipped" for r in bench["latency"])
    ratios = compute_ratios(bench)
    bound = rows[("teacher", 8)]["flops"] / rows[("student", 8)]["flops"]
    measured = rows[("student", 8)]["tokens_per_s"] / rows[("teacher", 8)]["tokens_per_s"]
    assert ratios["throughput"] == [{"batch_size": 1, "seq_len": 8, "student_over_teacher": pytest.approx(measured, rel=1e-4),
                                     "flop_ratio": pytest.approx(bound, rel=1e-4),
                                     "efficiency": pytest.approx(measured / bound, rel=1e-3)}]
    # the FLOP bound of the skipped points too
    assert [x["seq_len"] for x in ratios["flop_bound"]] == [8, 16, 32]


def test_compute_ratios_by_hand():
    bench = {
        "models": {r: {"params": p, "params_without_unused": q, "deploy_bytes": d, "deploy_bytes_without_unused": e}
                   for r, p, q, d, e in (("teacher", 1000, 800, 4000, 3200), ("student", 100, 100, 400, 400))},
        "task_batch": {"teacher": {"tokens_per_s": 10.0}, "student": {"tokens_per_s": 40.0}},
        "throughput": [
            {"role": "teacher", "batch_size": 1, "seq_len": 256, "status": "ok", "tokens_per_s": 100.0, "peak_bytes": 800},
            {"role": "student", "batch_size": 1, "seq_len": 256, "status": "ok", "tokens_per_s": 500.0, "peak_bytes": 200},
            {"role": "teacher", "batch_size": 1, "seq_len": 512, "status": "skipped", "reason": "x"},
            {"role": "student", "batch_size": 1, "seq_len": 512, "status": "ok", "tokens_per_s": 450.0, "peak_bytes": 300},
        ],
        "latency": [
            {"series": STUDENT_STEP, "history": 16, "status": "ok", "median_ms": 2.0},
            {"series": TEACHER_KV, "history": 16, "status": "ok", "median_ms": 5.0},
            {"series": TEACHER_REENCODE, "history": 16, "status": "ok", "median_ms": 9.0},
        ],
    }
    r = compute_ratios(bench)
    assert r["params_student_over_teacher"] == 0.1 and r["params_student_over_teacher_without_unused"] == 0.125
    assert r["size_student_over_teacher"] == 0.1 and r["size_student_over_teacher_without_unused"] == 0.125
    assert r["task_batch_throughput_student_over_teacher"] == 4.0
    assert r["throughput"] == [{"batch_size": 1, "seq_len": 256, "student_over_teacher": 5.0}]
    assert r["memory"] == [{"batch_size": 1, "seq_len": 256, "teacher_over_student": 4.0}]
    assert r["latency"] == [{"history": 16, "teacher_kv_over_student": 2.5, "teacher_reencode_over_student": 4.5}]


# --- CLI -------------------------------------------------------------------------------------------

def _write_config(tiny_config, tmp_path, **bench):
    tiny_config["benchmark"] = {**TINY_SWEEP, **bench}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    return path


def test_cli_bench_on_a_config(tiny_config, m4n_registry, tmp_path, capsys):
    cfg = _write_config(tiny_config, tmp_path)
    out = tmp_path / "bench-out"
    assert main(["bench", str(cfg), "--out", str(out), "--seq-lens", "8,16", "--history-lens", "4",
                 "--batch-sizes", "1", "--no-progress"]) == 0
    bench = json.loads((out / "bench.json").read_text())
    assert bench["plan"]["seq_lens"] == [8, 16] and bench["plan"]["history_lens"] == [4]
    assert bench["source"]["weights"].startswith("built from the config")
    assert (out / "bench.md").exists() and (out / "bench_throughput.png").exists()
    assert "student / teacher" in capsys.readouterr().out
    assert not (out / "checkpoints").exists()  # a config bench leaves no run skeleton behind
    # one role alone: no ratios, no teacher rows
    assert main(["bench", str(cfg), "--out", str(out), "--seq-lens", "8", "--history-lens", "4",
                 "--batch-sizes", "1", "--roles", "student", "--no-progress"]) == 0
    bench = json.loads((out / "bench.json").read_text())
    assert bench["ratios"] == {} and list(bench["models"]) == ["student"]
    assert {r["role"] for r in bench["throughput"]} == {"student"}
    assert {r["series"] for r in bench["latency"]} == {STUDENT_STEP, STUDENT_ONNX}
    assert "student onnxruntime step ms" in (out / "bench.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--roles", "teacher,critic"], "unknown model role 'critic'"),
    (["--seq-lens", "8,x"], None),  # argparse: exit code 2
])
def test_cli_bench_bad_arguments(tiny_config, m4n_registry, tmp_path, capsys, args, message):
    cfg = _write_config(tiny_config, tmp_path)
    if message is None:
        with pytest.raises(SystemExit) as exc:
            main(["bench", str(cfg), *args])
        assert exc.value.code == 2
        return
    assert main(["bench", str(cfg), "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_bench_errors_name_the_culprit(tiny_config, m4n_registry, tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope.yaml")]) == 2
    assert "no such config file or run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["bench", str(tmp_path / "empty")]) == 1
    assert "not a run directory" in capsys.readouterr().err
    run = RunDir(tmp_path / "unfinished").create()  # a run whose stages never finished
    run.write_config(validate_data(tiny_config, registry=m4n_registry).resolved())
    assert main(["bench", str(run.root)]) == 1
    err = capsys.readouterr().err.strip()
    assert "stage 'adapt_teacher' has not finished" in err and len(err.splitlines()) == 1
