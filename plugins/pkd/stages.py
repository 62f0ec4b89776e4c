"""The stages of progressive distillation, written against the public stage context only.

    teacher      the teacher learns the task (LoRA for an LLM teacher, fully for a small one)
    s1 .. sK     student k learns its target (see PKDParams.target) with
                 alpha * L_hard + (1 - alpha) * L_soft; before it trains, the chain stops early
                 ({"skipped": ...}) once the ensemble so far reaches stop_metric on validation or
                 the next student would take the chain past flops_budget
    ensemble     weights of every prefix ensemble fitted on validation, the FLOPs of every model,
                 and the cascade's exit threshold chosen on validation

torch is imported inside the functions: the method is built when a config is validated.
"""

from __future__ import annotations

from typing import Callable

from .config import PKDParams

ENSEMBLE_STAGE = "ensemble"


def train_teacher(ctx) -> None:
    from mamba4net.plugins.mamba4net.stages import fit_on_task

    fit_on_task(ctx, "teacher")


def _flops(ctx, role: str) -> float:
    """FLOPs per sample of a role's model on the validation split's first images/windows."""
    import torch

    from mamba4net.core.bench.flops import model_flops
    from mamba4net.core.seeding import move

    data = ctx.task.data("valid")
    n = min(8, len(data))
    batch = move(data.batch(torch.arange(n)), ctx.device)
    return model_flops(ctx.model(role), batch, n)["per_sample"]


def _additive(params: PKDParams) -> bool:
    return params.target == "residual"


def _better(task, value: float, target: float) -> bool:
    return value >= target if task.higher_is_better else value <= target


def trained_students(ctx, names: list[str]) -> list[str]:
    """The students of ``names`` whose stage trained them (not skipped by an early stop)."""
    return [r for r in names if not (ctx.finished(r) or {}).get("skipped")]


def student_stage(k: int, names: list[str], params: PKDParams) -> Callable:
    """The stage that trains student ``names[k]``."""

    def run(ctx) -> dict | None:
        from mamba4net.core.protocols import ModelOutput

        from .ensemble import Ensemble

        role, previous = names[k], names[:k]
        if len(trained_students(ctx, previous)) < len(previous):
            return {"skipped": "an earlier student of the chain was skipped"}
        reason = _stop_reason(ctx, params, previous, role)
        if reason:
            return {"skipped": reason}
        task = ctx.task
        student = ctx.model(role)
        source = previous[-1] if params.target == "previous" and previous else "teacher"
        target = ctx.frozen(source)
        offsets = [(r, ctx.frozen(r)) for r in previous] if _additive(params) else []
        objective = ctx.objective(student, target)
        data = task.data("train")
        if params.target == "reweight" and previous:
            data = _resampled(ctx, data, [ctx.frozen(r) for r in previous], f"reweight:{role}")
        if ctx.params.cache_teacher:
            if objective.needs_teacher:
                data = ctx.cache_outputs(source, target, data, hidden=objective.needs_teacher_hidden)
            for r, model in offsets:
                data = ctx.cache_outputs(r, model, data)

        def loss_fn(batch):
            target_out = ctx.outputs(source, target, batch) if objective.needs_teacher else None
            out = student(batch)
            if offsets:  # F_k = F_{k-1} + f_k: the student learns what the chain so far misses
                out = ModelOutput(pred=out.pred + sum(ctx.outputs(r, m, batch).pred for r, m in offsets),
                                  hidden=out.hidden)
            return objective(out, target_out, batch)

        chain = Ensemble([m for _, m in offsets] + [student], [1.0] * (len(offsets) + 1), [0.0] * (len(offsets) + 1), 1.0)

        def valid():
            chain.eval()  # the trainer puts the student back in training mode afterwards
            return task.evaluate(chain, "valid")

        ctx.fit({"model": student, "objective": objective}, loss_fn, data, valid=valid)
        return {"target": source, "additive": bool(offsets)}

    return run


