"""What a benchmark sweeps: from the config's ``benchmark`` section, the CLI's flags, or ``--full``.

The config's defaults are cheap (they also run as the pipeline's last stage); ``--full`` is the
long CPU sweep of the issue: batch 1..64, sequence length 256..8192, history 16..8192, where the
per-point time budget skips what would take too long.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mamba4net.core.errors import ConfigError

# the deployed roles (name -> kind) of the built-in method, for plans made without a method at hand
DEFAULT_ROLES = {"teacher": "teacher", "student": "student"}
FULL_SEQ_LENS = (256, 512, 1024, 2048, 4096, 8192)
FULL_BATCH_SIZES = (1, 4, 16, 64)
FULL_HISTORY_LENS = (16, 64, 256, 1024, 4096, 8192)


@dataclass(frozen=True)
class BenchPlan:
    seq_lens: list[int]  # throughput / memory sweep: tokens per sequence
    batch_sizes: list[int]
    history_lens: list[int]  # streaming latency sweep: tokens of history before a decision
    warmup: int  # untimed calls per point
    repeats: int  # timed calls per point (median reported)
    budget_s: float  # wall-time budget per point
    memory: bool  # peak memory of each throughput point
    task_batch_size: int  # whole model (encoder + backbone + head) on a real task batch
    roles: tuple[str, ...] = tuple(DEFAULT_ROLES)  # the models measured, by role name
    kinds: tuple[str, ...] = tuple(DEFAULT_ROLES.values())  # each role's kind ("teacher"/"student")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def n_points(self) -> int:
        # streaming latency: a student steps its state (PyTorch, onnxruntime); a teacher re-encodes
        # and steps its KV cache
        n_series = 2 * len(self.kinds)
        return len(self.seq_lens) * len(self.batch_sizes) * len(self.roles) + len(self.history_lens) * n_series


def deployed_roles(source) -> dict[str, str]:
    """name -> kind of the roles a benchmark measures, teachers first: the deployed roles of a
    method, or of a run context (those the run produced)."""
    roles = source.deployed("teacher") + source.deployed("student")
    return {r.name: r.kind for r in roles}


def teacher_and_students(bench: dict) -> tuple[str | None, list[str]]:
    """The measured teacher role (the first of kind teacher) and the student roles, in order."""
    kinds = bench.get("roles") or {r: r for r in bench["models"]}  # bench.json before roles were recorded
    teachers = [r for r, k in kinds.items() if k == "teacher" and r in bench["models"]]
    return (teachers[0] if teachers else None), [r for r, k in kinds.items() if k == "student" and r in bench["models"]]


def _sizes(values, what: str) -> list[int]:
    out = sorted({int(v) for v in values})
    if not out or out[0] <= 0:
        raise ConfigError(f"benchmark: {what} must be positive integers, got {list(values)}")
    return out


def make_plan(params, *, full: bool = False, seq_lens=None, batch_sizes=None, history_lens=None,
              repeats: int | None = None, budget_s: float | None = None, memory: bool | None = None,
              roles=None, known: dict[str, str] | None = None) -> BenchPlan:
    """``params``: the config's :class:`~mamba4net.core.config.BenchmarkParams`; explicit arguments
    (CLI flags) win over ``full``, which wins over the config. ``known``: the deployed roles of the
    run's method (name -> kind, in the method's order); ``roles`` picks some of them."""
    known = dict(DEFAULT_ROLES if known is None else known)
    roles = tuple(roles) if roles else tuple(known)
    unknown = [r for r in roles if r not in known]
    if unknown:
        raise ConfigError(f"bench: unknown model role {unknown[0]!r}; known roles: {', '.join(known)}")
    if repeats is not None and repeats <= 0:
        raise ConfigError(f"bench: --repeats must be positive, got {repeats}")
    if budget_s is not None and budget_s <= 0:
        raise ConfigError(f"bench: --budget must be positive seconds, got {budget_s}")
    return BenchPlan(
        seq_lens=_sizes(seq_lens or (FULL_SEQ_LENS if full else params.seq_lens), "sequence lengths"),
        batch_sizes=_sizes(batch_sizes or (FULL_BATCH_SIZES if full else params.batch_sizes), "batch sizes"),
        history_lens=_sizes(history_lens or (FULL_HISTORY_LENS if full else params.history_lens), "history lengths"),
        warmup=params.warmup,
        repeats=repeats or params.repeats,
        budget_s=float(budget_s or params.point_budget_s),
        memory=params.memory if memory is None else memory,
        task_batch_size=params.batch_size,
        roles=tuple(r for r in known if r in roles),
        kinds=tuple(known[r] for r in known if r in roles),
    )
