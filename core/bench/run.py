"""Measure a run's deployed models side by side and write ``bench.json``, ``bench.md`` and the plots.

:func:`measure_all` takes a :class:`~mamba4net.core.context.RunContext` and a plan of the roles to
measure (the teacher and every deployed student by default); every student is compared with the
teacher. The pipeline's benchmark and ``mamba4net bench`` (:mod:`mamba4net.core.bench.command`)
both use it.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path

import torch

from mamba4net.core.bench.flops import BOUND_CONVENTION, backbone_flops, flop_curve, flops_at
from mamba4net.core.bench.measure import memory_measurer, time_call
from mamba4net.core.bench.plan import BenchPlan, teacher_and_students
from mamba4net.core.bench.plots import plot_all
from mamba4net.core.bench.tables import bench_markdown
from mamba4net.core.bench.size import size_facts
from mamba4net.core.bench.sweep import KV_STEP, REENCODE, STEP, latency_sweep, series_name, throughput_sweep
from mamba4net.core.io import atomic_write_text, write_json
from mamba4net.core.progress import progress_bar
from mamba4net.core.runtime import decision_thread_count
from mamba4net.core.seeding import move

log = logging.getLogger("mamba4net")

BENCH_JSON, BENCH_MD = "bench.json", "bench.md"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _code_version() -> str | None:
    """``git describe``-like id of the code measured (commit, "+dirty" with local edits), if known."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) if commit else None


