"""``mamba4net bench CONFIG_OR_RUN_DIR``: the deployed models of a config (built fresh: size and
speed do not depend on the weights' values) or of a run directory (its finished weights; the
headline is merged into its results.json and its report re-rendered)."""

from __future__ import annotations

import logging
import tempfile
from contextlib import nullcontext
from pathlib import Path

from mamba4net.core.bench.plan import deployed_roles, make_plan
from mamba4net.core.bench.run import headline, measure_all, write_bench
from mamba4net.core.config import load_config
from mamba4net.core.context import RunContext
from mamba4net.core.errors import ConfigError, Mamba4netError
from mamba4net.core.io import read_json, write_json
from mamba4net.core.lock import run_lock
from mamba4net.core.report import render_report
from mamba4net.core.runs import RunDir, new_run_dir
from mamba4net.core.runtime import apply_runtime

log = logging.getLogger("mamba4net")


def bench_target(target: str | Path, overrides: list[str] | None = None, out: str | Path | None = None,
                 plan_args: dict | None = None, progress: bool = True, registry=None) -> tuple[Path, dict]:
    """Benchmark a config's or a finished run's models. Returns (output folder, bench dict)."""
    from mamba4net.registry import default_registry

    registry = registry or default_registry()
    path = Path(target)
    run: RunDir | None = None
    if path.is_dir():
        run = RunDir(path)
        if not run.config_path.exists():
            raise Mamba4netError(f"{path}: not a run directory (no config.yaml)")
        loaded = load_config(run.config_path, overrides, registry=registry)
    elif path.is_file():
        loaded = load_config(path, overrides, registry=registry)
    else:
        raise ConfigError(f"{path}: no such config file or run directory")
    if not progress:
        loaded.cfg.runtime.progress = False
    device = apply_runtime(loaded)
    out_dir = Path(out) if out else (run.root if run else new_run_dir("runs", f"bench-{loaded.cfg.name}"))
    source = {"config": str(run.config_path if run else path), "run_dir": str(run.root) if run else None,
              "weights": "the run's finished stages" if run else "built from the config (untrained)",
              "overrides": list(overrides or [])}
    with tempfile.TemporaryDirectory(prefix="mamba4net-bench-") as tmp, \
            (run_lock(run.root, "bench") if run and out_dir.resolve() == run.root.resolve() else nullcontext()):
        ctx = RunContext(loaded, registry, run=run or RunDir(tmp), out=RunDir(out_dir), device=device)
        plan = make_plan(loaded.cfg.benchmark, known=deployed_roles(ctx if run else loaded.method), **(plan_args or {}))
        if run is not None:  # every stage that writes a measured role has finished
            ctx.require_finished([s.name for r in plan.roles for s in loaded.method.writers(r)])
            read_json(run.results_path, missing_ok=True)  # readable before minutes of measuring
        out_dir.mkdir(parents=True, exist_ok=True)
        bench = measure_all(ctx, plan, scratch=out_dir, source=source)
        write_bench(out_dir, bench)
        if run is not None and out_dir.resolve() == run.root.resolve():
            _merge_into_run(run, bench)
    return out_dir, bench


def _merge_into_run(run: RunDir, bench: dict) -> None:
    """Put the headline into the run's results.json and re-render its report (if it has results)."""
    results = read_json(run.results_path, missing_ok=True)
    if results is None:
        log.warning("%s has no results.json yet: bench.json written, nothing merged", run.root)
        return
    results["efficiency"] = headline(bench)
    write_json(run.results_path, results)
    render_report(run.root)