def _stop_reason(ctx, params: PKDParams, previous: list[str], role: str) -> str | None:
    if params.flops_budget is not None:
        spent = sum(_flops(ctx, r) for r in previous + [role]) / _flops(ctx, "teacher")
        if spent > params.flops_budget:
            return f"{', '.join(previous + [role])} would cost {spent:.3f} of the teacher's FLOPs, over {params.flops_budget}"
    if params.stop_metric is not None and previous:
        from .ensemble import Ensemble

        models = [ctx.frozen(r) for r in previous]
        weights = [1.0] * len(models) if _additive(params) else [1.0 / len(models)] * len(models)
        ensemble = Ensemble(models, weights, [0.0] * len(models), 1.0).eval()
        value = ctx.task.evaluate(ensemble, "valid")[ctx.task.metric]
        if _better(ctx.task, value, params.stop_metric):
            return f"the ensemble of {', '.join(previous)} reached valid {ctx.task.metric} {value:.4f} (target {params.stop_metric})"
    return None


def _resampled(ctx, data, models, stream: str):
    """The training split resampled (seeded, with replacement) in proportion to the loss the
    ensemble of ``models`` still makes on each sample (boosting by resampling)."""
    import torch

    from mamba4net.core.outputs import compute_outputs
    from mamba4net.core.protocols import ModelOutput
    from mamba4net.core.seeding import stream_seed

    preds = [compute_outputs(m, data, ctx.device, keep_hidden=False, progress=False)["pred"] for m in models]
    ensemble = sum(preds) / len(preds)
    losses = torch.stack([ctx.task.loss(ModelOutput(pred=ensemble[i : i + 1]), data.batch(torch.tensor([i])))
                          for i in range(len(data))]).float()
    weights = losses.clamp_min(0) + 1e-3 * losses.abs().mean().clamp_min(1e-8)
    g = torch.Generator().manual_seed(stream_seed(ctx.seed, stream))
    return _Indexed(data, torch.multinomial(weights, len(data), replacement=True, generator=g))


class _Indexed:
    """A split seen through an index table (a resampling of it)."""

    def __init__(self, data, index):
        self.data, self.index = data, index

    def __len__(self) -> int:
        return len(self.index)

    def batch(self, indices):
        return self.data.batch(self.index[indices])


def ensemble_stage(names: list[str], params: PKDParams) -> Callable:
    def run(ctx) -> dict:
        import torch

        from mamba4net.core.outputs import compute_outputs
        from mamba4net.core.protocols import ModelOutput

        from .ensemble import Cascade, fit_weights

        task = ctx.task
        students = trained_students(ctx, names)
        valid = task.data("valid")
        whole = valid.batch(torch.arange(len(valid)))
        preds = [compute_outputs(ctx.frozen(r), valid, ctx.device, keep_hidden=False, progress=False)["pred"]
                 for r in students]

        def loss(pred):
            return task.loss(ModelOutput(pred=pred), whole)

        prefix_weights = []
        for k in range(1, len(students) + 1):
            init = [1.0] * k if _additive(params) else [1.0 / k] * k
            prefix_weights.append(fit_weights(preds[:k], loss, init) if k > 1 or not _additive(params) else init)
        flops = {r: _flops(ctx, r) for r in ["teacher"] + students}
        info = {"students": students, "prefix_weights": prefix_weights, "flops": flops}
        if getattr(task, "n_classes", None) and len(students) > 1:  # a cascade: class probabilities, 2+ students
            from .ensemble import Ensemble

            sweep = []
            models = [ctx.frozen(r) for r in students]
            whole_chain = Ensemble(models, prefix_weights[-1], [0.0] * len(models), 1.0).eval()
            full = task.evaluate(whole_chain, "valid")[task.metric]
            for threshold in params.cascade_thresholds:
                cascade = Cascade(models, prefix_weights, [flops[r] for r in students], flops["teacher"], threshold)
                scores = task.evaluate(cascade.eval(), "valid")
                sweep.append({"threshold": threshold, task.metric: scores[task.metric], **cascade.extra_scores()})
            ok = [s for s in sweep if abs(s[task.metric] - full) <= params.cascade_tolerance or _better(task, s[task.metric], full)]
            best = min(ok, key=lambda s: s["flops_per_sample"]) if ok else None
            info["cascade"] = {"threshold": best["threshold"] if best else None, "valid_full_ensemble": full,
                               "valid_sweep": sweep}
        return info

    return run
