"""What the stages of one run share, and the one public face a stage sees.

:class:`RunContext` is the engine's: config, registry, run folder, device, the task and the models
built so far. :class:`MethodContext` is what a method's code may use (task, device, seed, the
method's params, ``model(role)``); :class:`StageContext` adds what one stage needs: its params,
``fit`` (the one trainer), loss objectives, frozen models, output caches and taps. Stages see only
these; nothing private is reached into.

``model(role)`` builds the role's model once (seeded by the run seed and the role's name) and loads
the weights of every finished stage that wrote it, in run order, as each stage's ``done.json``
records them: the model has the weights of the latest finished stage that wrote the role. No table
of roles and stages exists anywhere else.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from mamba4net.core.checkpoint import StageCheckpoints, load_into, verify_file
from mamba4net.core.config import NODE_KINDS, LoadedConfig
from mamba4net.core.errors import ConfigError, DataError, Mamba4netError, PluginError
from mamba4net.core.method import Method, Stage
from mamba4net.core.model import NetModel, build_netmodel
from mamba4net.core.objective import Objective, build_objective
from mamba4net.core.outputs import WithOutputs, load_or_compute, pop_outputs
from mamba4net.core.protocols import ModelOutput, TaskData
from mamba4net.core.runs import RunDir
from mamba4net.core.taps import forward_with_taps
from mamba4net.core.trainer import LossFn, Trainer

log = logging.getLogger("mamba4net")

OUTPUT_CACHE = "outputs-{role}.safetensors"


def weights_file(stage: Stage, role: str) -> str:
    """The file a finished stage keeps a role's weights in."""
    return "final.safetensors" if len(stage.writes) == 1 else f"final-{role}.safetensors"


