"""CWR vs random initialisation of the student: same adapted teacher, seed, data and budget.

Takes a finished run (its adapted teacher is reused, so both arms distil from the very same
teacher), distils the student once per initializer with frequent validation, and reports for each:
the validation metric over training, steps and wall time to reach a target (the best metric the
weaker arm reached), and the final test metric. Writes ``cwr_ablation.json`` and ``.md`` next to
the arms' run directories.

    python benchmarks/cwr_ablation.py RUN_DIR [--out DIR] [--steps N] [--eval-every N]
        [--arm random:{} --arm 'cwr:{strategy: svd, rank: 64}']
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import yaml

from mamba4net.core.config import load_config
from mamba4net.core.pipeline import run_pipeline
from mamba4net.core.io import atomic_write_text, write_json
from mamba4net.core.runs import RunDir

DEFAULT_ARMS = ["random:{}", "cwr:{strategy: svd, rank: 64}"]


def parse_arm(text: str) -> tuple[str, dict]:
    name, _, params = text.partition(":")
    return name, (yaml.safe_load(params) or {})


def run_arm(source: RunDir, out: Path, label: str, init: dict, steps: int, eval_every: int) -> dict:
    arm = RunDir(out / label)
    if arm.root.exists():
        shutil.rmtree(arm.root)
    # reuse the adapted teacher: its finished stage is skipped on the arm's run
    shutil.copytree(source.checkpoints / "adapt_teacher", arm.checkpoints / "adapt_teacher")
    overrides = [f"initializer={json.dumps(init)}", f"train.distill.steps={steps}",
                 f"train.distill.eval_every={eval_every}", "benchmark.enabled=false",
                 "evaluate.baselines=[]", "runtime.progress=false"]
    loaded = load_config(source.config_path, overrides)
    t0 = time.perf_counter()
    run_pipeline(loaded, arm.root)
    seconds = time.perf_counter() - t0
    results = json.loads(arm.results_path.read_text())
    metric = results["metric"]
    curve = [(r["step"], r[f"valid_{metric}"], r["time"]) for r in arm.read_metrics()
             if r["stage"] == "distill" and f"valid_{metric}" in r]
    done = json.loads((arm.checkpoints / "distill" / "done.json").read_text())
    init_done = json.loads((arm.checkpoints / "init_student" / "done.json").read_text())
    start = [r["time"] - r["step"] * r.get("sec_per_step", 0) for r in arm.read_metrics()
             if r["stage"] == "distill" and "sec_per_step" in r][:1]
    return {"initializer": init, "metric": metric, "higher_is_better": results["higher_is_better"],
            "valid_curve": [[s, v] for s, v, _ in curve],
            "curve_seconds": [round(t - start[0], 1) if start else None for _, _, t in curve],
            "test": results["models"]["student"][metric], "teacher_test": results["models"]["teacher"][metric],
            "init_seconds": round(init_done["seconds"], 1), "distill_seconds": round(done["seconds"], 1),
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
    args = parser.parse_args()
    source = RunDir(args.run_dir)
    out = Path(args.out or source.root / "cwr_ablation")
    arms = {}
    for text in args.arm or DEFAULT_ARMS:
        name, params = parse_arm(text)
        label = name if name not in arms else f"{name}_{len(arms)}"
        arms[label] = run_arm(source, out, label, {"name": name, **params}, args.steps, args.eval_every)
    any_arm = next(iter(arms.values()))
    pick = max if any_arm["higher_is_better"] else min
    # the target: the best validation value the weakest arm reached
    target = (min if any_arm["higher_is_better"] else max)(pick(v for _, v in a["valid_curve"]) for a in arms.values())
    for arm in arms.values():
        arm["steps_to_target"], arm["seconds_to_target"] = first_reaching(arm, target)
    write_json(out / "cwr_ablation.json", {"target_valid": target, "arms": arms})
    metric = any_arm["metric"]
    lines = [f"Target: valid {metric} {target:.4f} (the best the weakest arm reached).\n",
             f"| initializer | init seconds | steps to target | seconds to target | best valid {metric} | test {metric} | distill seconds |",
             "|---|---|---|---|---|---|---|"]
    for label, a in arms.items():
        best = pick(v for _, v in a["valid_curve"])
        lines.append(f"| {label} {json.dumps({k: v for k, v in a['initializer'].items() if k != 'name'})} | "
                     f"{a['init_seconds']} | {a['steps_to_target']} | {a['seconds_to_target']} | {best:.4f} | {a['test']:.4f} | {a['distill_seconds']} |")
    atomic_write_text(out / "cwr_ablation.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
