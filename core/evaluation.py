"""Side-by-side evaluation on one split: the task's baselines, every deployed role of the method and
the extra predictors the method offers (an ensemble, say), each under its own name."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time

from mamba4net.core.checkpoint import load_checked, recorded_sha256, save_checked, verify_file
from mamba4net.core.context import MethodContext
from mamba4net.core.errors import DataError, PluginError, ResultError
from mamba4net.core.io import write_json

log = logging.getLogger("mamba4net")


def baseline_nodes(ctx) -> list[tuple[str, object]]:
    """(name, validated params) of each baseline the config asks for (default: the task's)."""
    nodes = ctx.cfg.evaluate.baselines
    if nodes is None:
        return [(n, ctx.registry.get("baselines", n).validate_params({})) for n in ctx.task.default_baselines]
    return [(n["name"], ctx.loaded.params[f"evaluate.baselines.{i}"]) for i, n in enumerate(nodes)]


def fitted_baseline(ctx, name: str, params):
    """Build a baseline; learned ones are fitted once per run and their weights kept."""
    baseline = ctx.registry.get("baselines", name).build(params, task=ctx.task)
    # fitted weights are kept per (name, params): other params fit afresh
    tag = hashlib.sha1(json.dumps(params.model_dump(mode="json") if params else {}, sort_keys=True).encode())
    path = ctx.run.stage_dir("baselines") / f"{name}-{tag.hexdigest()[:10]}.safetensors"
    learned = hasattr(baseline, "state_dict") and hasattr(baseline, "load_state_dict")
    if learned and path.exists():
        try:
            baseline.load_state_dict(load_checked(path, f"baseline {name}"))
        except RuntimeError as exc:
            raise DataError(f"{path}: does not fit baseline '{name}' ({str(exc).splitlines()[0]})") from None
        return baseline, 0.0
    t0 = time.perf_counter()
    baseline.fit(ctx.task)
    seconds = time.perf_counter() - t0
    if learned:
        save_checked(path, dict(baseline.state_dict()), {"baseline": name})
    return baseline, seconds


def verify_baselines(ctx) -> None:
    """The run's fitted baseline weights that exist verify (checked before an evaluation starts)."""
    folder = ctx.run.checkpoints / "baselines"
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        digest = recorded_sha256(path, "baseline")
        why = verify_file(path, digest) if digest else None
        if why:
            raise DataError(f"{why}; delete it to fit the baseline again")


def non_finite(results: dict) -> list[str]:
    """The models whose task metric is NaN or infinite (None in JSON, where NaN is written as null)."""
    metric = results["metric"]
    bad = []
    for name, scores in results["models"].items():
        if not isinstance(scores, dict) or metric not in scores:
            continue  # no score at all is not a NaN (the report shows a blank)
        value = scores[metric]
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            bad.append(name)
    return bad


def raise_if_not_finite(results: dict, where) -> None:
    """The run's last word when a model scored NaN/inf: a non-zero exit naming it (all was written)."""
    bad = results.get("non_finite") or []
    if bad:
        raise ResultError(f"{', '.join(bad)}: {results['metric']} is not finite (NaN or inf; flagged in {where} "
                          "and shown last in the report); check the weights or the data")


def _scores(task, predictor, split: str, details: dict, name: str) -> dict[str, float]:
    """``task.evaluate``; a ``details`` entry (per-sample data for figures) is set aside."""
    scores = dict(task.evaluate(predictor, split))
    extra = scores.pop("details", None)
    if extra is not None:
        details[name] = extra
    return scores


def role_facts(ctx) -> dict[str, dict]:
    """Per role of the method: its kind, whether it is deployed, and the stage its weights come from."""
    return {r.name: {"kind": r.kind, "deployed": r.deployed, "weights_from": ctx.weights_from(r.name)}
            for r in ctx.method.roles}


def evaluate_all(ctx) -> dict:
    task, split = ctx.task, ctx.cfg.evaluate.split
    models: dict[str, dict[str, float]] = {}
    kinds: dict[str, str] = {}
    details: dict[str, dict] = {}

    def score(name: str, kind: str, predictor) -> None:
        if name in models:
            raise PluginError(f"evaluate: two models are named '{name}' (a {kinds[name]} and a {kind}); "
                              "rename the role or predictor")
        models[name] = _scores(task, predictor, split, details, name)
        extra = getattr(predictor, "extra_scores", None)
        if callable(extra):
            models[name].update(extra())
        kinds[name] = kind
        log.info("evaluate %s on %s: %s = %.4f", name, split, task.metric, models[name][task.metric])

    for name, params in baseline_nodes(ctx):
        baseline, seconds = fitted_baseline(ctx, name, params)
        score(name, "baseline", baseline)
        models[name]["fit_seconds"] = round(seconds, 2)
    for role in ctx.deployed():
        score(role.name, role.kind, ctx.model(role.name))
    method_ctx = MethodContext(ctx)
    if ctx.method.predictors is not None:
        for name, predictor in ctx.method.predictors(method_ctx).items():
            score(name, "predictor", predictor)
    figures: list[dict] = []
    if details:
        write_json(ctx.out.root / "evaluation_details.json", details)
        task_figures = getattr(task, "figures", None)
        if callable(task_figures):
            figures += task_figures(details, ctx.out.root)
    bad = non_finite({"metric": task.metric, "models": models})
    for name in bad:
        log.warning("evaluate %s on %s: %s is %s", name, split, task.metric, models[name].get(task.metric))
    results = {
        "task": task.name,
        "split": split,
        "metric": task.metric,
        "higher_is_better": bool(task.higher_is_better),
        "models": models,
        "non_finite": bad,
        "kinds": kinds,
        "method": ctx.method.name,
        "roles": role_facts(ctx),
        "efficiency": ctx.results.get("efficiency", {}),
    }
    if ctx.method.summarize is not None:
        summary = ctx.method.summarize(method_ctx, results) or {}
        for name, extra in summary.get("models", {}).items():
            models.setdefault(name, {}).update(extra)
        figures += summary.get("figures", [])
        if summary.get("markdown"):
            results["method_report"] = {"title": f"Method {ctx.method.name}", "markdown": summary["markdown"]}
    if figures:
        results["figures"] = figures
    ctx.results.update(results)
    write_json(ctx.out.results_path, ctx.results)
    return results