@dataclass
class RunContext:
    loaded: LoadedConfig
    registry: Any
    run: RunDir  # where checkpoints are read from (the training run)
    out: RunDir  # where results/report go (the run itself, or an evaluation folder)
    resume: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    results: dict[str, Any] = field(default_factory=dict)
    _task: Any = None
    _models: dict[str, NetModel] = field(default_factory=dict)

    @property
    def cfg(self):
        return self.loaded.cfg

    @property
    def method(self) -> Method:
        return self.loaded.method

    @property
    def seed(self) -> int:
        return self.cfg.seed

    @property
    def progress(self) -> bool:
        return self.cfg.runtime.progress

    @property
    def task(self):
        if self._task is None:
            self._task = self.registry.get("tasks", self.cfg.task["name"]).build(self.loaded.params["task"])
        return self._task

    def checkpoints(self, stage: str) -> StageCheckpoints:
        return StageCheckpoints(self.run.stage_dir(stage))

    def finished(self, stage: str) -> dict | None:
        """The ``done.json`` of a stage of this run, None while it has not finished."""
        return self.checkpoints(stage).done()

    def model(self, role: str) -> NetModel:
        """The role's model, built once, with the weights of the latest finished stage that wrote it."""
        if role not in self._models:
            model = build_netmodel(self.registry, self.loaded, role, self.task, self.seed).to(self.device)
            for stage in self.method.writers(role):
                ckpt = self.checkpoints(stage.name)
                done = ckpt.done()
                if done is None or done.get("skipped"):
                    continue
                name = self._weights_file(ckpt, done, stage, role)
                load_into(model, ckpt.tensors(name), ckpt.dir / name)
            self._models[role] = model
        return self._models[role]

    @staticmethod
    def _weights_file(ckpt: StageCheckpoints, done: dict, stage: Stage, role: str) -> str:
        """The file of ``role``'s weights that a finished stage recorded in its done.json."""
        marker = ckpt.dir / "done.json"
        writes = done.get("writes")
        if writes is None and len(stage.writes) == 1 and (ckpt.dir / "final.safetensors").exists():
            log.warning("%s: no record of the roles it wrote (written before methods existed); reading "
                        "final.safetensors as role '%s'", marker, role)
            return "final.safetensors"
        name = writes.get(role) if isinstance(writes, dict) else None
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
            raise DataError(f"{marker}: records no weights file of role '{role}' (damaged?); delete the stage's "
                            f"folder {ckpt.dir} to run it again")
        return name

    def weights_from(self, role: str) -> str | None:
        """The latest finished stage that wrote ``role`` (None: its weights are as built)."""
        done = [s.name for s in self.method.writers(role) if not (self.finished(s.name) or {"skipped": 1}).get("skipped")]
        return done[-1] if done else None

    def weights_digest(self, role: str) -> str | None:
        """The sha256 of ``role``'s weights as the run holds them: the file of the latest finished
        stage that wrote it (None: as built, or a stage finished before checksums)."""
        stage = self.weights_from(role)
        if stage is None:
            return None
        ckpt = self.checkpoints(stage)
        return ckpt.checksum(self._weights_file(ckpt, ckpt.done(), self.method.stage(stage), role))

    def deployed(self, kind: str | None = None) -> list:
        """The method's deployed roles (of ``kind``) that this run produced: a role every one of
        whose writing stages finished with ``{"skipped": ...}`` (an early stop) is left out."""
        out = []
        for role in self.method.deployed(kind):
            writers = [self.finished(s.name) for s in self.method.writers(role.name)]
            if writers and all(d is not None and d.get("skipped") for d in writers):
                continue
            out.append(role)
        return out

    def forget_models(self) -> None:
        """Drop every built model; the next ``model(role)`` rebuilds it from the finished stages
        (after a DeepSpeed stage, whose engine changed the modules in place)."""
        self._models.clear()

    def require_finished(self, stages: Sequence[str]) -> None:
        """Each of ``stages`` has finished, and the weights it recorded exist and verify (checked
        before any work starts: a damaged file is named in one line, not after minutes of work)."""
        for stage in stages:
            if self.finished(stage) is None:
                raise Mamba4netError(f"{self.run.root}: stage '{stage}' has not finished in this run")
        self.verify_finished(stages)

    def verify_finished(self, stages: Sequence[str]) -> None:
        """Every weights file that the finished ones among ``stages`` recorded exists and matches
        its sha256 (a stage finished before checksums: exists). One DataError naming the first bad."""
        by_name = {s.name: s for s in self.method.stages}
        for stage in stages:
            ckpt = self.checkpoints(stage)
            done = ckpt.done()
            if done is None or done.get("skipped"):
                continue
            for role in by_name[stage].writes:
                name = self._weights_file(ckpt, done, by_name[stage], role)
                digest = ckpt.checksum(name)
                why = verify_file(ckpt.dir / name, digest) if digest else (
                    None if (ckpt.dir / name).exists() else f"{ckpt.dir / name}: missing")
                if why:
                    raise DataError(f"{why}; stage '{stage}' must be run again (delete {ckpt.dir})")


class MethodContext:
    """What a method's code sees of a run: the task, the device, the seed, the method's params,
    the config (read-only use) and ``model(role)``. Handed to ``Method.predictors``."""

    def __init__(self, run: RunContext):
        self._run = run

    @property
    def task(self):
        return self._run.task

    @property
    def device(self) -> torch.device:
        return self._run.device

    @property
    def seed(self) -> int:
        return self._run.seed

    @property
    def progress(self) -> bool:
        return self._run.progress

    @property
    def config(self):
        """The validated :class:`~mamba4net.core.schema.PipelineConfig` (do not modify it)."""
        return self._run.cfg

    @property
    def method_params(self):
        """The validated params of the ``method:`` node (None for a method without params)."""
        return self._run.loaded.params["method"]

    @property
    def method(self) -> Method:
        return self._run.method

    def model(self, role: str) -> NetModel:
        """The role's model, with the weights of the latest finished stage that wrote it."""
        return self._run.model(role)

    def finished(self, stage: str) -> dict | None:
        """The ``done.json`` of a stage (what its ``run`` returned, plus ``writes`` and timing)."""
        return self._run.finished(stage)

    def stage_dir(self, stage: str) -> Path:
        """``checkpoints/<stage>/`` of the run: where a stage keeps its own artifacts."""
        return self._run.run.stage_dir(stage)

    @property
    def out_dir(self) -> Path:
        """Where results, the report and its figures go (the run, or an evaluation folder)."""
        return self._run.out.root

    def deployed(self, kind: str | None = None) -> list:
        """The deployed roles this run produced (see :meth:`RunContext.deployed`)."""
        return self._run.deployed(kind)

    def build(self, key: str, **context: Any) -> Any:
        """The component of a top-level config node (``initializer``, ...), built with its
        validated params; ``context`` is what that kind's factory receives besides them."""
        node = getattr(self._run.cfg, key, None)
        if key not in NODE_KINDS or node is None:
            raise PluginError(f"method '{self.method.name}': no component node '{key}' in the config")
        return self._run.registry.get(NODE_KINDS[key], node["name"]).build(self._run.loaded.params[key], **context)


