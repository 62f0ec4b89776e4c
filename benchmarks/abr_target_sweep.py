"""ABR: which return should a trained sequence policy be asked for? A sweep over the target.

A return-conditioned policy is asked for ``target_return`` at its first decision (by default the
``target_quantile`` of the training pool's episode returns). This plays a finished run's teacher and
student with the target at several quantiles of that pool, on the validation traces (held-out FCC
sources, what a selection may look at) and on fcc-test, beside the run's baselines as evaluated.

    python benchmarks/abr_target_sweep.py RUN_DIR [--quantiles 0.25,0.5,0.75,0.9,1.0] [--out PATH]

Writes ``PATH.json`` and ``PATH.md`` (default ``RUN_DIR/target_sweep``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from mamba4net.core.config import load_config
from mamba4net.core.context import RunContext
from mamba4net.core.io import atomic_write_text, read_json, write_json
from mamba4net.core.model import eval_mode
from mamba4net.core.runs import RunDir
from mamba4net.core.runtime import apply_runtime
from mamba4net.core.stats import mean_interval


def play(task, model, split: str, target: float) -> dict:
    from mamba4net.plugins.abr.rollout import rollout

    with torch.no_grad(), eval_mode(model):
        episode = rollout(task.env(split), task.as_policy(model, target_return=target))
    mean, half = mean_interval(episode.per_trace_qoe)
    return {"qoe": mean, "qoe_ci95": half}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--quantiles", default="0.25,0.5,0.75,0.9,1.0")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    qs = [float(q) for q in args.quantiles.split(",")]
    run = RunDir(args.run_dir)
    from mamba4net.registry import default_registry

    registry = default_registry()
    loaded = load_config(run.config_path, ["runtime.threads=1"], registry=registry)
    ctx = RunContext(loaded, registry, run=run, out=run, device=apply_runtime(loaded))
    task = ctx.task
    returns = task.pool("train").episode_returns()
    results = read_json(run.results_path)
    rows = {}
    t0 = time.perf_counter()
    for role in ("teacher", "student"):
        model = ctx.model(role)
        for q in qs:
            target = float(np.quantile(returns, q))
            rows[f"{role}@{q:g}"] = {"role": role, "quantile": q, "target_return": target,
                                     **{split: play(task, model, split, target) for split in ("valid", "test")}}
            print(f"{role} q={q:g} target={target:.1f}: valid {rows[f'{role}@{q:g}']['valid']['qoe']:.4f} "
                  f"test {rows[f'{role}@{q:g}']['test']['qoe']:.4f}", flush=True)
    baselines = {n: m["qoe"] for n, m in results["models"].items() if n not in ("teacher", "student")}
    out = Path(args.out) if args.out else run.root / "target_sweep"
    summary = {"run": str(run.root), "quantiles": qs, "pool_episodes": len(returns), "rows": rows,
               "baselines_test_qoe": baselines, "seconds": time.perf_counter() - t0,
               "load_average": os.getloadavg()[0], "default_quantile": task.params.target_quantile}
    write_json(out.with_suffix(".json"), summary)
    lines = [f"# ABR: the return asked for, swept ({run.root.name})\n",
             f"`python benchmarks/abr_target_sweep.py {args.run_dir} --quantiles {args.quantiles}`\n",
             f"Quantiles of the training pool's {len(returns)} episode returns; QoE mean ± 95% interval over "
             "traces (valid: the held-out FCC sources, every one of them; test: fcc-test). "
             f"The run's default: quantile {task.params.target_quantile:g}.\n",
             "| model | quantile | target return | valid QoE | test QoE |", "|---|---|---|---|---|"]
    for r in rows.values():
        lines.append(f"| {r['role']} | {r['quantile']:g} | {r['target_return']:.1f} | {r['valid']['qoe']:.4f} ± "
                     f"{r['valid']['qoe_ci95']:.3f} | {r['test']['qoe']:.4f} ± {r['test']['qoe_ci95']:.3f} |")
    lines.append("\nBaselines on test (the run's own evaluation): "
                 + ", ".join(f"{n} {v:.4f}" for n, v in sorted(baselines.items(), key=lambda kv: -kv[1])))
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
