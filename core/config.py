"""Pipeline configuration: YAML (safe_load only) -> pydantic v2 models -> validated components.

Validation runs in two passes. The first checks the pipeline's own structure (``PipelineConfig``,
``extra="forbid"`` everywhere). The second looks every component node ``{name: ..., **params}`` up in
the registry and validates its params with the model the plugin registered. Either pass reports the
first problem as one line: file, key path, line (where known) and what was expected.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mamba4net.core.errors import ConfigError, PluginError
from mamba4net.registry.components import format_validation_error

Node = dict[str, Any]  # a component node: {name: <registered name>, **params}


def _check_node(value: Any) -> Node:
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError("expected a component node {name: <registered name>, ...params}")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainParams(_Strict):
    """One training stage. Every stage runs through the same trainer."""

    steps: int = Field(200, gt=0)
    batch_size: int = Field(32, gt=0)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(20, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)  # cosine decays to lr * min_lr_ratio
    grad_accum: int = Field(1, gt=0)  # micro-batches per optimizer step (each of batch_size)
    clip_norm: float | None = Field(1.0, gt=0)
    log_every: int = Field(10, gt=0)
    checkpoint_every: int = Field(50, gt=0)
    eval_every: int = Field(0, ge=0)  # validation loss every N steps; 0 = only at the end
    # end the stage with the weights of its best validation (by the task's metric), not the last
    keep_best: bool = False
    losses: list[Node] = Field(default_factory=lambda: [{"name": "task"}])
    # distillation only: run the frozen teacher once over the training split and reuse its outputs
    # (cheaper than a teacher forward per step once training sees each sample more than once)
    cache_teacher: bool = False

    @field_validator("losses", mode="before")
    @classmethod
    def _loss_nodes(cls, v: Any) -> Any:
        return [_check_node(x) for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _warmup_fits(self) -> "TrainParams":
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})")
        return self


class EvaluateParams(_Strict):
    split: Literal["train", "valid", "test"] = "test"
    batch_size: int = Field(512, gt=0)
    baselines: list[Node] | None = None  # None: the task's default baselines

    @field_validator("baselines", mode="before")
    @classmethod
    def _baseline_nodes(cls, v: Any) -> Any:
        return [_check_node(x) for x in v] if isinstance(v, list) else v


class BenchmarkParams(_Strict):
    """The efficiency benchmark (the ``benchmark`` stage and ``mamba4net bench``). Cheap defaults:
    ``mamba4net bench --full`` sweeps batch 1..64, length 256..8192, history 16..8192."""

    batch_size: int = Field(1, gt=0)  # real task batch for the whole-model timing
    repeats: int = Field(5, gt=0)  # timed calls per point (median reported)
    warmup: int = Field(1, ge=0)  # untimed calls per point
    sweep: bool = True  # backbone sweeps on synthetic inputs_embeds (throughput, latency, memory)
    seq_lens: list[int] = Field(default_factory=lambda: [256, 1024], min_length=1)
    batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1)
    history_lens: list[int] = Field(default_factory=lambda: [16, 64, 256, 1024], min_length=1)
    point_budget_s: float = Field(30.0, gt=0)  # a point that would take longer is skipped (and said so)
    memory: bool = True  # peak memory per throughput point

    @field_validator("seq_lens", "batch_sizes", "history_lens")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError(f"expected positive integers, got {v}")
        return v


class RuntimeParams(_Strict):
    device: str = Field("cpu", pattern=r"^(cpu|auto|cuda(:\d+)?|mps)$")  # cpu, cuda, cuda:1, mps, auto
    threads: int | None = Field(None, gt=0)  # torch intra-op threads; None = torch's default
    kernels: dict[str, str] = Field(default_factory=dict)  # {op: implementation name}
    progress: bool = True
    # training engine: plain PyTorch, or DeepSpeed (ZeRO 0-3; several processes with --nproc)
    engine: Literal["torch", "deepspeed"] = "torch"
    zero_stage: int = Field(2, ge=0, le=3)  # deepspeed only
    offload: Literal["none", "cpu"] = "none"  # deepspeed: optimizer state (ZeRO 3: also params) on CPU
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # deepspeed mixed precision
    shard_teacher: bool = False  # deepspeed: the frozen teacher as a ZeRO-3 inference engine
    deepspeed_config: str | None = None  # a DeepSpeed JSON merged over the generated config

    @model_validator(mode="after")
    def _deepspeed_only(self) -> "RuntimeParams":
        if self.engine == "torch":
            set_ = [k for k, default in (("zero_stage", 2), ("offload", "none"), ("precision", "fp32"),
                                         ("shard_teacher", False), ("deepspeed_config", None))
                    if getattr(self, k) != default]
            if set_:
                raise ValueError(f"{', '.join(set_)} only apply to engine: deepspeed (engine is torch)")
        if self.offload != "none" and self.zero_stage == 0:
            raise ValueError("offload needs zero_stage 1, 2 or 3")
        if self.deepspeed_config is not None:
            from mamba4net.core.ds_engine import read_user_config

            read_user_config(self.deepspeed_config)  # exists, is a JSON object, sets nothing we own
        return self


# the losses a training stage uses when its section names none
DEFAULT_LOSSES: dict[str, list[Node]] = {
    "adapt_teacher": [{"name": "task"}],
    "distill": [{"name": "task"}, {"name": "mse_to_teacher"}],
}


def _default_train() -> dict[str, TrainParams]:
    return {stage: TrainParams(losses=losses) for stage, losses in DEFAULT_LOSSES.items()}


class PipelineConfig(_Strict):
    name: str = "run"
    seed: int = 0
    task: Node
    encoder: Node | None = None  # None: the task's default encoder
    head: Node | None = None  # None: the task's default head
    teacher: Node
    student: Node
    initializer: Node = Field(default_factory=lambda: {"name": "random"})
    strategy: Node = Field(default_factory=lambda: {"name": "mamba4net"})
    train: dict[str, TrainParams] = Field(default_factory=_default_train)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    benchmark: BenchmarkParams = Field(default_factory=BenchmarkParams)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)

    @field_validator(
        "task", "encoder", "head", "teacher", "student", "initializer", "strategy", mode="before"
    )
    @classmethod
    def _component_nodes(cls, v: Any) -> Any:
        return None if v is None else _check_node(v)

    @model_validator(mode="before")
    @classmethod
    def _stage_default_losses(cls, data: Any) -> Any:
        train = data.get("train") if isinstance(data, dict) else None
        if isinstance(train, dict):
            data = {**data, "train": {
                stage: ({**tp, "losses": DEFAULT_LOSSES[stage]}
                        if isinstance(tp, dict) and "losses" not in tp and stage in DEFAULT_LOSSES else tp)
                for stage, tp in train.items()
            }}
        return data

    @model_validator(mode="after")
    def _fill_default_stages(self) -> "PipelineConfig":
        for stage, params in _default_train().items():
            self.train.setdefault(stage, params)
        return self

    def train_params(self, stage: str) -> TrainParams:
        return self.train.get(stage) or TrainParams()


# ---------------------------------------------------------------------------------------------
# YAML: reading, line numbers, extends, --set
# ---------------------------------------------------------------------------------------------


def _line_map(text: str) -> dict[tuple[str, ...], int]:
    """Key path -> 1-based line, from the YAML node graph (composition constructs no objects)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return {}
    lines: dict[tuple[str, ...], int] = {}

    def walk(node, path):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                p = path + (str(key.value),)
                lines[p] = key.start_mark.line + 1
                walk(value, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                p = path + (str(i),)
                lines[p] = item.start_mark.line + 1
                walk(item, p)

    if root is not None:
        walk(root, ())
    return lines


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data, _line_map(text)


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` wins; mappings merge recursively; lists, scalars and renamed components are replaced whole."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        prev = out.get(key)
        # merge mappings, unless the override names another component: its params start afresh
        if isinstance(value, dict) and isinstance(prev, dict) and value.get("name", prev.get("name")) == prev.get("name"):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _load_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in seen + (path,))
        raise ConfigError(f"{path}: extends: cycle ({chain})")
    data, _ = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a path to another YAML file")
    base_path = (path.parent / parent) if not Path(parent).is_absolute() else Path(parent)
    return deep_merge(_load_with_extends(base_path, seen + (path,)), data)


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML; list items addressed by index)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment}: expected key.path=value")
    key, raw = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"--set {assignment}: empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"--set {assignment}: value is not valid YAML") from None
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {key}: '{part}' is not an index of the list at {'.'.join(parts[:i])}")
            node = node[int(part)]
        else:
            if not isinstance(node.get(part, {}), (dict, list)):
                raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is not a mapping")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {key}: '{last}' is not an index of the list")
        node[int(last)] = value
    else:
        node[last] = value


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------

# top-level component nodes -> registry kind
NODE_KINDS = {
    "task": "tasks",
    "encoder": "encoders",
    "head": "heads",
    "teacher": "teachers",
    "student": "students",
    "initializer": "initializers",
    "strategy": "strategies",
}


class LoadedConfig:
    """A validated pipeline config: the pydantic model plus every component's validated params."""

    def __init__(self, cfg: PipelineConfig, params: dict[str, BaseModel | None], source: str):
        self.cfg = cfg
        self.params = params  # dotted node path -> validated params model
        self.source = source

    def node_params(self, path: str) -> BaseModel | None:
        return self.params[path]

    def resolved(self) -> dict[str, Any]:
        """The fully resolved config (defaults filled in) as plain data, ready to write as YAML."""
        data = self.cfg.model_dump(mode="json")

        def filled(path: str, node: Node) -> Node:
            p = self.params.get(path)
            return {"name": node["name"], **(p.model_dump(mode="json") if p is not None else {})}

        for key in NODE_KINDS:
            if data.get(key) is not None:
                data[key] = filled(key, data[key])
        for stage, tp in data["train"].items():
            tp["losses"] = [
                {"weight": n.get("weight", 1.0), **filled(f"train.{stage}.losses.{i}", n)}
                for i, n in enumerate(tp["losses"])
            ]
        if data["evaluate"]["baselines"] is not None:
            data["evaluate"]["baselines"] = [
                filled(f"evaluate.baselines.{i}", n) for i, n in enumerate(data["evaluate"]["baselines"])
            ]
        return data


class _Where:
    def __init__(self, source: str, lines: dict[tuple[str, ...], int], overridden: set[str]):
        self.source, self.lines, self.overridden = source, lines, overridden

    def __call__(self, path: str) -> str:
        parts = tuple(p for p in path.split(".") if p)
        if any(path == o or path.startswith(o + ".") or o.startswith(path + ".") for o in self.overridden):
            return f"{self.source}: {path} (from --set)"
        while parts:
            if parts in self.lines:
                return f"{self.source}: {path} (line {self.lines[parts]})"
            parts = parts[:-1]
        return f"{self.source}: {path}"


def validate_data(
    data: dict[str, Any],
    registry=None,
    source: str = "<config>",
    lines: dict[tuple[str, ...], int] | None = None,
    overridden: set[str] | None = None,
) -> LoadedConfig:
    """Validate raw config data in both passes; raise :class:`ConfigError` on the first problem."""
    from mamba4net.registry import default_registry

    registry = registry or default_registry()
    where = _Where(source, lines or {}, overridden or set())
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as err:
        path, msg = format_validation_error(err)[0]
        raise ConfigError(f"{where(path)}: {msg}") from None

    params: dict[str, BaseModel | None] = {}

    def check(path: str, kind: str, node: Node, drop: tuple[str, ...] = (), **meta) -> None:
        reg = registry.kind(kind)
        name = node["name"]
        if name not in reg:
            raise ConfigError(f"{where(path + '.name')}: {reg.unknown_message(name)}")
        component = reg.get(name)
        for key, value in meta.items():
            if component.meta.get(key) != value:
                raise ConfigError(
                    f"{where(path + '.name')}: {reg.noun} '{name}' belongs to {key} "
                    f"'{component.meta.get(key)}', not '{value}'"
                )
        raw = {k: v for k, v in node.items() if k != "name" and k not in drop}
        try:
            params[path] = component.validate_params(raw)
        except ValidationError as err:
            sub, msg = format_validation_error(err, prefix=path)[0]
            raise ConfigError(f"{where(sub)}: {msg}") from None
        except PluginError as err:
            raise ConfigError(f"{where(path)}: {err}") from None

    for key, kind in NODE_KINDS.items():
        node = getattr(cfg, key)
        if node is not None:
            check(key, kind, node)
    task_name = cfg.task["name"]
    for stage, tp in cfg.train.items():
        for i, node in enumerate(tp.losses):
            weight = node.get("weight", 1.0)
            try:
                if isinstance(weight, bool):
                    raise ValueError
                node["weight"] = float(weight)  # YAML 1.1 reads 1e-2 as a string
            except (TypeError, ValueError):
                raise ConfigError(f"{where(f'train.{stage}.losses.{i}.weight')}: expected a number, got {weight!r}") from None
            check(f"train.{stage}.losses.{i}", "losses", node, drop=("weight",))
    for i, node in enumerate(cfg.evaluate.baselines or []):
        check(f"evaluate.baselines.{i}", "baselines", node, task=task_name)

    kernels = registry.kind("kernels")
    for op, name in cfg.runtime.kernels.items():
        if name not in kernels or kernels.get(name).meta.get("op") != op:
            known = ", ".join(c.name for c in kernels.where(op=op)) or "none"
            raise ConfigError(f"{where(f'runtime.kernels.{op}')}: unknown kernel '{name}' for op '{op}'; known: {known}")

    from mamba4net.core.stages import STAGES

    stages = registry.get("strategies", cfg.strategy["name"]).build(params["strategy"])
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(
            f"{where('strategy')}: strategy '{cfg.strategy['name']}' asks for unknown stages "
            f"{unknown}; known: {', '.join(STAGES)}"
        )
    for stage in cfg.train:
        if stage not in STAGES or not STAGES[stage].trains:
            trainable = [s for s, st in STAGES.items() if st.trains]
            raise ConfigError(f"{where('train.' + stage)}: not a training stage; known: {', '.join(trainable)}")
    return LoadedConfig(cfg, params, source)


def load_config(path: str | Path, overrides: list[str] | None = None, registry=None) -> LoadedConfig:
    """Read, merge (``extends:``), override (``--set``) and validate a pipeline YAML file."""
    path = Path(path)
    data = _load_with_extends(path)
    _, lines = _read_yaml(path)
    overridden = set()
    for assignment in overrides or []:
        apply_override(data, assignment)
        overridden.add(assignment.split("=", 1)[0].strip())
    return validate_data(data, registry=registry, source=str(path), lines=lines, overridden=overridden)
