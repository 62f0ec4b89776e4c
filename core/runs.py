"""The run directory: resolved config, metrics (JSON lines), results, report, checkpoints.

Every file is written atomically (:mod:`mamba4net.core.io`), so a run killed at any instant leaves
either the old or the new version of a file, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import yaml

from mamba4net.core.config import LoadedConfig, load_config
from mamba4net.core.errors import Mamba4netError
from mamba4net.core.io import atomic_write_text, json_safe


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.config_path = self.root / "config.yaml"
        self.metrics_path = self.root / "metrics.jsonl"
        self.results_path = self.root / "results.json"
        self.report_path = self.root / "report.md"

    def create(self) -> "RunDir":
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, resolved: dict[str, Any]) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(resolved, sort_keys=False))

    def stage_dir(self, stage: str) -> Path:
        path = self.checkpoints / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- metrics ----------------------------------------------------------------------------
    def log_metrics(self, stage: str, step: int, values: dict[str, float]) -> None:
        record = {"stage": stage, "step": step, "time": round(time.time(), 3), **values}
        if self.metrics_path.exists() and self.metrics_path.stat().st_size:
            with open(self.metrics_path, "rb") as f:  # a line cut by a kill must not swallow this one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    with open(self.metrics_path, "a") as g:
                        g.write("\n")
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(json_safe(record)) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        return out

    def truncate_metrics(self, stage: str, after_step: int) -> None:
        """Drop ``stage``'s records past ``after_step`` (they are replayed on resume)."""
        kept = [
            r for r in self.read_metrics() if not (r.get("stage") == stage and r.get("step", 0) > after_step)
        ]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))


def new_run_dir(base: str | Path, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(base) / f"{name}-{stamp}"
    i = 1
    while path.exists():
        path = Path(base) / f"{name}-{stamp}-{i}"
        i += 1
    return path


def latest_run_dir(base: str | Path, name: str) -> Path | None:
    """The newest ``<name>-<YYYYmmdd-HHMMSS>[-i]`` run (not another config's ``<name>-small-...``)."""
    pattern = re.compile(re.escape(name) + r"-\d{8}-\d{6}(-\d+)?$")
    runs = sorted(p for p in Path(base).glob(f"{name}-*") if pattern.match(p.name) and (p / "config.yaml").exists())
    return runs[-1] if runs else None


def load_run_config(run_root: str | Path, overrides: list[str] | None = None,
                    registry=None) -> tuple[RunDir, LoadedConfig]:
    """A run folder and its ``config.yaml`` (with ``overrides``); one line for a folder that holds no run."""
    run = RunDir(Path(run_root).expanduser())
    if not run.config_path.exists():
        raise Mamba4netError(f"{run.root}: not a run directory (no config.yaml)")
    return run, load_config(run.config_path, overrides, registry=registry)
