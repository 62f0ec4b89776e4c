"""Pipeline configuration: YAML (safe_load only) -> pydantic v2 models -> validated components.

Validation runs in two passes. The first checks the pipeline's own structure
(:class:`~mamba4net.core.schema.PipelineConfig`, ``extra="forbid"`` everywhere). The second looks
every component node ``{name: ..., **params}`` up in the registry and validates its params with the
model the plugin registered, builds the chosen method, checks every ``train.<stage>`` section
against that method's training stages (with each stage's own params model and default losses) and
validates each role's model (its node's params plus the role's overrides). Either pass reports the
first problem as one line: file, key path, line (where known) and what was expected.

Reading files (``extends:``, ``--set``, line numbers) is :mod:`mamba4net.core.yamlio`'s job. No torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from mamba4net.core.errors import ConfigError, PluginError
from mamba4net.core.method import Method
from mamba4net.core.schema import (
    BenchmarkParams, EvaluateParams, Node, PipelineConfig, RuntimeParams, TrainParams,
)
from mamba4net.core.yamlio import apply_override, deep_merge, load_with_extends, read_yaml
from mamba4net.registry.components import format_validation_error


__all__ = [  # validation, plus the schema and YAML helpers callers reach through this module
    "NODE_KINDS", "LoadedConfig", "build_method", "validate_data", "load_config", "apply_override", "deep_merge",
    "BenchmarkParams", "EvaluateParams", "PipelineConfig", "RuntimeParams", "TrainParams",
]

# top-level component nodes -> registry kind
NODE_KINDS = {
    "task": "tasks",
    "encoder": "encoders",
    "head": "heads",
    "teacher": "teachers",
    "student": "students",
    "initializer": "initializers",
    "method": "methods",
}


class LoadedConfig:
    """A validated pipeline config: the pydantic model, every component's validated params, the
    chosen method, its stages' training parameters and its roles' model parameters."""

    def __init__(self, cfg: PipelineConfig, params: dict[str, BaseModel | None], source: str,
                 method: Method, train: dict[str, TrainParams], role_params: dict[str, BaseModel | None]):
        self.cfg = cfg
        self.params = params  # dotted node path -> validated params model
        self.source = source
        self.method = method
        self.train = train  # training stage -> its validated section (method's stage order)
        self.role_params = role_params  # role -> validated params of the component that builds it

    def node_params(self, path: str) -> BaseModel | None:
        return self.params[path]

    def train_params(self, stage: str) -> TrainParams:
        try:
            return self.train[stage]
        except KeyError:
            raise ConfigError(f"{self.source}: method '{self.method.name}' has no training stage '{stage}'") from None

    def resolved(self) -> dict[str, Any]:
        """The fully resolved config (defaults filled in) as plain data, ready to write as YAML."""
        data = self.cfg.model_dump(mode="json")

        def filled(path: str, node: Node) -> Node:
            p = self.params.get(path)
            return {"name": node["name"], **(p.model_dump(mode="json") if p is not None else {})}

        for key in NODE_KINDS:
            if data.get(key) is not None:
                data[key] = filled(key, data[key])
        data["train"] = {}
        for stage, tp in self.train.items():
            section = tp.model_dump(mode="json")
            section["losses"] = [{"weight": n.get("weight", 1.0), **filled(f"train.{stage}.losses.{i}", n)}
                                 for i, n in enumerate(tp.losses)]
            data["train"][stage] = section
        if data["evaluate"]["baselines"] is not None:
            data["evaluate"]["baselines"] = [
                filled(f"evaluate.baselines.{i}", n) for i, n in enumerate(data["evaluate"]["baselines"])
            ]
        return data


class _Where:
    """``file: key.path (line N)`` for error messages (``(from --set)`` for overridden keys)."""

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


def _validate_node(component, raw: dict[str, Any], path: str, where: _Where) -> BaseModel | None:
    try:
        return component.validate_params(raw)
    except ValidationError as err:
        sub, msg = format_validation_error(err, prefix=path)[0]
        raise ConfigError(f"{where(sub)}: {msg}") from None
    except PluginError as err:
        raise ConfigError(f"{where(path)}: {err}") from None


def build_method(registry, node: Node, params: BaseModel | None, where=lambda p: p) -> Method:
    """The :class:`Method` a validated ``method:`` node names (its factory must return one)."""
    component = registry.get("methods", node["name"])
    try:
        method = component.build(params)
    except ValueError as exc:  # the method's own checks of its params, or of what it declares
        raise ConfigError(f"{where('method')}: {exc}") from None
    if not isinstance(method, Method):
        raise PluginError(f"plugin '{component.owner}': method '{node['name']}' factory returned "
                          f"{type(method).__name__}, expected mamba4net.core.method.Method")
    return method


def _train_sections(cfg: PipelineConfig, method: Method, where: _Where) -> dict[str, TrainParams]:
    """Every training stage of the method gets its section: the config's, else the defaults."""
    training = {s.name: s for s in method.training_stages}
    for stage in cfg.train:
        if stage not in training:
            known = ", ".join(training) or "none"
            raise ConfigError(f"{where('train.' + stage)}: method '{method.name}' has no training stage "
                              f"'{stage}'; its training stages: {known}")
    out: dict[str, TrainParams] = {}
    for name, stage in training.items():
        model = stage.params or TrainParams
        if not (isinstance(model, type) and issubclass(model, TrainParams)):
            raise PluginError(f"method '{method.name}': stage '{name}' params must subclass TrainParams")
        raw = dict(cfg.train.get(name, {}))
        raw.setdefault("losses", [dict(n) for n in stage.losses])
        try:
            out[name] = model.model_validate(raw)
        except ValidationError as err:
            sub, msg = format_validation_error(err, prefix=f"train.{name}")[0]
            raise ConfigError(f"{where(sub)}: {msg}") from None
    return out


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
        params[path] = _validate_node(component, raw, path, where)

    for key, kind in NODE_KINDS.items():
        node = getattr(cfg, key)
        if node is not None:
            check(key, kind, node)

    method = build_method(registry, cfg.method, params["method"], where)
    role_params: dict[str, BaseModel | None] = {}
    for role in method.roles:
        key = role.config_key
        node = getattr(cfg, key)
        if node is None:
            raise ConfigError(f"{where(key)}: method '{method.name}' builds its {role.kind} '{role.name}' from "
                              f"'{key}:', which this config does not have")
        own = {k: v for k, v in node.items() if k != "name"}
        try:
            overrides = role.overrides_for(own)
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"{where('method')}: role '{role.name}' of method '{method.name}': {exc}") from None
        if not overrides:
            role_params[role.name] = params[key]
            continue
        component = registry.get(NODE_KINDS[key], node["name"])
        raw = {**own, **overrides}
        try:
            role_params[role.name] = component.validate_params(raw)
        except ValidationError as err:
            sub, msg = format_validation_error(err, prefix=key)[0]
            raise ConfigError(f"{where('method')}: role '{role.name}' of method '{method.name}' overrides "
                              f"{sub}: {msg}") from None

    train = _train_sections(cfg, method, where)
    for stage, tp in train.items():
        for i, node in enumerate(tp.losses):
            weight = node.get("weight", 1.0)
            try:
                if isinstance(weight, bool):
                    raise ValueError
                node["weight"] = float(weight)  # YAML 1.1 reads 1e-2 as a string
            except (TypeError, ValueError):
                raise ConfigError(f"{where(f'train.{stage}.losses.{i}.weight')}: expected a number, got {weight!r}") from None
            check(f"train.{stage}.losses.{i}", "losses", node, drop=("weight",))
    task_name = cfg.task["name"]
    roles = {r.name for r in method.roles}
    for i, node in enumerate(cfg.evaluate.baselines or []):
        check(f"evaluate.baselines.{i}", "baselines", node, task=task_name)
        if node["name"] in roles:
            raise ConfigError(f"{where(f'evaluate.baselines.{i}.name')}: baseline '{node['name']}' has the name of a "
                              f"role of method '{method.name}'; results would mix them up")

    kernels = registry.kind("kernels")
    for op, name in cfg.runtime.kernels.items():
        if name not in kernels or kernels.get(name).meta.get("op") != op:
            known = ", ".join(c.name for c in kernels.where(op=op)) or "none"
            raise ConfigError(f"{where(f'runtime.kernels.{op}')}: unknown kernel '{name}' for op '{op}'; known: {known}")
    return LoadedConfig(cfg, params, source, method, train, role_params)


def load_config(path: str | Path, overrides: list[str] | None = None, registry=None) -> LoadedConfig:
    """Read, merge (``extends:``), override (``--set``) and validate a pipeline YAML file."""
    path = Path(path)
    data = load_with_extends(path)
    _, lines = read_yaml(path)
    overridden = set()
    for assignment in overrides or []:
        apply_override(data, assignment)
        overridden.add(assignment.split("=", 1)[0].strip())
    return validate_data(data, registry=registry, source=str(path), lines=lines, overridden=overridden)
