"""``mamba4net bench CONFIG_OR_RUN_DIR``: the deployed models of a config (built fresh: size and
speed do not depend on the weights' values) or of a run directory (its finished weights; the
headline is merged into its results.json and its report re-rendered).

``--against teacher.KEY=VALUE ...``: the students against another teacher, built fresh from the
config's teacher node with these overrides (e.g. ``teacher.num_layers=30``: the whole SmolLM2
instead of the run's 6-layer truncation, the paper's comparison). A run's students keep their
trained weights; the run's own teacher, results.json and report are left alone: the bench goes to
``--out`` or ``RUN_DIR/bench-against-<overrides>/``."""

from __future__ import annotations

import logging
import re
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
from mamba4net.core.model import build_netmodel
from mamba4net.core.report import render_report
from mamba4net.core.runs import RunDir, new_run_dir
from mamba4net.core.runtime import apply_runtime

log = logging.getLogger("mamba4net")


def bench_target(target: str | Path, overrides: list[str] | None = None, out: str | Path | None = None,
                 plan_args: dict | None = None, progress: bool = True, registry=None,
                 against: list[str] | None = None) -> tuple[Path, dict]:
    """Benchmark a config's or a finished run's models. Returns (output folder, bench dict).

    ``against``: ``teacher.KEY=VALUE`` overrides; the teacher is then built fresh from the config's
    teacher node with them (never with the run's weights), and the bench is written to ``out`` or
    ``RUN_DIR/bench-against-<overrides>`` (a config: ``runs/bench-<name>-against-<timestamp>``)."""
    from mamba4net.registry import default_registry

    registry = registry or default_registry()
    path = Path(target)
    run: RunDir | None = None
    if path.is_dir():
        run = RunDir(path)
        if not run.config_path.exists():
            raise Mamba4netError(f"{path}: not a run directory (no config.yaml)")
        config_path = run.config_path
    elif path.is_file():
        config_path = path
    else:
        raise ConfigError(f"{path}: no such config file or run directory")
    loaded = load_config(config_path, overrides, registry=registry)
    against = list(against or [])
    against_loaded = _against_config(config_path, overrides, against, loaded, registry) if against else None
    if not progress:
        loaded.cfg.runtime.progress = False
    device = apply_runtime(loaded)
    if out:
        out_dir = Path(out)
        if against and run is not None and out_dir.resolve() == run.root.resolve():
            raise ConfigError(f"bench --against: {out}: the comparison is not the run's own bench; give another "
                              f"--out (default: {run.root / ('bench-against-' + _slug(against))})")
    elif against:
        out_dir = run.root / f"bench-against-{_slug(against)}" if run else \
            new_run_dir("runs", f"bench-{loaded.cfg.name}-against")
    else:
        out_dir = run.root if run else new_run_dir("runs", f"bench-{loaded.cfg.name}")
    source = {"config": str(config_path if run else path), "run_dir": str(run.root) if run else None,
              "weights": "the run's finished stages" if run else "built from the config (untrained)",
              "overrides": list(overrides or [])}
    if against:
        source.update(against=against, teacher_weights="built fresh from the config's teacher node with the "
                      "--against overrides (not the run's), LoRA merged")
    with tempfile.TemporaryDirectory(prefix="mamba4net-bench-") as tmp, \
            (run_lock(run.root, "bench") if run and out_dir.resolve() == run.root.resolve() else nullcontext()):
        ctx = RunContext(loaded, registry, run=run or RunDir(tmp), out=RunDir(out_dir), device=device)
        plan = make_plan(loaded.cfg.benchmark, known=deployed_roles(ctx if run else loaded.method), **(plan_args or {}))
        rebuilt = {}
        if against_loaded is not None:
            teachers = [r for r, kind in zip(plan.roles, plan.kinds) if kind == "teacher"]
            if not teachers or len(teachers) == len(plan.roles):
                raise ConfigError(f"bench --against: measures students against a teacher, but the roles measured "
                                  f"are {', '.join(plan.roles)}")
            rebuilt = {r: build_netmodel(registry, against_loaded, r, ctx.task, loaded.cfg.seed).to(device)
                       for r in teachers}
        if run is not None:  # every stage that writes a measured role (not rebuilt) has finished
            ctx.require_finished([s.name for r in plan.roles if r not in rebuilt for s in loaded.method.writers(r)])
            read_json(run.results_path, missing_ok=True)  # readable before minutes of measuring
        out_dir.mkdir(parents=True, exist_ok=True)
        bench = measure_all(ctx, plan, scratch=out_dir, source=source, models=rebuilt)
        write_bench(out_dir, bench)
        if run is not None and out_dir.resolve() == run.root.resolve():
            _merge_into_run(run, bench)
    return out_dir, bench


def _against_config(config_path: Path, overrides: list[str] | None, against: list[str], loaded, registry):
    """The config with the ``--against`` overrides (``teacher.KEY=VALUE``, keys under a teacher
    role's config node) applied over ``--set``'s; a bad one is a one-line ConfigError."""
    nodes = sorted({r.config_key for r in loaded.method.deployed("teacher")}) or ["teacher"]
    for item in against:
        key = item.split("=", 1)[0].strip()
        if "=" not in item or not key:
            raise ConfigError(f"--against {item}: expected KEY=VALUE with KEY under the teacher's config node, "
                              f"e.g. {nodes[0]}.num_layers=30")
        if key.split(".", 1)[0] not in nodes or "." not in key:
            raise ConfigError(f"--against {item}: {key!r} is not a key under the teacher's config node "
                              f"({', '.join(n + '.' for n in nodes)}...), e.g. {nodes[0]}.num_layers=30")
    try:
        return load_config(config_path, list(overrides or []) + against, registry=registry)
    except ConfigError as err:  # --set's values loaded above: the culprit is an --against one
        raise ConfigError(str(err).replace("(from --set)", "(from --against)").replace("--set ", "--against ")) from None


def _slug(against: list[str]) -> str:
    """A folder name for a list of overrides: ``teacher.num_layers=30`` -> ``num_layers-30``."""
    parts = [a.split(".", 1)[1] if "." in a.split("=", 1)[0] else a for a in against]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)).strip("-") or "teacher"


def _merge_into_run(run: RunDir, bench: dict) -> None:
    """Put the headline into the run's results.json and re-render its report (if it has results)."""
    results = read_json(run.results_path, missing_ok=True)
    if results is None:
        log.warning("%s has no results.json yet: bench.json written, nothing merged", run.root)
        return
    results["efficiency"] = headline(bench)
    write_json(run.results_path, results)
    render_report(run.root)
