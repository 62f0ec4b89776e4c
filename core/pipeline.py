"""Running a pipeline (``mamba4net run``) and re-evaluating a finished run (``mamba4net evaluate``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import yaml

from mamba4net.core import distributed as dist
from mamba4net.core.config import LoadedConfig, load_config
from mamba4net.core.context import RunContext, pick_device
from mamba4net.core.errors import ConfigError, Mamba4netError
from mamba4net.core.kernels import set_kernel_overrides
from mamba4net.core.report import write_report
from mamba4net.core.runs import RunDir, latest_run_dir, new_run_dir, write_json
from mamba4net.core.stages import STAGES

log = logging.getLogger("mamba4net")


def _apply_runtime(loaded: LoadedConfig) -> torch.device:
    rt = loaded.cfg.runtime
    if rt.threads:
        torch.set_num_threads(rt.threads)
    set_kernel_overrides(rt.kernels)
    return pick_device(rt.device)


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
    device = _apply_runtime(loaded)  # before anything is written: a bad device leaves no stub run
    device = dist.setup(loaded.cfg.runtime.engine, device)  # DeepSpeed: join the ranks' process group
    if run.config_path.exists():
        if not resume:
            raise Mamba4netError(f"{run.root} already holds a run: pass --resume to continue it, or another --out")
        previous = yaml.safe_load(run.config_path.read_text())
        changed = _diff(previous, resolved)
        # what the models are may not change; how they are trained and run may (e.g. a lower lr
        # after a NaN, another device), at the price of an exact replay
        fixed = [k for k in changed if not k.startswith(("runtime.", "train.", "evaluate.", "benchmark."))]
        if fixed:
            raise ConfigError(f"--resume {run.root}: the config differs from the run's at {', '.join(fixed[:5])}")
        for key in changed:
            if not key.startswith("runtime.progress"):
                log.warning("--resume: %s changed since the run started", key)
    dist.barrier()  # every rank has checked the folder before rank 0 writes into it
    if dist.is_main():
        run.create()
        run.write_config(resolved)
    dist.barrier()
    ctx = RunContext(loaded, registry, run=run, out=run, resume=resume, device=device)
    if resume and run.results_path.exists():
        ctx.results = json.loads(run.results_path.read_text())
    stages = registry.get("strategies", loaded.cfg.strategy["name"]).build(loaded.params["strategy"])
    log.info("run %s: stages %s on %s", run.root, " -> ".join(stages), device)
    t0 = time.perf_counter()
    for name in stages:
        if not dist.is_main() and not (STAGES[name].trains or name == "init_student"):
            continue  # evaluation, benchmarks and what they write are rank 0's
        log.info("stage %s", name)
        STAGES[name].fn(ctx)
    if not dist.is_main():
        return run
    ctx.results.setdefault("timing", {})["total_seconds"] = round(time.perf_counter() - t0, 1)
    if ctx.results.get("models"):
        write_json(run.results_path, ctx.results)
        write_report(run, ctx.results, run.read_metrics(), f"Run {loaded.cfg.name}")
    return run


def evaluate_run(run_root: str | Path, overrides: list[str] | None = None, registry=None) -> RunDir:
    """Re-evaluate a finished run's teacher, student and baselines without training.

    The run's own ``config.yaml`` is the base; ``overrides`` (``--set``) change e.g. the data folder.
    Results go to ``RUN_DIR/evaluations/<timestamp>/`` so the original results are never replaced.
    """
    from mamba4net.registry import default_registry

    registry = registry or default_registry()
    run = RunDir(run_root)
    if not run.config_path.exists():
        raise Mamba4netError(f"{run.root}: not a run directory (no config.yaml)")
    loaded = load_config(run.config_path, overrides, registry=registry)
    device = _apply_runtime(loaded)
    stages = registry.get("strategies", loaded.cfg.strategy["name"]).build(loaded.params["strategy"])
    ctx = RunContext(loaded, registry, run=run, out=run, device=device)
    for stage in stages:
        if STAGES[stage].trains or stage == "init_student":
            ctx.require_done(stage)
    ctx.out = out = RunDir(new_run_dir(run.root / "evaluations", "eval")).create()
    out.write_config(loaded.resolved())
    STAGES["evaluate"].fn(ctx)
    if "benchmark" in stages:
        STAGES["benchmark"].fn(ctx)
    write_json(out.results_path, ctx.results)
    write_report(out, ctx.results, [], f"Evaluation of {run.root.name}")
    return out
