"""A run's report: Markdown tables of results.json plus PNG plots of training and results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mamba4net.core.plotting import pyplot
from mamba4net.core.runs import RunDir, atomic_write_text


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _mib(n: float) -> str:
    return f"{n / 2**20:.2f} MiB"


def results_table(results: dict) -> str:
    metric, models = results["metric"], results.get("models", {})
    if not models:
        return "_no models evaluated_\n"
    order = sorted(models, key=lambda m: models[m].get(metric, float("nan")), reverse=results["higher_is_better"])
    keys = [metric] + sorted({k for m in models.values() for k in m} - {metric})
    lines = ["| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name in order:
        lines.append(f"| {name} | " + " | ".join(_fmt(models[name].get(k, "")) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def efficiency_table(eff: dict) -> str:
    """The ``efficiency`` section of results.json: size and whole-model speed on a task batch."""
    if "teacher" not in eff or "student" not in eff:
        return "_not measured_\n"
    t, s, r = eff["teacher"], eff["student"], eff.get("ratios", {})
    rows = [
        ("parameters", f"{t['params']:,}", f"{s['params']:,}", r.get("params_student_over_teacher")),
        ("deployed size (safetensors)", _mib(t["disk_bytes"]), _mib(s["disk_bytes"]), r.get("size_student_over_teacher")),
    ]
    if "deploy_bytes_without_unused" in t:
        rows.append(("deployed size without unused parameters", _mib(t["deploy_bytes_without_unused"]),
                     _mib(s["deploy_bytes_without_unused"]), r.get("size_student_over_teacher_without_unused")))
    if "forward_ms" in t and "forward_ms" in s:
        rows += [("forward ms / task batch", t["forward_ms"], s["forward_ms"], None),
                 ("tokens / s on the task batch", t["tokens_per_s"], s["tokens_per_s"],
                  r.get("throughput_student_over_teacher"))]
    lines = ["| | teacher | student | student / teacher |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {_fmt(d) if d is not None else ''} |" for a, b, c, d in rows]
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
    """Like the paper's Fig. 3/4: task metric per model; for the student, size and throughput
    relative to the teacher (throughput of the backbones at each swept length, smallest batch)."""
    metric, models = results["metric"], results.get("models", {})
    r = results.get("efficiency", {}).get("ratios", {})
    by_len = r.get("throughput_student_over_teacher_by_seq_len", {})
    lens = sorted(by_len, key=int)
    head = [metric, "size / teacher"] + [f"throughput / teacher, L={n}" for n in lens]
    lines = ["| model | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    order = sorted(models, key=lambda m: models[m].get(metric, float("nan")), reverse=results["higher_is_better"])
    for name in order:
        cells = [_fmt(models[name].get(metric, ""))]
        if name == "teacher":
            cells += ["1"] + ["1x"] * len(lens)
        elif name == "student":
            size = r.get("size_student_over_teacher")
            cells += [f"{size:.4f}" if size is not None else ""] + [f"{by_len[n]:.3g}x" for n in lens]
        else:
            cells += [""] * (1 + len(lens))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = ""
    if lens:
        note = (f"\nThroughput: input tokens per second of the backbones, batch {r.get('throughput_batch_size')}; "
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
    valid_keys = sorted({k for m in metrics for k in m if k.startswith("valid_") and k != "valid_n_samples"})
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
            ax.legend(fontsize=7)
        else:
            ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_models(results: dict, path: Path) -> bool:
    plt = pyplot()

    metric, models = results["metric"], results.get("models", {})
    names = [n for n in models if metric in models[n]]
    if not names:
        return False
    names.sort(key=lambda n: models[n][metric], reverse=results["higher_is_better"])
    colors = ["tab:red" if n == "teacher" else "tab:green" if n == "student" else "tab:gray" for n in names]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.barh(names, [models[n][metric] for n in names], color=colors)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric} ({'higher' if results['higher_is_better'] else 'lower'} is better)")
    ax.set_title(f"{results['task']} on {results['split']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _bench_section(folder: Path, replot: bool) -> list[str]:
    """Tables and plots of ``bench.json`` in ``folder`` (plots drawn from the JSON; with
    ``replot=False`` those already there are kept)."""
    from mamba4net.core.bench.plots import plot_all
    from mamba4net.core.bench.tables import latency_table, setup_line, size_table, skipped_list, throughput_table

    bench = read_json(folder / "bench.json")
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


def read_json(path: Path) -> dict | None:
    """A JSON file of a run, ``None`` when absent; one-line error when unreadable."""
    import json

    from mamba4net.core.errors import DataError

    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def write_report(out: RunDir, results: dict, metrics: list[dict], title: str, replot: bool = False) -> Path:
    parts = [f"# {title}\n", f"Task `{results['task']}`, split `{results['split']}`, metric "
             f"`{results['metric']}` ({'higher' if results['higher_is_better'] else 'lower'} is better).\n",
             "## Task quality\n", results_table(results)]
    if plot_models(results, out.root / "models.png"):
        parts.append("\n![models](models.png)\n")
    if "teacher" in results.get("models", {}) and "student" in results.get("models", {}):
        parts += ["\n## Teacher vs student (as in the paper's Fig. 3 and 4)\n", comparison_table(results)]
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
    from mamba4net.core.errors import DataError, Mamba4netError

    run = RunDir(run_root)
    if not run.root.is_dir():
        raise Mamba4netError(f"{run.root}: no such run directory")
    results = read_json(run.results_path)
    if results is None:
        raise Mamba4netError(f"{run.root}: no results.json (the run has not finished its evaluate stage)")
    missing = [k for k in REQUIRED_RESULTS_KEYS if k not in results]
    if missing:
        raise DataError(f"{run.results_path}: missing keys {', '.join(missing)}")
    title = f"Run {run.root.name}"
    return write_report(run, results, run.read_metrics(), title, replot=True)
