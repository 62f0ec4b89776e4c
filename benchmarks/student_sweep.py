"""How big should the default student be? Depth x width against quality and cost, from one teacher.

Takes a finished ``mamba4net`` run, reuses its adapted teacher (so every arm distils from the very
same teacher, with the run's own distillation section), distils one student per shape and seed,
and measures each arm's student and the teacher side by side in one process with ``mamba4net
bench`` (1 torch thread; decisions at batch 1): the whole model on the task's own batch
(throughput at the task's length), the student's streaming step (PyTorch's fused decoder and
onnxruntime) against the teacher's KV-cache step after the same history.

    python benchmarks/student_sweep.py RUN_DIR --shape 12x256 --shape 4x128 [--seeds 0,1,2]
        [--out DIR] [--history 16] [--repeats 30]

A shape ``NxD`` is ``n_layers`` x ``d_model``; the MLP is 2D wide; SSM head size and state are 32
(16 below width 128); the attention layers are the last two from 6 layers up, else the last one.
Writes ``student_sweep.json`` and ``.md`` into ``--out`` (default ``RUN_DIR/student_sweep``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import yaml

from mamba4net.core.bench.command import bench_target
from mamba4net.core.config import validate_data
from mamba4net.core.io import atomic_write_text, write_json
from mamba4net.core.pipeline import run_pipeline
from mamba4net.core.runs import RunDir
from mamba4net.core.stats import mean_interval


def student_node(shape: str, base: dict) -> dict:
    n, d = (int(v) for v in shape.lower().split("x"))
    small = d < 128
    return {**base, "n_layers": n, "d_model": d, "d_intermediate": 2 * d, "d_state": 16 if small else 32,
            "headdim": 16 if small else 32, "attn_heads": 4, "attn_kv_heads": 4,
            "attn_layers": list(range(n - 2, n)) if n >= 6 else [n - 1]}


def arm_config(source: RunDir, shape: str, seed: int) -> dict:
    data = yaml.safe_load(source.config_path.read_text())
    data.update(seed=seed, student=student_node(shape, data["student"]),
                benchmark={**data.get("benchmark", {}), "enabled": False},
                evaluate={**data.get("evaluate", {}), "baselines": []})
    data.setdefault("runtime", {}).update(progress=False, threads=1)  # 2 threads of tiny ops stall on a shared CPU
    return data


def run_arm(source: RunDir, folder: Path, shape: str, seed: int, history: int, repeats: int) -> dict:
    if folder.exists():
        shutil.rmtree(folder)
    # reuse the adapted teacher: its finished stage is skipped on the arm's run
    shutil.copytree(source.checkpoints / "adapt_teacher", folder / "checkpoints" / "adapt_teacher")
    loaded = validate_data(arm_config(source, shape, seed), source=str(source.config_path))
    t0 = time.perf_counter()
    run_pipeline(loaded, folder)
    seconds = time.perf_counter() - t0
    results = json.loads((folder / "results.json").read_text())
    _, bench = bench_target(folder, ["runtime.threads=1"], out=folder / "bench", progress=False,
                            plan_args={"seq_lens": [256], "history_lens": [history], "repeats": repeats,
                                       "memory": False})
    metric = results["metric"]
    lat = {r["series"]: r for r in bench["latency"] if r["status"] == "ok"}
    ratios = bench["ratios"]
    return {"shape": shape, "seed": seed, "metric": metric, "higher_is_better": results["higher_is_better"],
            "student": results["models"]["student"][metric], "teacher": results["models"]["teacher"][metric],
            "params": bench["models"]["student"]["params"], "teacher_params": bench["models"]["teacher"]["params"],
            "task_batch_throughput_ratio": ratios.get("task_batch_throughput_student_over_teacher"),
            "step_ms": lat["student_step"]["median_ms"],
            "onnx_step_ms": lat.get("student_onnx_step", {}).get("median_ms"),
            "teacher_kv_step_ms": lat.get("teacher_kv_step", {}).get("median_ms"),
            "load_average": bench["setup"].get("load_average_start"), "run_seconds": round(seconds, 1)}


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of the 95% Student-t interval of the mean over seeds (0 for one)."""
    return mean_interval([float(v) for v in values])


def table(arms: list[dict], history: int) -> str:
    metric = arms[0]["metric"]
    better = "higher" if arms[0]["higher_is_better"] else "lower"
    lines = [f"| student | parameters | test {metric} (mean ± 95% CI over seeds; {better} is better) | "
             f"vs teacher | seeds | "
             f"task-batch throughput / teacher | step ms (PyTorch) | step ms (onnxruntime) | teacher KV step ms "
             f"(history {history}) | KV step / student step |", "|---" * 10 + "|"]
    teacher = float(np.mean([a["teacher"] for a in arms]))
    for shape in dict.fromkeys(a["shape"] for a in arms):
        rows = [a for a in arms if a["shape"] == shape]
        m, ci = mean_ci([a["student"] for a in rows])
        step, onnx, kv = (float(np.median([a[k] for a in rows if a[k] is not None] or [np.nan]))
                          for k in ("step_ms", "onnx_step_ms", "teacher_kv_step_ms"))
        tput = float(np.median([a["task_batch_throughput_ratio"] for a in rows]))
        lines.append(f"| {shape} | {rows[0]['params'] / 1e6:.2f} M | {m:.4f} ± {ci:.4f} | {100 * (m - teacher) / abs(teacher):+.1f}% | "
                     f"{len(rows)} | {tput:.1f}x | {step:.3f} | {onnx:.3f} | {kv:.2f} | {kv / step:.1f}x |")
    return "\n".join(lines) + f"\n\nTeacher test {metric}: {teacher:.4f} ({arms[0]['teacher_params'] / 1e6:.1f} M parameters).\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--shape", action="append", required=True, help="n_layers x d_model, e.g. 4x128")
    parser.add_argument("--seeds", default="0", help="training seeds of each shape, e.g. 0,1,2")
    parser.add_argument("--out", default=None)
    parser.add_argument("--history", type=int, default=16, help="tokens of history before the timed decision")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    source = RunDir(args.run_dir)
    out = Path(args.out or source.root / "student_sweep")
    out.mkdir(parents=True, exist_ok=True)
    arms = []
    for shape in args.shape:
        for seed in (int(s) for s in args.seeds.split(",")):
            arms.append(run_arm(source, out / f"{shape}-seed{seed}", shape, seed, args.history, args.repeats))
            write_json(out / "student_sweep.json", {"source": str(source.root), "arms": arms})
            print(json.dumps(arms[-1]), flush=True)
    header = (f"Source run `{source.root}` (its adapted teacher, its distillation section); machine: "
              f"{os.cpu_count()} CPUs, 1 torch thread; command: `python benchmarks/student_sweep.py "
              f"{args.run_dir} {' '.join('--shape ' + s for s in args.shape)} --seeds {args.seeds}`.\n\n")
    text = header + table(arms, args.history)
    atomic_write_text(out / "student_sweep.md", text)
    print(text)


if __name__ == "__main__":
    main()
