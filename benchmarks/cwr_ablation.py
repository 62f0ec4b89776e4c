"""How the student starts: random vs CWR initialisation, with and without MOHAWK's stages 1-2.

Takes a finished ``mamba4net`` run (its adapted teacher is reused, so every arm distils from the
very same teacher), distils the student once per arm with frequent validation, and reports for
each: the validation metric over the final distillation, its steps and wall time to reach a target
(the random-init arm's best validation metric, or the best the weakest arm reached without one),
the seconds the arm spent before it (initialisation, MOHAWK's stages), and the final test metric.
Writes ``cwr_ablation.json`` and ``.md`` next to the arms' run directories.

    python benchmarks/cwr_ablation.py RUN_DIR [--out DIR] [--steps N] [--eval-every N]
        [--arm random:{} --arm 'cwr:{strategy: svd, rank: 64}']
        [--mohawk 'mohawk:random:{}' --mohawk 'cwr+mohawk:cwr:{strategy: svd, rank: 64}']
        [--mohawk-steps 40,150]

A ``--mohawk LABEL:INITIALIZER:{params}`` arm runs the ``mohawk`` method instead (the reused
adapted teacher, then the initializer, stage 1 and stage 2 for the given steps, then its final
distillation with the source run's distill section: the same steps, batch, learning rate and
losses as the other arms).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import yaml

from mamba4net.core.config import validate_data
from mamba4net.core.pipeline import run_pipeline
from mamba4net.core.io import atomic_write_text, write_json
from mamba4net.core.runs import RunDir

DEFAULT_ARMS = ["random:{}", "cwr:{strategy: svd, rank: 64}"]


def parse_arm(text: str) -> tuple[str, dict]:
    name, _, params = text.partition(":")
    return name, (yaml.safe_load(params) or {})


def arm_config(source: RunDir, init: dict, steps: int, eval_every: int, mohawk_steps: tuple[int, int] | None):
    """The arm's config: the source run's, another initializer, frequent validation, no benchmark;
    with ``mohawk_steps`` the mohawk method with the source's distill section as its last stage."""
    data = yaml.safe_load(source.config_path.read_text())
    data.update(initializer=init, benchmark={**data.get("benchmark", {}), "enabled": False},
                evaluate={**data.get("evaluate", {}), "baselines": []})
    data.setdefault("runtime", {})["progress"] = False
    distill = {**data["train"]["distill"], "steps": steps, "eval_every": eval_every}
    if mohawk_steps is None:
        data["train"]["distill"] = distill
        return data
    data["method"] = {"name": "mohawk", "adapt_teacher": True}
    distill.pop("cache_teacher", None)
    shared = {k: distill[k] for k in ("batch_size", "lr", "warmup_steps") if k in distill}
    data["train"] = {"adapt_teacher": data["train"]["adapt_teacher"],
                     "mohawk_matrix": {**shared, "steps": mohawk_steps[0], "log_every": 10, "checkpoint_every": 100},
                     "mohawk_hidden": {**shared, "steps": mohawk_steps[1], "log_every": 10, "checkpoint_every": 100},
                     "mohawk_distill": {**distill, "trainable": ["*"]}}
    return data


