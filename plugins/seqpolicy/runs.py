"""Finished runs whose trained policy adds episodes to a task's experience pool (``task.pool.runs``).

Return-conditioned self-improvement across runs: a run's teacher or student plays the task's
training episodes, its episodes join the next run's pool, and a filter on the best episodes of
each training trace or job sequence keeps them where they beat the rest. :class:`PoolRun` is the
config entry; :func:`open_pool_run` opens the run, checks it and gives the key its episodes are
cached under (its weights' checksum). Import-light (pydantic and pathlib): task configs import it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class PoolRun(BaseModel):
    """A finished run whose trained policy plays the training episodes beside the pool's policies,
    asked for the return its own run asks for."""

    model_config = ConfigDict(extra="forbid")
    dir: str  # the run's folder (its config.yaml and finished stages); kept as an absolute path
    role: str = "student"

    @model_validator(mode="after")
    def _check(self) -> "PoolRun":
        path = Path(self.dir).expanduser()
        if not (path / "config.yaml").is_file():
            raise ValueError(f"pool.runs: {self.dir} is not a run directory (no config.yaml)")
        self.dir = str(path.resolve())  # the run's config records where it is, wherever it is read from
        return self


def open_pool_run(source: PoolRun, task: str) -> tuple[Any, str]:
    """(the run's context, its weights' SHA-256 for ``source.role``); a one-line ``ConfigError``
    when the run is of another task or its weights carry no checksum."""
    from mamba4net.core.errors import ConfigError
    from mamba4net.core.pipeline import open_run

    run = open_run(source.dir, source.role)
    if run.cfg.task["name"] != task:
        raise ConfigError(f"task.pool.runs: {source.dir} is a run of task '{run.cfg.task['name']}', not {task}")
    digest = run.weights_digest(source.role)
    if digest is None:
        raise ConfigError(f"task.pool.runs: {source.dir} holds no trained weights of role '{source.role}' "
                          "with a checksum (its stages writing it were skipped, or predate checksums)")
    return run, digest
