"""What the ``pkd`` method adds to a run: its predictors (every prefix ensemble, the cascade) and,
after the evaluation, FLOPs per sample for every model, the cascade's sweep on the evaluation split,
a table and a plot of the metric against the fraction of the teacher's FLOPs."""

from __future__ import annotations

from typing import Any

from .config import PKDParams
from .stages import ENSEMBLE_STAGE

PLOT = "pkd_flops.png"


def _info(ctx) -> dict | None:
    return ctx.finished(ENSEMBLE_STAGE)


def predictors(ctx) -> dict[str, Any]:
    from .ensemble import Cascade, Ensemble

    info = _info(ctx)
    if info is None:
        return {}
    students, weights, flops = info["students"], info["prefix_weights"], info["flops"]
    models = [ctx.model(r).eval() for r in students]
    out: dict[str, Any] = {}
    for k in range(2, len(students) + 1):
        out[f"ensemble_{k}"] = Ensemble(models[:k], weights[k - 1], [flops[r] for r in students[:k]], flops["teacher"])
    threshold = (info.get("cascade") or {}).get("threshold")
    if threshold is not None:
        out["cascade"] = Cascade(models, weights, [flops[r] for r in students], flops["teacher"], threshold)
    return out


def summarize(ctx, results: dict, params: PKDParams) -> dict:
    info = _info(ctx)
    if info is None:
        return {}
    task, metric = ctx.task, results["metric"]
    flops, teacher = info["flops"], info["flops"]["teacher"]
    extras = {r: {"flops_per_sample": f, "flops_fraction": f / teacher} for r, f in flops.items()}
    sweep = []
    if info.get("cascade"):
        from .ensemble import Cascade

        models = [ctx.model(r).eval() for r in info["students"]]
        for threshold in params.cascade_thresholds:
            cascade = Cascade(models, info["prefix_weights"], [flops[r] for r in info["students"]], teacher, threshold)
            scores = task.evaluate(cascade.eval(), results["split"])
            sweep.append({"threshold": threshold, metric: scores[metric], **cascade.extra_scores()})
    models = results["models"]
    rows = []
    for name in ["teacher", *info["students"], *[n for n in models if n.startswith("ensemble_")], "cascade"]:
        if name in models:
            frac = extras.get(name, {}).get("flops_fraction", models[name].get("flops_fraction"))
            rows.append((name, models[name][metric], frac))
    figures = [{"title": f"{metric} against FLOPs (fraction of the teacher's)", "file": PLOT}] \
        if _plot(ctx.out_dir / PLOT, rows, info["students"], sweep, metric, results["split"]) else []
    lines = [f"| model | {metric} | FLOPs / teacher |", "|---|---|---|"]
    lines += [f"| {n} | {v:.4g} | {f:.4f} |" for n, v, f in rows if f is not None]
    text = "\n".join(lines) + "\n"
    if sweep:
        text += (f"\nCascade on {results['split']} (exit at the first prefix ensemble whose top class probability "
                 f"reaches the threshold; threshold {info['cascade']['threshold']} was chosen on valid):\n\n"
                 f"| threshold | {metric} | FLOPs / teacher |\n|---|---|---|\n")
        text += "\n".join(f"| {s['threshold']} | {s[metric]:.4g} | {s['flops_fraction']:.4f} |" for s in sweep) + "\n"
    return {"models": extras, "figures": figures, "markdown": text, "cascade_sweep": sweep}


def _plot(path, rows, students: list[str], sweep, metric: str, split: str) -> bool:
    from mamba4net.core.plotting import pyplot

    points = [(n, v, f) for n, v, f in rows if f is not None]
    if not points:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    groups = (([n for n, _, _ in points if n in students], "o", "tab:green", "none", "students"),
              ([n for n, _, _ in points if n.startswith("ensemble_")], "s", "tab:blue", "-",
               "ensembles of the first k students"))
    for names, marker, color, line, label in groups:
        pts = [(f, v, n) for n, v, f in points if n in names]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, linestyle=line, label=label)
            for f, v, n in pts:
                ax.annotate(n, (f, v), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if sweep:
        ax.plot([s["flops_fraction"] for s in sweep], [s[metric] for s in sweep], marker=".", color="tab:purple",
                label="cascade (threshold sweep)")
    teacher = [(f, v) for n, v, f in points if n == "teacher"]
    if teacher:
        ax.plot(*teacher[0], marker="*", markersize=12, color="tab:red", linestyle="none", label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per sample / teacher's")
    ax.set_ylabel(f"{metric} on {split}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
