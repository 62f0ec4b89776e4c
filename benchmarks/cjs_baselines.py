"""CJS baselines side by side on the same seeded job sequences (TPC-H, Decima setting).

Every scheduler runs the test split's first ``--episodes`` sequences (same jobs, same arrival
times, same duration draws). Prints the table and writes ``cjs_baselines.json`` and ``.md``.
``--decima`` also trains the learned GNN baseline (its own budget) and scores it alongside;
``--decima-param KEY=VALUE`` sets any field of its ``DecimaParams`` (``train_jobs=50``,
``iterations=200``...). ``--valid-limits`` runs every scheduler under Decima's valid limits
(``cluster.limit_above_held``, as ``examples/cjs_200.yaml``).

    python benchmarks/cjs_baselines.py [--episodes 5] [--jobs 200] [--rate 4e-5] [--valid-limits]
        [--decima] [--decima-budget 180] [--decima-param KEY=VALUE ...] [--threads 1]
        [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from pydantic import ValidationError

from mamba4net.core.errors import ConfigError
from mamba4net.core.yamlio import apply_override
from mamba4net.plugins.cjs.baselines import RuleBaseline
from mamba4net.plugins.cjs.config import ClusterParams, DecimaParams
from mamba4net.plugins.cjs.evaluation import evaluate_scheduler
from mamba4net.plugins.cjs.jobs import JobLibrary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--rate", type=float, default=4e-5)
    ap.add_argument("--executors", type=int, default=50)
    ap.add_argument("--decima", action="store_true", help="also train and score the learned baseline")
    ap.add_argument("--decima-budget", type=float, default=180.0, help="seconds of training")
    ap.add_argument("--decima-param", action="append", default=[], metavar="KEY=VALUE",
                    help="a DecimaParams field, e.g. train_jobs=50 (repeatable)")
    ap.add_argument("--valid-limits", action="store_true", help="Decima's valid limits for every scheduler")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    params = ClusterParams(job_arrival_cap=args.jobs, job_arrival_rate=args.rate, num_executors=args.executors,
                           limit_above_held=args.valid_limits)
    library = JobLibrary(params.tpch_dir)
    schedulers = {name: RuleBaseline(name) for name in ("fifo", "fair", "srwf")}
    fit_s = {}
    if args.decima:
        from mamba4net.plugins.cjs.decima import DecimaBaseline

        fields: dict = {}
        try:
            for assignment in args.decima_param:
                apply_override(fields, assignment)  # the same KEY=VALUE (YAML value) parsing as --set
            decima_params = DecimaParams(budget_s=args.decima_budget, **fields)
        except ConfigError as e:
            ap.error(f"--decima-param: {e}")
        except ValidationError as e:
            err = e.errors()[0]
            ap.error(f"--decima-param {'.'.join(map(str, err['loc']))}: {err['msg']}")
        decima = DecimaBaseline(decima_params, cluster=params)
        t0 = time.perf_counter()
        decima.fit(None)
        fit_s["decima"] = time.perf_counter() - t0
        schedulers["decima"] = decima

    rows = {}
    for name, sched in schedulers.items():
        t0 = time.perf_counter()
        r = evaluate_scheduler(sched, params, "test", args.episodes, library=library)
        r["seconds"] = time.perf_counter() - t0
        r["episode_std_s"] = statistics.pstdev(r["episode_avg_jct_s"]) if args.episodes > 1 else 0.0
        if name in fit_s:
            r["fit_seconds"] = fit_s[name]
            r["fit_info"] = schedulers[name].fit_info
        rows[name] = r
        print(f"{name:7s} avg JCT {r['avg_jct_s']:8.1f} s  makespan {r['makespan_s']:8.1f} s  "
              f"util {r['utilisation']:.3f}  decision {r['decision_ms'] * 1000:7.1f} us  ({r['seconds']:.1f} s)",
              flush=True)

    fifo = rows["fifo"]["avg_jct_s"]
    setting = {"episodes": args.episodes, "jobs_per_episode": args.jobs, "arrival_rate_per_ms": args.rate,
               "executors": args.executors, "moving_delay_ms": params.moving_delay,
               "warmup_delay_ms": params.warmup_delay, "limit_above_held": args.valid_limits, "split": "test"}
    if args.decima:
        setting["decima"] = decima_params.model_dump()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cjs_baselines.json").write_text(json.dumps({"setting": setting, "schedulers": rows}, indent=2))
    lines = [
        f"# CJS baselines: {args.episodes} test sequences x {args.jobs} TPC-H jobs, "
        f"{args.executors} executors, Poisson {args.rate:g}/ms",
        "",
        "| scheduler | avg JCT (s) | std over sequences (s) | vs FIFO | makespan (s) | utilisation | decision (us) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['avg_jct_s']:.1f} | {r['episode_std_s']:.1f} | {r['avg_jct_s'] / fifo:.2f}x | "
                     f"{r['makespan_s']:.1f} | {r['utilisation']:.3f} | {r['decision_ms'] * 1000:.1f} |")
    lines += ["", "Decision time: wall time of the scheduler's call per decision (a shared 2-core machine: noisy).", ""]
    (args.out / "cjs_baselines.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
