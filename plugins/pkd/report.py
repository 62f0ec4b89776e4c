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
        if _plot(ctx.out_dir / PLOT, rows, info["students"], sweep, metric, results["split"],
                 params.target == "residual") else []
    lines = [f"| model | {metric} | FLOPs / teacher |", "|---|---|---|"]
    lines += [f"| {n} | {v:.4g} | {f:.4f} |" for n, v, f in rows if f is not None]
    text = "\n".join(lines) + "\n"
    if params.target == "residual":
        text += ("\nThe students after s1 are residual learners (each fitted to what the chain before it misses): "
                 "alone they are not meant to answer; the prefix ensembles are the chain's answers.\n")
    if sweep:
        text += (f"\nCascade on {results['split']} (exit at the first prefix ensemble whose top class probability "
                 f"reaches the threshold; threshold {info['cascade']['threshold']} was chosen on valid):\n\n"
                 f"| threshold | {metric} | FLOPs / teacher |\n|---|---|---|\n")
        text += "\n".join(f"| {s['threshold']} | {s[metric]:.4g} | {s['flops_fraction']:.4f} |" for s in sweep) + "\n"
    return {"models": extras, "figures": figures, "markdown": text, "cascade_sweep": sweep}


def _plot(path, rows, students: list[str], sweep, metric: str, split: str, additive: bool) -> bool:
    """Metric against FLOPs (fraction of the teacher's, log scale): the prefix ensembles F_1..F_K
    (F_1 = s1), the cascade's threshold sweep, the teacher, and each student alone unless the
    students are residual learners (meaningful only on top of the chain before them)."""
    from mamba4net.core.plotting import pyplot, save_figure

    value = {n: (v, f) for n, v, f in rows if f is not None}
    if not value:
        return False
    prefixes = [s for s in students[:1] if s in value] + sorted(
        (n for n in value if n.startswith("ensemble_")), key=lambda n: int(n.split("_")[1]))
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if prefixes:
        ax.plot([value[n][1] for n in prefixes], [value[n][0] for n in prefixes], marker="s", color="tab:blue",
                label="ensembles of the first k students (k = 1..K)")
        for k, n in enumerate(prefixes, 1):
            ax.annotate(f"k={k}", (value[n][1], value[n][0]), fontsize=7, xytext=(2, -10), textcoords="offset points")
    if not additive:
        alone = [n for n in students if n in value]
        ax.plot([value[n][1] for n in alone], [value[n][0] for n in alone], marker="o", color="tab:green",
                linestyle="none", label="each student alone")
        for n in alone:
            ax.annotate(n, (value[n][1], value[n][0]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if sweep:
        ax.plot([s["flops_fraction"] for s in sweep], [s[metric] for s in sweep], marker=".", color="tab:purple",
                label="cascade (threshold sweep)")
    if "cascade" in value:
        ax.plot(value["cascade"][1], value["cascade"][0], marker="D", color="tab:purple", linestyle="none",
                label="cascade (threshold chosen on valid)")
    if "teacher" in value:
        ax.plot(value["teacher"][1], value["teacher"][0], marker="*", markersize=12, color="tab:red",
                linestyle="none", label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per sample / teacher's")
    ax.set_ylabel(f"{metric} on {split}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return True