class StageContext(MethodContext):
    """What one stage sees: :class:`MethodContext` plus its params, ``fit``, objectives, frozen
    models, output caches and taps."""

    def __init__(self, run: RunContext, stage: Stage):
        super().__init__(run)
        self.stage = stage
        self._fitted = False
        self._exports: dict[str, dict[str, torch.Tensor]] = {}  # DeepSpeed: what fit gathered per role
        self._frozen: dict[str, tuple[list[bool], bool]] = {}  # role -> its requires_grad flags and mode
        self.sharded = False  # a model was handed to a ZeRO-3 inference engine (rebuilt after the stage)
        self.info: dict[str, Any] = {}  # kept in done.json ("final" metrics, "seconds" of fit)

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def params(self):
        """This stage's ``train.<name>`` section (a TrainParams), None for a stage that does not train."""
        return self._run.loaded.train_params(self.name) if self.stage.trains else None

    @property
    def dir(self) -> Path:
        return self.stage_dir(self.name)

    # -- models ---------------------------------------------------------------------------------
    def frozen(self, role: str) -> nn.Module:
        """The role's model for inference only: no gradients, eval mode, never in an optimizer.
        With ``runtime.shard_teacher`` (DeepSpeed) it runs as a ZeRO-3 inference engine."""
        model = self.model(role)
        if role not in self._frozen:  # put back when the stage ends: later stages may train it
            self._frozen[role] = ([p.requires_grad for p in model.parameters()], model.training)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        if self._run.cfg.runtime.shard_teacher:
            from mamba4net.core.ds_engine import inference_engine

            self.sharded = True
            return inference_engine(model, self._run.cfg.runtime)  # 1/N of its weights per rank
        return model

    def train_only(self, role: str, patterns: Sequence[str]) -> list[str]:
        """Within this stage, only the parameters of ``role``'s model whose names match a pattern
        train (``*`` matches one dot-separated part; a pattern also covers everything below it:
        ``backbone.layers.*.mixer``); parameters frozen as the model was built stay frozen. Put
        back when the stage ends. Returns the names that train; a pattern that matches nothing
        is a one-line error."""
        model = self.model(role)
        if role not in self._frozen:
            self._frozen[role] = ([p.requires_grad for p in model.parameters()], model.training)
        flags, _ = self._frozen[role]
        regexes = [(p, re.compile("^" + r"\.".join("[^.]+" if x == "*" else re.escape(x) for x in p.split("."))
                                  + r"(\..*)?$")) for p in patterns]
        chosen = []
        for (name, param), built in zip(model.named_parameters(), flags):
            hit = any(r.match(name) for _, r in regexes)
            param.requires_grad_(built and hit)
            if built and hit:
                chosen.append(name)
        unused = [p for p, r in regexes if not any(r.match(n) for n, _ in model.named_parameters())]
        if unused:
            raise ConfigError(f"train.{self.name}: pattern {unused[0]!r} matches no parameter of role '{role}'")
        return chosen

    def release(self) -> None:
        """At the end of the stage: the models it froze get their gradient flags and mode back."""
        for role, (flags, training) in self._frozen.items():
            model = self.model(role)
            for p, flag in zip(model.parameters(), flags):
                p.requires_grad_(flag)
            model.train(training)
        self._frozen.clear()

    def objective(self, student: nn.Module, teacher: nn.Module | None = None) -> Objective:
        """The weighted sum of this stage's loss terms (``train.<name>.losses``) for these widths."""
        return build_objective(self._run.registry, self._run.loaded, self.name, self.task,
                               int(student.d_model), None if teacher is None else int(teacher.d_model))

    @staticmethod
    def forward(model: nn.Module, batch, taps: Sequence[str] = ()) -> ModelOutput:
        """``model(batch)`` with the named taps collected into ``out.taps``."""
        return forward_with_taps(model, batch, taps)

    def cache_outputs(self, role: str, model: nn.Module, data: TaskData, *, hidden: bool = False,
                      taps: Sequence[str] = ()) -> TaskData:
        """``data`` whose batches carry ``model``'s outputs (computed once, kept in the stage folder
        until it finishes); :meth:`outputs` takes them out again."""
        path = self.dir / OUTPUT_CACHE.format(role=role)
        cache = load_or_compute(path, model, data, self.device, hidden, taps, self.progress)
        return WithOutputs(data, role, cache)

    @staticmethod
    def outputs(role: str, model: nn.Module, batch, *, taps: Sequence[str] = ()) -> ModelOutput:
        """``role``'s outputs for a batch: the cached ones when the batch carries them, else a
        forward pass of ``model`` without gradients."""
        cached = pop_outputs(batch, role)
        if cached is not None:
            return cached
        with torch.no_grad():
            return forward_with_taps(model, batch, taps)

    # -- training -------------------------------------------------------------------------------
    def fit(self, module: nn.Module | dict[str, nn.Module], loss_fn: LossFn, data: TaskData | None = None, *,
            valid: nn.Module | Callable[[], dict[str, float]] | None = None) -> dict[str, float]:
        """Train whatever in ``module`` has ``requires_grad`` on ``loss_fn(batch) -> (loss, terms)``
        over ``data`` (default: the task's training split) with this stage's params: checkpoints,
        exact ``--resume``, ``keep_best``, DeepSpeed, a one-line stop on a NaN loss. ``valid``: a
        model scored on the task's validation split (or a function returning scores). Returns the
        last logged values. Called at most once per stage."""
        if not self.stage.trains:
            raise PluginError(f"stage '{self.name}' calls fit but is declared with trains=False")
        if self._fitted:
            raise PluginError(f"stage '{self.name}' calls fit twice (one training run per stage)")
        self._fitted = True
        run, task = self._run, self.task
        if isinstance(module, dict):
            module = nn.ModuleDict(module)
        module = module.to(self.device)
        valid_fn = (lambda: task.evaluate(valid, "valid")) if isinstance(valid, nn.Module) else valid
        t0 = time.perf_counter()
        trainer = Trainer(
            self.name, module, loss_fn, data if data is not None else task.data("train"), self.params,
            run.run, self.seed, self.device, valid_fn=valid_fn, progress=self.progress, runtime=run.cfg.runtime,
            select=(f"valid_{task.metric}", task.higher_is_better) if valid_fn is not None else None,
        )
        final = trainer.fit(resume=run.resume)
        if run.cfg.runtime.engine == "deepspeed":  # whole fp32 tensors, gathered now (collective)
            trained = {id(p) for p in module.parameters()}
            for role in self.stage.writes:
                model = run.model(role)
                if any(id(p) in trained for p in model.parameters()):
                    self._exports[role] = {**trainer.export(model, trainable_only=_has_frozen(model)),
                                           **_buffers(model)}
        self.info.update(final=final, seconds=time.perf_counter() - t0)
        return final

    def role_weights(self, role: str) -> dict[str, torch.Tensor]:
        """What the finished stage keeps of ``role``: with some parameters frozen, the trainable
        ones and the buffers (the frozen ones come from how it was built or from an earlier
        stage); otherwise its whole state. Taken at the end of the stage (under DeepSpeed, what
        ``fit`` gathered)."""
        if role in self._exports:
            return self._exports[role]
        model = self.model(role)
        if not _has_frozen(model):
            return model.state_dict()
        return {**{n: p.detach() for n, p in model.named_parameters() if p.requires_grad}, **_buffers(model)}


def _has_frozen(model: nn.Module) -> bool:
    return any(not p.requires_grad for p in model.parameters())


def _buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """The persistent buffers of a model (running statistics, say), as its state dict names them."""
    names = {n for n, _ in model.named_buffers()}
    return {n: t.detach() for n, t in model.state_dict().items() if n in names}
