"""Running a pipeline (``mamba4net run``) and re-evaluating a finished run (``mamba4net evaluate``).

A run is: the method's stages (:mod:`mamba4net.core.stages`), then the export of its deployed
students, the evaluation of every deployed model beside the baselines, the benchmark (unless
``benchmark.enabled`` is off) and the report.
"""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

from mamba4net.core import distributed as dist
from mamba4net.core.config import LoadedConfig, load_config, validate_data
from mamba4net.core.context import RunContext
from mamba4net.core.efficiency import measure_efficiency
from mamba4net.core.errors import ConfigError, Mamba4netError
from mamba4net.core.evaluation import evaluate_all, raise_if_not_finite, verify_baselines
from mamba4net.core.export import export_students
from mamba4net.core.io import read_json, write_json
from mamba4net.core.lock import run_lock
from mamba4net.core.report import write_report
from mamba4net.core.runs import RunDir, latest_run_dir, load_run_config, new_run_dir
from mamba4net.core.runtime import apply_runtime
from mamba4net.core.schema import migrate_strategy
from mamba4net.core.stages import run_stages
from mamba4net.core.yamlio import apply_override, read_yaml

log = logging.getLogger("mamba4net")


def _diff(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix]


def resolve_run_dir(loaded: LoadedConfig, out: str | None, resume: bool, runs_root: str = "runs") -> Path:
    if out:
        return Path(out)
    if resume:
        found = latest_run_dir(runs_root, loaded.cfg.name)
        if found is None:
            raise Mamba4netError(f"--resume: no earlier run named '{loaded.cfg.name}' under {runs_root}/")
        return found
    return new_run_dir(runs_root, loaded.cfg.name)


def run_pipeline(loaded: LoadedConfig, run_root: Path, resume: bool = False, registry=None) -> RunDir:
    from mamba4net.registry import default_registry

    registry = registry or default_registry()
    run = RunDir(run_root)
    resolved = loaded.resolved()
    device = apply_runtime(loaded)  # before anything is written: a bad device leaves no stub run
    device = dist.setup(loaded.cfg.runtime.engine, device)  # DeepSpeed: join the ranks' process group
    with run_lock(run.root, "run"):  # before the checks: another live writer is refused first
        return _run_locked(loaded, run, resolved, resume, registry, device)


def _run_locked(loaded: LoadedConfig, run: RunDir, resolved: dict, resume: bool, registry, device) -> RunDir:
    if run.config_path.exists():
        if not resume:
            raise Mamba4netError(f"{run.root} already holds a run: pass --resume to continue it, or another --out")
        previous = migrate_strategy(read_yaml(run.config_path)[0])  # a run from before methods
        changed = _diff(previous, resolved)
        # what the models are may not change; how they are trained and run may (e.g. a lower lr
        # after a NaN, another device), at the price of an exact replay
        fixed = [k for k in changed if not k.startswith(("runtime.", "train.", "evaluate.", "benchmark."))]
        if fixed:
            raise ConfigError(f"--resume {run.root}: the config differs from the run's at {', '.join(fixed[:5])}")
        for key in changed:
            if not key.startswith("runtime.progress"):
                log.warning("--resume: %s changed since the run started", key)
    ctx = RunContext(loaded, registry, run=run, out=run, resume=resume, device=device)
    if resume:  # what the finished stages wrote verifies, before any work
        ctx.results = read_json(run.results_path, missing_ok=True) or {}
        ctx.verify_finished(loaded.method.stage_names)
    dist.barrier()  # every rank has checked the folder before rank 0 writes into it
    if dist.is_main():
        run.create()
        run.write_config(resolved)
    dist.barrier()
    method = loaded.method
    log.info("run %s: method %s (%s) on %s", run.root, method.name, method.describe(), device)
    t0 = time.perf_counter()
    run_stages(ctx)  # every rank: training is collective under DeepSpeed
    if not dist.is_main():
        return run  # export, evaluation, benchmark and what they write are rank 0's
    ctx.results["exports"] = export_students(ctx)
    evaluate_all(ctx)
    if loaded.cfg.benchmark.enabled:
        measure_efficiency(ctx)
    ctx.results.setdefault("timing", {})["total_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(run.results_path, ctx.results)
    write_report(run, ctx.results, run.read_metrics(), f"Run {loaded.cfg.name}")
    raise_if_not_finite(ctx.results, run.results_path)
    return run


def run_config(config: str | Path | dict, out: str | Path, overrides: list[str] | None = None,
               resume: bool = False, registry=None) -> dict:
    """Run a pipeline from a YAML file (or a config dict) into the folder ``out``, as ``mamba4net
    run`` does; returns the run's results (``results.json``). For notebooks and plugin tests."""
    if isinstance(config, dict):
        data = copy.deepcopy(config)
        for assignment in overrides or []:
            apply_override(data, assignment)
        loaded = validate_data(data, registry=registry)
    else:
        loaded = load_config(config, overrides, registry=registry)
    run = run_pipeline(loaded, Path(out), resume=resume, registry=registry)
    return read_json(run.results_path)


def open_run(run_root: str | Path, role: str | None = None, registry=None) -> RunContext:
    """A finished run to read from: its task and ``model(role)`` with the weights its stages wrote
    (every weights file verified first). No file is written and the runtime (threads, device) is
    left as it is. ``role``: also check that the run's method declares it. One-line errors."""
    from mamba4net.registry import default_registry

    registry = registry or default_registry()
    run, loaded = load_run_config(run_root, registry=registry)
    ctx = RunContext(loaded, registry, run=run, out=run)
    if role is not None and role not in [r.name for r in loaded.method.roles]:
        raise ConfigError(f"{run.root}: its method '{loaded.method.name}' has no role '{role}'; roles: "
                          f"{', '.join(r.name for r in loaded.method.roles)}")
    ctx.require_finished(loaded.method.stage_names)
    return ctx


def evaluate_run(run_root: str | Path, overrides: list[str] | None = None, registry=None,
                 bench: bool | None = None) -> RunDir:
    """Re-evaluate a finished run's deployed models and baselines without training.

    The run's own ``config.yaml`` is the base; ``overrides`` (``--set``) change e.g. the data folder.
    Results go to ``RUN_DIR/evaluations/<timestamp>/`` so the original results are never replaced.
    ``bench``: measure efficiency too (default: the config's ``benchmark.enabled``).
    """
    from mamba4net.registry import default_registry

    registry = registry or default_registry()
    run, loaded = load_run_config(run_root, overrides, registry=registry)
    device = apply_runtime(loaded)
    ctx = RunContext(loaded, registry, run=run, out=run, device=device)
    with run_lock(run.root, "evaluate"):
        ctx.require_finished(loaded.method.stage_names)  # every weights file exists and verifies
        verify_baselines(ctx)
        for role in ctx.deployed():  # and loads, before anything is written
            ctx.model(role.name)
        ctx.out = out = RunDir(new_run_dir(run.root / "evaluations", "eval")).create()
        out.write_config(loaded.resolved())
        evaluate_all(ctx)
        if loaded.cfg.benchmark.enabled if bench is None else bench:
            measure_efficiency(ctx)
        write_json(out.results_path, ctx.results)
        write_report(out, ctx.results, [], f"Evaluation of {run.root.name}")
    raise_if_not_finite(ctx.results, out.results_path)
    return out
