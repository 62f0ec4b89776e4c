"""The pipeline's benchmark: size and speed of the deployed models side by side (every student
against the teacher).

The measuring itself lives in :mod:`mamba4net.core.bench` (also behind ``mamba4net bench``); this
step runs it with the config's ``benchmark`` section, writes ``bench.json``/``bench.md``/plots into
the run (or evaluation) folder and the headline into results.json.
"""

from __future__ import annotations

from mamba4net.core.bench.plan import deployed_roles, make_plan
from mamba4net.core.bench.run import headline, measure_all, write_bench
from mamba4net.core.io import write_json


def measure_efficiency(ctx) -> dict:
    params = ctx.cfg.benchmark
    roles = deployed_roles(ctx)
    if not roles:
        return {}  # nothing deployed to measure (a method that offers only predictors, say)
    plan = make_plan(params, known=roles)
    source = {"config": str(ctx.out.config_path), "run_dir": str(ctx.run.root), "weights": "the run's finished stages"}
    bench = measure_all(ctx, plan, sweep=params.sweep, scratch=ctx.out.root, source=source)
    write_bench(ctx.out.root, bench)
    out = headline(bench)
    for role, info in ctx.results.get("exports", {}).items():  # the deployed file, as exported
        if role in out:
            out[role]["export_file_bytes"] = info["bytes"]
    ctx.results["efficiency"] = out
    if ctx.out.results_path.exists() or ctx.results.get("models"):
        write_json(ctx.out.results_path, ctx.results)
    return out