def run_arm(source: RunDir, out: Path, label: str, init: dict, steps: int, eval_every: int,
            mohawk_steps: tuple[int, int] | None = None) -> dict:
    arm = RunDir(out / label)
    if arm.root.exists():
        shutil.rmtree(arm.root)
    # reuse the adapted teacher: its finished stage is skipped on the arm's run
    shutil.copytree(source.checkpoints / "adapt_teacher", arm.checkpoints / "adapt_teacher")
    loaded = validate_data(arm_config(source, init, steps, eval_every, mohawk_steps), source=str(source.config_path))
    final, before = ("mohawk_distill", ("mohawk_init", "mohawk_matrix", "mohawk_hidden")) if mohawk_steps \
        else ("distill", ("init_student",))
    t0 = time.perf_counter()
    run_pipeline(loaded, arm.root)
    seconds = time.perf_counter() - t0
    results = json.loads(arm.results_path.read_text())
    metric = results["metric"]
    curve = [(r["step"], r[f"valid_{metric}"], r["time"]) for r in arm.read_metrics()
             if r["stage"] == final and f"valid_{metric}" in r]
    done = json.loads((arm.checkpoints / final / "done.json").read_text())
    spent = sum(json.loads((arm.checkpoints / s / "done.json").read_text()).get("seconds", 0.0) for s in before)
    start = [r["time"] - r["step"] * r.get("sec_per_step", 0) for r in arm.read_metrics()
             if r["stage"] == final and "sec_per_step" in r][:1]
    return {"initializer": init, "mohawk_steps": list(mohawk_steps) if mohawk_steps else None, "metric": metric,
            "higher_is_better": results["higher_is_better"],
            "valid_curve": [[s, v] for s, v, _ in curve],
            "curve_seconds": [round(t - start[0], 1) if start else None for _, _, t in curve],
            "test": results["models"]["student"][metric], "teacher_test": results["models"]["teacher"][metric],
            "init_seconds": round(spent, 1), "distill_seconds": round(done["seconds"], 1),
            "total_seconds": round(seconds, 1)}


def first_reaching(arm: dict, target: float) -> tuple[int | None, float | None]:
    better = (lambda v: v >= target) if arm["higher_is_better"] else (lambda v: v <= target)
    for (step, value), sec in zip(arm["valid_curve"], arm["curve_seconds"]):
        if better(value):
            return step, sec
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--out", default=None)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--arm", action="append", default=None, help="name:{yaml params}")
    parser.add_argument("--mohawk", action="append", default=[], help="label:initializer:{yaml params}")
    parser.add_argument("--mohawk-steps", default="40,150", help="steps of MOHAWK's stage 1 and stage 2")
    args = parser.parse_args()
    source = RunDir(args.run_dir)
    out = Path(args.out or source.root / "cwr_ablation")
    arms = {}
    for text in args.arm or DEFAULT_ARMS:
        name, params = parse_arm(text)
        label = name if name not in arms else f"{name}_{len(arms)}"
        arms[label] = run_arm(source, out, label, {"name": name, **params}, args.steps, args.eval_every)
    mohawk_steps = tuple(int(x) for x in args.mohawk_steps.split(","))
    for text in args.mohawk:
        label, rest = text.split(":", 1)
        name, params = parse_arm(rest)
        arms[label] = run_arm(source, out, label, {"name": name, **params}, args.steps, args.eval_every, mohawk_steps)
    any_arm = next(iter(arms.values()))
    pick = max if any_arm["higher_is_better"] else min
    # the target: the random-init arm's best validation value (else the best the weakest arm reached)
    if "random" in arms:
        target = pick(v for _, v in arms["random"]["valid_curve"])
    else:
        target = (min if any_arm["higher_is_better"] else max)(pick(v for _, v in a["valid_curve"]) for a in arms.values())
    for arm in arms.values():
        arm["steps_to_target"], arm["seconds_to_target"] = first_reaching(arm, target)
    write_json(out / "cwr_ablation.json", {"target_valid": target, "arms": arms})
    metric = any_arm["metric"]
    lines = [f"Target: valid {metric} {target:.4f} ({'the random-init arm' if 'random' in arms else 'the weakest arm'}"
             f"'s best).\n",
             f"| arm | initializer | MOHAWK stages 1, 2 (steps) | seconds before the distillation | steps to target | "
             f"seconds to target | best valid {metric} | test {metric} | distill seconds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, a in arms.items():
        best = pick(v for _, v in a["valid_curve"])
        init = f"{a['initializer']['name']} {json.dumps({k: v for k, v in a['initializer'].items() if k != 'name'})}"
        stages = ", ".join(map(str, a["mohawk_steps"])) if a["mohawk_steps"] else "-"
        lines.append(f"| {label} | {init} | {stages} | {a['init_seconds']} | {a['steps_to_target']} | "
                     f"{a['seconds_to_target']} | {best:.4f} | {a['test']:.4f} | {a['distill_seconds']} |")
    atomic_write_text(out / "cwr_ablation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
