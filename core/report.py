"""A run's report: Markdown tables of results.json plus PNG plots of training and results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    if "teacher" not in eff or "student" not in eff:
        return "_not measured_\n"
    t, s, r = eff["teacher"], eff["student"], eff.get("ratios", {})
    rows = [
        ("parameters", f"{t['params']:,}", f"{s['params']:,}", r.get("params_student_over_teacher")),
        ("size (fp32 tensors)", _mib(t["disk_bytes"]), _mib(s["disk_bytes"]), r.get("size_student_over_teacher")),
        ("forward ms / batch", t["forward_ms"], s["forward_ms"], None),
        ("tokens / s", t["tokens_per_s"], s["tokens_per_s"], r.get("throughput_student_over_teacher")),
    ]
    lines = ["| | teacher | student | student / teacher |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {_fmt(d) if d is not None else ''} |" for a, b, c, d in rows]
    setup = eff.get("setup", {})
    extra = f"\nLoRA + encoder + head of the teacher: {_mib(t.get('adapter_bytes', 0))}. "
    extra += f"Batch {t['batch_size']} x {t['tokens_per_sample']} tokens, device {setup.get('device')}, "
    extra += f"{setup.get('torch_threads')} torch threads, median of {setup.get('repeats')}.\n"
    return "\n".join(lines) + "\n" + extra


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], []
    for v in values:
        acc = (acc + [v])[-window:]
        out.append(sum(acc) / len(acc))
    return out


def plot_training(metrics: list[dict], path: Path) -> bool:
    """Per stage: loss terms (raw, faint; moving average, bold) and validation metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def write_report(out: RunDir, results: dict, metrics: list[dict], title: str) -> Path:
    parts = [f"# {title}\n", f"Task `{results['task']}`, split `{results['split']}`, metric "
             f"`{results['metric']}` ({'higher' if results['higher_is_better'] else 'lower'} is better).\n",
             "## Task quality\n", results_table(results)]
    if plot_models(results, out.root / "models.png"):
        parts.append("\n![models](models.png)\n")
    parts += ["\n## Efficiency\n", efficiency_table(results.get("efficiency", {}))]
    if metrics and plot_training(metrics, out.root / "training.png"):
        parts += ["\n## Training\n", "![training curves](training.png)\n"]
    atomic_write_text(out.report_path, "\n".join(parts))
    return out.report_path
