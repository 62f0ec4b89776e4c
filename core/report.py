"""A run's report: Markdown tables of results.json plus PNG plots of training and results.

Every model of results.json (baselines, the method's deployed roles, its extra predictors) is a row;
every student is compared with the teacher. A model whose metric is missing or not finite is shown
last, never breaking a table or a plot.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mamba4net.core.bench.plots import plot_all
from mamba4net.core.bench.tables import latency_table, setup_line, size_table, skipped_list, throughput_table
from mamba4net.core.errors import DataError, Mamba4netError
from mamba4net.core.io import atomic_write_text, read_json
from mamba4net.core.lock import run_lock
from mamba4net.core.plotting import pyplot, save_figure
from mamba4net.core.runs import RunDir

KIND_COLORS = {"teacher": "tab:red", "student": "tab:green", "predictor": "tab:blue", "baseline": "tab:gray"}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _scored(results: dict, name: str) -> bool:
    """Whether a model has a finite metric (results.json writes inf as +-1e308: its flag says so)."""
    return _finite(results["models"][name].get(results["metric"])) and name not in (results.get("non_finite") or [])


def _metric_cell(results: dict, name: str) -> str:
    scores, metric = results["models"][name], results["metric"]
    if _scored(results, name):
        half = scores.get(f"{metric}_ci95")
        return _fmt(scores[metric]) + (f" ± {_fmt(half)}" if _finite(half) and half > 0 else "")
    return "**not finite**" if metric in scores else ""


def ranked(results: dict) -> list[str]:
    """Model names best first by the metric; those without a finite value last, in their order."""
    metric, models = results["metric"], results.get("models", {})
    good = [m for m in models if _scored(results, m)]
    good.sort(key=lambda m: models[m][metric], reverse=results["higher_is_better"])
    return good + [m for m in models if m not in good]


def kinds(results: dict) -> dict[str, str]:
    """Model name -> teacher / student / predictor / baseline (older results: by name)."""
    known = results.get("kinds") or {}
    return {m: known.get(m, m if m in ("teacher", "student") else "baseline") for m in results.get("models", {})}


def results_table(results: dict) -> str:
    metric, models = results["metric"], results.get("models", {})
    if not models:
        return "_no models evaluated_\n"
    order = ranked(results)
    keys = [metric] + sorted({k for m in models.values() for k in m} - {metric, f"{metric}_ci95"})
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name in order:
        cells = [_metric_cell(results, name)] + [_fmt(models[name].get(k, "")) for k in keys[1:]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def efficiency_table(eff: dict) -> str:
    """The ``efficiency`` section of results.json: size and whole-model speed on a task batch, every
    student against the teacher."""
    ratios = eff.get("ratios_by_student") or ({eff["ratios"].get("student", "student"): eff["ratios"]}
                                              if eff.get("ratios") else {})
    teacher = (eff.get("ratios") or {}).get("teacher", "teacher")
    students = [s for s in ratios if s in eff]
    if teacher not in eff or not students:
        return "_not measured_\n"
    roles = [teacher] + students
    t = eff[teacher]
    overs = [f"{s} / {teacher}" for s in students]
    rows = [("parameters", [f"{eff[r]['params']:,}" for r in roles], "params_student_over_teacher"),
            ("deployed size (safetensors)", [_mib(eff[r]["disk_bytes"]) for r in roles], "size_student_over_teacher")]
    if "deploy_bytes_without_unused" in t:
        rows.append(("deployed size without unused parameters",
                     [_mib(eff[r]["deploy_bytes_without_unused"]) for r in roles],
                     "size_student_over_teacher_without_unused"))
    if all("forward_ms" in eff[r] for r in roles):
        rows += [("forward ms / task batch", [eff[r]["forward_ms"] for r in roles], None),
                 ("tokens / s on the task batch", [eff[r]["tokens_per_s"] for r in roles],
                  "throughput_student_over_teacher")]
    lines = ["| | " + " | ".join(roles + overs) + " |", "|---" * (len(roles) + len(overs) + 1) + "|"]
    for label, values, key in rows:
        cells = [str(v) for v in values] + [_fmt(ratios[s].get(key)) if key and ratios[s].get(key) is not None
                                            else "" for s in students]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    setup = eff.get("setup", {})
    extra = "\n"
    if t.get("lora_bytes") is not None:
        extra += f"Teacher LoRA adapters alone: {_mib(t['lora_bytes'])}. "
    if t.get("adapter_bytes") is not None:
        extra += f"LoRA + encoder + head of the teacher: {_mib(t['adapter_bytes'])}. "
    if "batch_size" in t:
        extra += f"Task batch {t['batch_size']} x {t['tokens_per_sample']} tokens. "
    extra += f"Device {setup.get('device')}, {setup.get('torch_threads')} torch threads, median of {setup.get('repeats')}.\n"
    return "\n".join(lines) + "\n" + extra


def comparison_table(results: dict) -> str:
    """Like the paper's Fig. 3/4: task metric per model; for each student, size and throughput
    relative to the teacher (throughput of the backbones at each swept length, smallest batch)."""
    metric = results["metric"]
    eff = results.get("efficiency", {})
    by_student = eff.get("ratios_by_student") or ({eff["ratios"].get("student", "student"): eff["ratios"]}
                                                  if eff.get("ratios") else {})
    teacher = (eff.get("ratios") or {}).get("teacher") or next(
        (m for m, k in kinds(results).items() if k == "teacher"), None)
    lens = sorted({n for r in by_student.values() for n in r.get("throughput_student_over_teacher_by_seq_len", {})},
                  key=int)
    head = [metric, "size / teacher"] + [f"throughput / teacher, L={n}" for n in lens]
    lines = ["| model | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for name in ranked(results):
        cells = [_metric_cell(results, name)]
        if name == teacher:
            cells += ["1"] + ["1x"] * len(lens)
        elif name in by_student:
            r = by_student[name]
            size = r.get("size_student_over_teacher")
            by_len = r.get("throughput_student_over_teacher_by_seq_len", {})
            cells += [f"{size:.4f}" if size is not None else ""] + [
                f"{by_len[n]:.3g}x" if by_len.get(n) is not None else "" for n in lens]
        else:
            cells += [""] * (1 + len(lens))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = ""
    if lens:
        batch = next(iter(by_student.values())).get("throughput_batch_size")
        note = (f"\nThroughput: input tokens per second of the backbones, batch {batch}; "
                "size: deployed safetensors bytes (the teacher including its LLM weights).\n")
    return "\n".join(lines) + "\n" + note


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc = (acc + [v])[-window:]
        out.append(sum(acc) / len(acc))
    return out


def plot_training(metrics: list[dict], path: Path) -> bool:
    """Per stage: loss terms (raw, faint; moving average, bold) and validation metrics."""
    plt = pyplot()

    stages = list(dict.fromkeys(m["stage"] for m in metrics if "loss" in m))
    if not stages:
        return False
    valid_keys = sorted({k for m in metrics for k in m
                         if k.startswith("valid_") and k != "valid_n_samples" and not k.endswith("_ci95")})
    rows = 2 if valid_keys else 1
    fig, axes = plt.subplots(rows, len(stages), figsize=(5 * len(stages), 3.2 * rows), squeeze=False)
    for col, stage in enumerate(stages):
        train = [m for m in metrics if m["stage"] == stage and "loss" in m]
        skip = ("stage", "step", "time", "lr", "grad_norm", "sec_per_step")
        keys = [k for k in train[-1] if k not in skip and not (k == "loss" and len(train[-1]) <= 8)]
        ax = axes[0][col]
        for k in keys:
            steps = [m["step"] for m in train if k in m]
            values = [m[k] for m in train if k in m]
            line, = ax.plot(steps, values, alpha=0.25)
            ax.plot(steps, _smooth(values, 5), color=line.get_color(), label=k)
        ax.set_title(f"{stage}: training loss")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        if rows == 2:
            ax = axes[1][col]
            valid = [m for m in metrics if m["stage"] == stage and any(k in m for k in valid_keys)]
            for k in valid_keys:
                pts = [(m["step"], m[k]) for m in valid if k in m]
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=k)
            ax.set_title(f"{stage}: validation")
            ax.set_xlabel("step")
            if valid:
                ax.legend(fontsize=7)
        else:
            ax.set_xlabel("step")
    save_figure(fig, path)
    return True


def plot_models(results: dict, path: Path) -> bool:
    plt = pyplot()

    metric, models = results["metric"], results.get("models", {})
    names = ranked(results)
    values = [models[n][metric] if _scored(results, n) else 0.0 for n in names]
    if not any(_scored(results, n) for n in names):
        return False
    kind = kinds(results)
    colors = [KIND_COLORS.get(kind[n], "tab:gray") for n in names]
    fig, ax = plt.subplots(figsize=(6, max(3.5, 0.35 * len(names) + 1)))
    ax.barh(names, values, color=colors)
    for i, n in enumerate(names):
        if not _scored(results, n) and metric in models[n]:  # ranked() put it last
            ax.text(0, i, " not finite", va="center", color="tab:red")
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} ({'higher' if results['higher_is_better'] else 'lower'} is better)")
    ax.set_title(f"{results['task']} on {results['split']}")
    save_figure(fig, path)
    return True


def _bench_section(folder: Path, replot: bool) -> list[str]:
    """Tables and plots of ``bench.json`` in ``folder`` (plots drawn from the JSON; with
    ``replot=False`` those already there are kept)."""
    bench = read_json(folder / "bench.json", missing_ok=True)
    if bench is None:
        return []
    plots = plot_all(bench, folder, keep_existing=not replot)
    parts = ["\n## Efficiency sweeps (bench.json)\n", setup_line(bench), "\n### Size\n", size_table(bench),
             "\n### Backbone throughput\n", throughput_table(bench),
             "\n### Streaming latency per decision\n", latency_table(bench)]
    skipped = skipped_list(bench)
    if skipped:
        parts += ["\nSkipped points:\n", skipped]
    parts += [f"\n![{p.name}]({p.name})\n" for p in plots]
    return parts


def write_report(out: RunDir, results: dict, metrics: list[dict], title: str, replot: bool = False) -> Path:
    parts = [f"# {title}\n", f"Task `{results['task']}`, split `{results['split']}`, metric "
             f"`{results['metric']}` ({'higher' if results['higher_is_better'] else 'lower'} is better).\n",
             "## Task quality\n", results_table(results)]
    if plot_models(results, out.root / "models.png"):
        parts.append("\n![models](models.png)\n")
    kind = kinds(results)
    if "teacher" in kind.values() and "student" in kind.values():
        parts += ["\n## Teacher vs students (as in the paper's Fig. 3 and 4)\n", comparison_table(results)]
    method_report = results.get("method_report")
    if method_report:
        parts += [f"\n## {method_report['title']}\n", method_report["markdown"].rstrip() + "\n"]
    figures = [f for f in results.get("figures", []) if (out.root / f["file"]).exists()]
    if figures:
        parts.append("\n## Task figures\n")
        parts += [f"\n{f['title']}:\n\n![{f['title']}]({f['file']})\n" for f in figures]
    parts += ["\n## Efficiency\n", efficiency_table(results.get("efficiency", {}))]
    parts += _bench_section(out.root, replot)
    if metrics and plot_training(metrics, out.root / "training.png"):
        parts += ["\n## Training\n", "![training curves](training.png)\n"]
    atomic_write_text(out.report_path, "\n".join(parts))
    return out.report_path


REQUIRED_RESULTS_KEYS = ("task", "split", "metric", "higher_is_better", "models")


def render_report(run_root: str | Path) -> Path:
    """``mamba4net report RUN_DIR``: re-render report.md (and its plots) from the run's
    results.json, bench.json (if any) and metrics.jsonl."""
    run = RunDir(run_root)
    if not run.root.is_dir():
        raise Mamba4netError(f"{run.root}: no such run directory")
    results = read_json(run.results_path, missing_ok=True)
    if results is None:
        raise Mamba4netError(f"{run.root}: no results.json (the run has not finished its evaluate stage)")
    missing = [k for k in REQUIRED_RESULTS_KEYS if k not in results]
    if missing:
        raise DataError(f"{run.results_path}: missing keys {', '.join(missing)}")
    models = results["models"]
    if not isinstance(models, dict) or not all(isinstance(v, dict) for v in models.values()):
        raise DataError(f"{run.results_path}: 'models' is not a table of models (damaged?)")
    read_json(run.root / "bench.json", missing_ok=True, what="bench results")  # readable, before writing
    title = f"Run {run.root.name}"
    with run_lock(run.root, "report"):
        return write_report(run, results, run.read_metrics(), title, replot=True)
