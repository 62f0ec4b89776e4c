"""What a distillation method declares: its roles and its ordered stages (the method contract).

A method (Mamba4Net, MOHAWK, progressive distillation, a user's own) is a plugin: its factory,
registered with ``mamba4net_register_methods``, returns a :class:`Method`. Core runs the stages in
order, skips those already finished (``checkpoints/<stage>/done.json``), saves the weights of the
roles each stage writes, and then evaluates, exports and benchmarks the deployed roles. It knows no
method, stage or role by name.

* A :class:`Role` is one model of the run: a teacher or a student, built from a top-level config
  node (``teacher:`` or ``student:``; several roles may share one node, each with its own
  parameter overrides), and deployed (evaluated, benchmarked, exported) or not.
* A :class:`Stage` is one step: its name is its checkpoint folder and its ``train.<name>`` section;
  ``run(ctx)`` does the work through the public :class:`~mamba4net.core.context.StageContext`;
  ``reads``/``writes`` name the roles it uses and changes. When it finishes, core saves the weights
  of every role in ``writes`` and records them in ``done.json``; ``ctx.model(role)`` later returns
  the weights of the latest finished stage that wrote that role.

This module imports no torch: ``mamba4net validate`` builds methods to check a config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")
ROLE_KINDS = ("teacher", "student")
# folders of checkpoints/ that core itself writes: no stage may take these names
RESERVED_STAGES = ("baselines", "export")
# keys of results.json's "efficiency" section beside the roles' own: no role may take these names
RESERVED_ROLES = ("ratios", "ratios_by_student", "roles", "setup", "bench_file")
DEFAULT_LOSSES: tuple[dict[str, Any], ...] = ({"name": "task"},)


@dataclass(frozen=True)
class Role:
    """One model of a run.

    ``node``: the top-level config key whose component builds it (``"teacher"`` or ``"student"``;
    default: the role's kind). ``overrides``: parameters merged over that node's own (e.g. a
    smaller ``d_model`` for the second of several students sharing ``student:``), or a function of
    the node's parameters (a dict, without ``name``) returning them (a shrink rule); they are
    validated with the node. ``deployed``: evaluated beside the baselines, benchmarked against the
    teacher and, for students, exported to ``checkpoints/export/<role>.safetensors``.
    """

    name: str
    kind: str
    node: str | None = None
    overrides: Mapping[str, Any] | Callable[[dict[str, Any]], Mapping[str, Any]] = field(default_factory=dict)
    deployed: bool = True

    def overrides_for(self, node_params: dict[str, Any]) -> dict[str, Any]:
        """The overrides of this role for a config node's parameters."""
        return dict(self.overrides(dict(node_params)) if callable(self.overrides) else self.overrides)

    @property
    def config_key(self) -> str:
        return self.node or self.kind


@dataclass(frozen=True)
class Stage:
    """One ordered step of a method.

    ``run(ctx)``: does the work (``ctx`` is a :class:`~mamba4net.core.context.StageContext`) and may
    return a JSON-ready dict that is kept in ``done.json``; ``{"skipped": reason}`` there says the
    stage decided not to change its roles (an early stop, a stage left out of an ablation): nothing
    of it is saved, and a role whose every writing stage was skipped is not evaluated, benchmarked
    nor exported. ``reads``/``writes``: role names.
    ``trains``: the stage trains through ``ctx.fit`` and has a ``train.<name>`` section, validated
    with ``params`` (default :class:`~mamba4net.core.schema.TrainParams`; a subclass adds the
    stage's own knobs) and whose ``losses`` default to ``losses``. ``taps``: per role, the tap
    patterns the stage reads itself (beyond what its loss terms declare); ``check_method`` checks
    that each matches a tap point of that role's model.
    """

    name: str
    run: Callable[[Any], dict | None]
    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    trains: bool = False
    params: type | None = None
    losses: tuple[Mapping[str, Any], ...] = DEFAULT_LOSSES
    taps: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class Method:
    """A method's roles and stages, and two optional functions of a
    :class:`~mamba4net.core.context.MethodContext`:

    * ``predictors(ctx) -> {name: predictor}``: extra predictors evaluated beside the roles (an
      ensemble of students, say): anything the task's ``evaluate`` accepts, typically a callable
      ``batch -> ModelOutput``; one with an ``extra_scores() -> dict`` method adds those scores
      (its FLOPs, say) to its row once evaluated;
    * ``summarize(ctx, results) -> dict``: after the evaluation, what the method adds to the
      results: ``{"models": {name: {key: value}}, "figures": [{"title", "file"}], "markdown": str}``
      (figures are PNGs written into ``ctx.out_dir``; the markdown becomes a report section).
    """

    name: str
    roles: tuple[Role, ...]
    stages: tuple[Stage, ...]
    predictors: Callable[[Any], dict[str, Any]] | None = None
    summarize: Callable[[Any, dict], dict | None] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", tuple(self.roles))
        object.__setattr__(self, "stages", tuple(self.stages))
        problems = self.problems()
        if problems:
            raise ValueError(f"method '{self.name}': {problems[0]}")

    def problems(self) -> list[str]:
        out: list[str] = []
        names = [r.name for r in self.roles]
        for role in self.roles:
            if not NAME_RE.match(role.name):
                out.append(f"role name {role.name!r} is not lowercase [a-z][a-z0-9_]*")
            if role.kind not in ROLE_KINDS:
                out.append(f"role '{role.name}' has kind {role.kind!r}; kinds: {', '.join(ROLE_KINDS)}")
            if role.name in RESERVED_ROLES:
                out.append(f"role name '{role.name}' is reserved (results.json uses it)")
            if role.config_key not in ROLE_KINDS:
                out.append(f"role '{role.name}' is built from config key {role.config_key!r}; "
                           f"keys: {', '.join(ROLE_KINDS)}")
        out += [f"role '{n}' is declared twice" for n in sorted({n for n in names if names.count(n) > 1})]
        if not self.roles:
            out.append("declares no roles")
        stage_names = [s.name for s in self.stages]
        for stage in self.stages:
            if not NAME_RE.match(stage.name):
                out.append(f"stage name {stage.name!r} is not lowercase [a-z][a-z0-9_]*")
            if stage.name in RESERVED_STAGES:
                out.append(f"stage name '{stage.name}' is reserved (core writes checkpoints/{stage.name}/)")
            if not callable(stage.run):
                out.append(f"stage '{stage.name}' has no callable run")
            if stage.trains and not stage.writes:
                out.append(f"stage '{stage.name}' trains but writes no role (its weights would not be kept)")
            for role in (*stage.reads, *stage.writes, *stage.taps):
                if role not in names:
                    out.append(f"stage '{stage.name}' names role '{role}', which the method does not declare")
        out += [f"stage '{n}' is declared twice" for n in sorted({n for n in stage_names if stage_names.count(n) > 1})]
        return out

    # -- lookups -----------------------------------------------------------------------------
    def role(self, name: str) -> Role:
        for role in self.roles:
            if role.name == name:
                return role
        raise KeyError(f"method '{self.name}' has no role '{name}'; roles: {', '.join(r.name for r in self.roles)}")

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"method '{self.name}' has no stage '{name}'; stages: {', '.join(self.stage_names)}")

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    @property
    def training_stages(self) -> list[Stage]:
        return [s for s in self.stages if s.trains]

    def writers(self, role: str) -> list[Stage]:
        """The stages that write ``role``, in run order."""
        return [s for s in self.stages if role in s.writes]

    def deployed(self, kind: str | None = None) -> list[Role]:
        return [r for r in self.roles if r.deployed and (kind is None or r.kind == kind)]

    def describe(self) -> str:
        return " -> ".join(self.stage_names)
