"""Running a method's stages: in order, each once, every one resumable.

A finished stage (``checkpoints/<stage>/done.json``) is skipped. An unfinished one runs its
``run(ctx)``; an unfinished training stage continues from its latest checkpoint inside ``ctx.fit``.
When ``run`` returns, the weights of every role the stage writes are saved (one file per role) and
``done.json`` is written last, recording which file holds which role: that record is what
``model(role)`` reads later, so which stage produced which weights is kept with the run.

Under DeepSpeed every rank runs every stage (stages are deterministic); rank 0 writes. After a
training stage the built models are dropped and rebuilt from the finished stages the next time one
is asked for (a ZeRO engine has changed the modules in place).
"""

from __future__ import annotations

import logging

import torch

from mamba4net.core import distributed as dist
from mamba4net.core.context import OUTPUT_CACHE, RunContext, StageContext, weights_file
from mamba4net.core.errors import PluginError
from mamba4net.core.method import Stage
from mamba4net.core.seeding import stream_seed

# done.json keys that core writes; a stage's own record may not set them
RECORD_KEYS = ("stage", "writes", "sha256")

log = logging.getLogger("mamba4net")


def run_stage(run: RunContext, stage: Stage) -> None:
    if run.finished(stage.name) is not None:
        log.info("stage %s: already done", stage.name)
        return
    log.info("stage %s", stage.name)
    ctx = StageContext(run, stage)
    # a stage starts from the same random state however the process got here (a fresh run, a
    # resume, another stage before it): building models does not touch it (see build_netmodel)
    torch.manual_seed(stream_seed(run.seed, f"stage:{stage.name}"))
    info = stage.run(ctx) or {}
    if not isinstance(info, dict):
        raise PluginError(f"stage '{stage.name}' returned {type(info).__name__}; expected a dict or None")
    clash = [k for k in RECORD_KEYS if k in info]
    if clash:
        raise PluginError(f"stage '{stage.name}' returned {', '.join(clash)}: names core keeps in done.json")
    writes = () if info.get("skipped") else stage.writes  # a skipped stage changed nothing
    files = {weights_file(stage, role): ctx.role_weights(role) for role in writes}
    done = {**ctx.info, **info, "stage": stage.name, "writes": {role: weights_file(stage, role) for role in writes}}
    run.checkpoints(stage.name).mark_done(files, done)
    ctx.release()
    if dist.is_main():
        for cache in ctx.dir.glob(OUTPUT_CACHE.format(role="*")):
            cache.unlink(missing_ok=True)
            cache.with_suffix(".json").unlink(missing_ok=True)  # its checksum record
    if ctx.sharded or (stage.trains and run.cfg.runtime.engine == "deepspeed"):
        run.forget_models()


def run_stages(run: RunContext) -> None:
    for stage in run.method.stages:
        run_stage(run, stage)
