"""The pipeline config's own structure (pass 1 of validation): pydantic v2 models, ``extra="forbid"``.

Component nodes (``{name: <registered name>, **params}``) are only checked for shape here; their
params, the ``train.<stage>`` sections (which depend on the chosen method's stages) and the roles'
models are validated in pass 2 (:mod:`mamba4net.core.config`). No torch here.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger("mamba4net")

Node = dict[str, Any]  # a component node: {name: <registered name>, **params}


def check_node(value: Any) -> Node:
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
    # stages that learn from a frozen model (a teacher): run it once over the training split and
    # reuse its outputs (cheaper than a forward per step once training sees each sample more than once)
    cache_teacher: bool = False

    @field_validator("losses", mode="before")
    @classmethod
    def _loss_nodes(cls, v: Any) -> Any:
        return [check_node(x) for x in v] if isinstance(v, list) else v

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
        return [check_node(x) for x in v] if isinstance(v, list) else v


class BenchmarkParams(_Strict):
    """The efficiency benchmark (the ``benchmark`` stage and ``mamba4net bench``). Cheap defaults:
    ``mamba4net bench --full`` sweeps batch 1..64, length 256..8192, history 16..8192."""

    enabled: bool = True  # the pipeline measures its deployed models after evaluating them
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
    decision_threads: int = Field(1, gt=0)  # torch threads of a streaming decision (policies, bench)
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
            read_user_config(self.deepspeed_config)  # exists, is a JSON object, sets nothing we own
        return self


def _stage_sections(v: Any) -> Any:
    if not isinstance(v, dict):
        raise ValueError("expected a mapping of stage name -> training parameters")
    for stage, section in v.items():
        if not isinstance(section, dict):
            raise ValueError(f"train.{stage}: expected a mapping of training parameters, got {type(section).__name__}")
    return v


class PipelineConfig(_Strict):
    name: str = "run"
    seed: int = 0
    task: Node
    encoder: Node | None = None  # None: the task's default encoder
    head: Node | None = None  # None: the task's default head
    teacher: Node | None = None  # the component of every teacher role of the method
    student: Node | None = None  # the component of every student role (each may override params)
    initializer: Node = Field(default_factory=lambda: {"name": "random"})
    method: Node = Field(default_factory=lambda: {"name": "mamba4net"})
    # train.<stage>: checked against the method's stages (and each stage's params model) in pass 2
    train: dict[str, dict[str, Any]] = Field(default_factory=dict)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    benchmark: BenchmarkParams = Field(default_factory=BenchmarkParams)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)

    @field_validator("task", "encoder", "head", "teacher", "student", "initializer", "method", mode="before")
    @classmethod
    def _component_nodes(cls, v: Any) -> Any:
        return None if v is None else check_node(v)

    @field_validator("train", mode="before")
    @classmethod
    def _train_sections(cls, v: Any) -> Any:
        return _stage_sections(v)

    @model_validator(mode="before")
    @classmethod
    def _strategy_is_method(cls, data: Any) -> Any:
        return migrate_strategy(data, warn=True)


def migrate_strategy(data: Any, warn: bool = False) -> Any:
    """``strategy: {name, benchmark}`` (configs written before methods existed) as ``method: {name}``
    plus ``benchmark.enabled`` (an explicit ``benchmark.enabled`` wins); a one-line deprecation
    notice when ``warn``."""
    if not isinstance(data, dict) or "strategy" not in data:
        return data
    if "method" in data:
        raise ValueError("give 'method:' only ('strategy:' is its deprecated name)")
    data = dict(data)
    node = dict(check_node(data.pop("strategy")))
    method = {"name": node.pop("name")}
    if "benchmark" in node:
        enabled = node.pop("benchmark")
        bench = data.get("benchmark") or {}
        if isinstance(bench, dict) and "enabled" not in bench:
            data["benchmark"] = {**bench, "enabled": enabled}
    method.update(node)
    data["method"] = method
    if warn:
        log.warning("config: 'strategy:' is deprecated, read as method: {name: %s}%s", method["name"],
                    " and benchmark.enabled" if "enabled" in (data.get("benchmark") or {}) else "")
    return data


OWNED_DEEPSPEED_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps",
                        "gradient_clipping", "optimizer", "scheduler")


def read_user_config(path: str) -> dict[str, Any]:
    """A user's DeepSpeed JSON file (``runtime.deepspeed_config``) as a dict; ``ValueError`` (one
    line) when unusable or when it sets what the stage's ``train`` section owns."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(f"DeepSpeed config file not found: {file}")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(data).__name__}")
    owned = [k for k in OWNED_DEEPSPEED_KEYS if k in data]
    if owned:
        raise ValueError(f"{file}: sets {', '.join(owned)}, which come from train.<stage> "
                         "(batch_size, grad_accum, clip_norm, lr schedule); remove them")
    return data