def setup_facts(device: torch.device, memory_method: str) -> dict:
    facts = {
        "device": str(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "decision_threads": decision_thread_count(),  # the streaming latency sweep's threads
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "memory_method": memory_method,
        "load_average_start": _load(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code_version": _code_version(),
    }
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


@torch.no_grad()
def _task_batch(model, batch: dict, plan: BenchPlan, device: torch.device) -> dict:
    """The whole model (encoder -> backbone -> head) on a real batch of the task."""
    model.eval()
    tokens = model.encoder(batch)  # (B, L, D)
    timing, _ = time_call(lambda: model(batch), warmup=plan.warmup, repeats=plan.repeats,
                          budget_s=plan.budget_s, device=device)
    n_tokens = tokens.shape[0] * tokens.shape[1]
    return {"forward_ms": round(timing.median_ms, 4), "tokens_per_s": round(n_tokens / (timing.median_ms / 1e3), 2),
            "batch_size": int(tokens.shape[0]), "tokens_per_sample": int(tokens.shape[1]), **timing.as_dict()}


def measure_all(ctx, plan: BenchPlan, *, sweep: bool = True, scratch: Path | None = None,
                source: dict | None = None, models: dict | None = None) -> dict:
    """Everything bench.json holds, for the roles of ``plan`` of the run context ``ctx``.

    ``scratch``: folder for the temporary files whose size is measured. ``models``: models to
    measure for some roles instead of ``ctx.model(role)`` (``bench --against``: a teacher built
    with other parameters)."""
    device = ctx.device
    memory, memory_method = memory_measurer(device)
    given = models or {}
    models = {role: (given[role] if role in given else ctx.model(role)).eval() for role in plan.roles}
    kinds = dict(zip(plan.roles, plan.kinds))
    bench: dict = {"version": 1, "source": source or {}, "setup": setup_facts(device, memory_method),
                   "plan": plan.as_dict(), "roles": kinds, "models": {}, "task_batch": {}, "throughput": [],
                   "latency": []}
    for role, model in models.items():
        facts = size_facts(model, scratch)
        facts.update(backbone=type(model.backbone).__name__, d_model=int(model.backbone.d_model))
        describe = getattr(model.backbone, "describe", None)
        if callable(describe):
            facts["describe"] = describe()
        bench["models"][role] = facts
    # speed is measured as deployed: LoRA folded into the teachers' weights (outputs unchanged)
    for role, model in models.items():
        if kinds[role] == "teacher" and callable(getattr(model.backbone, "merge_lora", None)):
            model.backbone.merge_lora()
            bench["setup"]["teacher_lora_merged"] = True

    split = ctx.cfg.evaluate.split
    data = ctx.task.data(split)
    batch = move(data.batch(torch.arange(min(plan.task_batch_size, len(data)))), device)
    for role, model in models.items():
        bench["task_batch"][role] = {"split": split, **_task_batch(model, batch, plan, device)}
        log.info("bench %s on a %s batch: %.2f ms per forward", role, split, bench["task_batch"][role]["forward_ms"])

    if sweep:
        backbones = {role: m.backbone for role, m in models.items()}
        curves = {role: backbone_flop_curve(role, b, device) for role, b in backbones.items()}
        bench["flop_count"] = {"convention": BOUND_CONVENTION,
                               "roles": {r: {k: v for k, v in c.items() if not k.startswith("_")} for r, c in curves.items()}}
        with progress_bar(plan.n_points, "bench", enabled=ctx.progress) as bar:
            bench["throughput"] = throughput_sweep(backbones, plan, device, memory, bar)
            bench["latency"] = latency_sweep({r: (kinds[r], b) for r, b in backbones.items()}, plan, device, bar)
        for row in bench["throughput"]:  # the FLOPs of every point, measured or skipped
            row["flops"] = _flops_of(curves[row["role"]], backbones[row["role"]], row, device)
    bench["setup"]["load_average_end"] = _load()
    bench["ratios"] = compute_ratios(bench)
    return bench


def backbone_flop_curve(role: str, backbone, device) -> dict:
    """A backbone's FLOPs as a polynomial in L (see :func:`~mamba4net.core.bench.flops.flop_curve`)."""
    curve = flop_curve(backbone, device)
    if not curve["exact"]:
        log.warning("bench %s: FLOPs are not a polynomial of degree 2 in L; counting at every length", role)
    return curve


def _flops_of(curve: dict, backbone, row: dict, device) -> int:
    if curve["exact"]:
        return flops_at(curve, row["seq_len"], row["batch_size"])
    return backbone_flops(backbone, row["seq_len"], row["batch_size"], device)


def _ratio(a, b) -> float | None:
    return round(a / b, 5) if a is not None and b not in (None, 0) else None


def student_ratios(bench: dict, teacher: str, student: str) -> dict:
    """Student over teacher (size, throughput) and teacher over student (latency, memory)."""
    t, s = bench["models"][teacher], bench["models"][student]
    tb = bench.get("task_batch", {})
    out = {
        "params_student_over_teacher": _ratio(s["params"], t["params"]),
        "params_student_over_teacher_without_unused": _ratio(s["params_without_unused"], t["params_without_unused"]),
        "size_student_over_teacher": _ratio(s["deploy_bytes"], t["deploy_bytes"]),
        "size_student_over_teacher_without_unused": _ratio(s["deploy_bytes_without_unused"],
                                                           t["deploy_bytes_without_unused"]),
        "task_batch_throughput_student_over_teacher": _ratio(
            tb.get(student, {}).get("tokens_per_s"), tb.get(teacher, {}).get("tokens_per_s")),
        "throughput": [],
        "flop_bound": [],
        "latency": [],
        "memory": [],
    }
    rows = {(r["role"], r["batch_size"], r["seq_len"]): r for r in bench.get("throughput", [])}
    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    flop_ratio = {}  # (batch, L) -> teacher FLOPs / student FLOPs, measured or not
    for (role, b, length), st in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        te = rows.get((teacher, b, length))
        if role == student and te is not None and st.get("flops") and te.get("flops") is not None:
            flop_ratio[(b, length)] = _ratio(te["flops"], st["flops"])
            out["flop_bound"].append({"batch_size": b, "seq_len": length, "teacher_flops": te["flops"],
                                      "student_flops": st["flops"], "flop_ratio": flop_ratio[(b, length)]})
    for (role, b, length), st in sorted(ok.items(), key=lambda kv: (kv[0][1], kv[0][2])):
        te = ok.get((teacher, b, length))
        if role != student or te is None:
            continue
        measured = _ratio(st["tokens_per_s"], te["tokens_per_s"])
        row = {"batch_size": b, "seq_len": length, "student_over_teacher": measured}
        if (b, length) in flop_ratio:  # the FLOP bound and the share of it measured
            row.update(flop_ratio=flop_ratio[(b, length)], efficiency=_ratio(measured, flop_ratio[(b, length)]))
        out["throughput"].append(row)
        if st.get("peak_bytes") and te.get("peak_bytes") is not None:
            out["memory"].append({"batch_size": b, "seq_len": length,
                                  "teacher_over_student": _ratio(te["peak_bytes"], st["peak_bytes"])})
    lat = {(r["series"], r["history"]): r for r in bench.get("latency", []) if r["status"] == "ok"}
    for h in sorted({h for _, h in lat}):
        st = lat.get((series_name(student, STEP), h))
        if st is None:
            continue
        row = {"history": h}
        for mode, key in ((KV_STEP, "teacher_kv_over_student"), (REENCODE, "teacher_reencode_over_student")):
            if (series_name(teacher, mode), h) in lat:
                row[key] = _ratio(lat[(series_name(teacher, mode), h)]["median_ms"], st["median_ms"])
        out["latency"].append(row)
    return out


def compute_ratios(bench: dict) -> dict:
    """Every student against the teacher (``by_student``); the first student's ratios also at the
    top level (the built-in method has one student)."""
    teacher, students = teacher_and_students(bench)
    if teacher is None or not students:
        return {}
    by_student = {s: student_ratios(bench, teacher, s) for s in students}
    return {**by_student[students[0]], "teacher": teacher, "student": students[0], "by_student": by_student}


def _headline_ratios(r: dict) -> dict:
    smallest = min((x["batch_size"] for x in r["throughput"]), default=None)
    return {
        **{k: v for k, v in r.items() if not isinstance(v, (list, dict))},
        "throughput_student_over_teacher": r["task_batch_throughput_student_over_teacher"],
        "throughput_student_over_teacher_by_seq_len": {
            str(x["seq_len"]): x["student_over_teacher"] for x in r["throughput"] if x["batch_size"] == smallest},
        "throughput_flop_ratio_by_seq_len": {
            str(x["seq_len"]): x.get("flop_ratio") for x in r["throughput"] if x["batch_size"] == smallest},
        "throughput_efficiency_by_seq_len": {
            str(x["seq_len"]): x.get("efficiency") for x in r["throughput"] if x["batch_size"] == smallest},
        "throughput_batch_size": smallest,
        "latency_teacher_kv_over_student_by_history": {
            str(x["history"]): x["teacher_kv_over_student"] for x in r["latency"] if "teacher_kv_over_student" in x},
    }


def headline(bench: dict) -> dict:
    """The ``efficiency`` section of results.json: per-role facts and the headline ratios (the first
    student's in ``ratios``, every student's in ``ratios_by_student``)."""
    out: dict = {}
    for role, facts in bench["models"].items():
        keep = {k: v for k, v in facts.items() if k not in ("unused_parameter_names", "describe")}
        keep["disk_bytes"] = facts["deploy_bytes"]
        tb = bench.get("task_batch", {}).get(role, {})
        keep.update({k: tb[k] for k in ("forward_ms", "tokens_per_s", "batch_size", "tokens_per_sample") if k in tb})
        out[role] = keep
    r = bench.get("ratios", {})
    if r:
        out["ratios"] = {**_headline_ratios(r), "teacher": r["teacher"], "student": r["student"]}
        out["ratios_by_student"] = {s: _headline_ratios(x) for s, x in r["by_student"].items()}
    out["roles"] = dict(bench.get("roles", {}))
    out["setup"] = {k: bench["setup"].get(k) for k in ("device", "torch_threads", "cpu", "load_average_start")}
    out["setup"]["repeats"] = bench["plan"]["repeats"]
    out["bench_file"] = BENCH_JSON
    return out


def write_bench(folder: Path, bench: dict) -> list[Path]:
    """bench.json, bench.md and the PNG plots into ``folder``; returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / BENCH_JSON, bench)
    plots = plot_all(bench, folder)
    atomic_write_text(folder / BENCH_MD, bench_markdown(bench, [p.name for p in plots]))
    return [folder / BENCH_JSON, folder / BENCH_MD, *plots]
