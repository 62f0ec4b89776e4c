"""The pipeline's ``benchmark`` stage: size and speed of teacher vs student, side by side.

The measuring itself lives in :mod:`mamba4net.core.bench` (also behind ``mamba4net bench``); this
stage runs it with the config's ``benchmark`` section, writes ``bench.json``/``bench.md``/plots
into the run (or evaluation) folder, the student's export, and the headline into results.json.
"""

from __future__ import annotations

from mamba4net.core.bench.plan import make_plan
from mamba4net.core.bench.run import headline, measure_all, write_bench
from mamba4net.core.checkpoint import save_tensors
from mamba4net.core.runs import write_json


def measure_efficiency(ctx) -> dict:
    params = ctx.cfg.benchmark
    plan = make_plan(params)
    source = {"config": str(ctx.out.config_path), "run_dir": str(ctx.run.root), "weights": "the run's finished stages"}
    bench = measure_all(ctx, plan, sweep=params.sweep, scratch=ctx.out.root, source=source)
    write_bench(ctx.out.root, bench)
    out = headline(bench)
    # the student as deployed: one safetensors file of encoder + backbone + head
    export = ctx.out.root / "checkpoints" / "export"
    export.mkdir(parents=True, exist_ok=True)
    save_tensors(export / "student.safetensors", ctx.model("student").state_dict())
    out["student"]["export_file_bytes"] = (export / "student.safetensors").stat().st_size
    ctx.results["efficiency"] = out
    if ctx.out.results_path.exists() or ctx.results.get("models"):
        write_json(ctx.out.results_path, ctx.results)
    return out
