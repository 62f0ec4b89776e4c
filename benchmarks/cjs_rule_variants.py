"""CJS: rules around fair at Decima's scale, each paired job by job against fair.

    python benchmarks/cjs_rule_variants.py [--jobs 200] [--train 2] [--test 3]
        [--out benchmarks/results/cjs_rule_variants_cpu]

On the 200-job sequences under Decima's valid limits (``cluster.limit_above_held``) fair is the
best pool policy, and the sequence policies trained on its episodes land on it
(``benchmarks/results/cjs_200_cpu.md``). A stronger rule in the pool would give them more to
imitate. This script measures the obvious candidates, each a one-line change of fair:

* ``wfair_rem`` / ``wfair_tot``: weighted fair, Decima's strongest heuristic (its "tuned weighted
  fair"): job ``j`` is entitled to ``N * w_j / sum(w)`` executors with ``w_j = work_j ** alpha``
  (remaining or total work); the most under-served job is served, limit its entitlement rounded up.
  ``alpha = 0`` is fair; negative alphas favour small jobs, as SRPT does.
* ``fair_x``: fair's share ``ceil(N / jobs)`` scaled by ``x``.
* ``fair_srpt``: among jobs below their share, the one with the least remaining work first.
* ``fair_cpath`` / ``fair_bigstage``: fair's job, but its stage heading the longest remaining
  critical path / holding the most unassigned work, instead of its first runnable one.

Every rule plays the same seeded sequences: the train split's first ``--train`` (the pool's
sequences for pool seed 0) and the test split's first ``--test`` (the pipeline's test set).
Differences are per job against fair (negative: faster), with the 95% interval over jobs.
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mamba4net.core.bench.run import _cpu_name  # the bench's own description of the CPU
from mamba4net.core.stats import mean_interval
from mamba4net.plugins.cjs.config import ClusterParams
from mamba4net.plugins.cjs.evaluation import evaluate_scheduler
from mamba4net.plugins.cjs.jobs import JobLibrary
from mamba4net.plugins.cjs.schedulers import fair

ROOT = Path(__file__).resolve().parents[1]


def weighted_fair(alpha: float, total: bool = False):
    def work(job) -> float:
        return job.spec.total_work if total else job.remaining_work

    def rule(sim):
        weight = {j: max(work(j), 1.0) ** alpha for j in sim.jobs}
        scale = sim.num_executors / sum(weight.values())
        stage = min(sim.runnable_stages(), key=lambda s: (s.job.num_executors / (scale * weight[s.job]),
                                                          s.job.id, s.spec.index))
        return stage, math.ceil(scale * weight[stage.job])
    return rule


def scaled_fair(x: float):
    def rule(sim):
        stage, share = fair(sim)
        return stage, math.ceil(x * share)
    return rule


def fair_srpt(sim):
    stage, share = fair(sim)
    under = [s for s in sim.runnable_stages() if s.job.num_executors < share]
    if under:
        stage = min(under, key=lambda s: (s.job.remaining_work, s.job.id, s.spec.index))
    return stage, share


def critical_path(stage) -> float:
    """Remaining work on the longest path from ``stage`` down to a sink of its job (ms)."""
    stages = stage.job.stages
    memo: dict[int, float] = {}

    def down(i: int) -> float:
        if i not in memo:
            s = stages[i]
            memo[i] = s.remaining_tasks * s.spec.mean_duration + max(map(down, s.spec.children), default=0.0)
        return memo[i]
    return down(stage.spec.index)


def fair_within_job(key):
    """Fair's job, and among its runnable stages the one with the largest ``key``."""
    def rule(sim):
        chosen, share = fair(sim)
        stage = max((s for s in sim.runnable_stages() if s.job is chosen.job), key=lambda s: (key(s), -s.spec.index))
        return stage, share
    return rule


def variants() -> dict[str, object]:
    out: dict[str, object] = {"fair": fair}
    out |= {f"wfair_rem({a:g})": weighted_fair(a) for a in (-1.0, -0.5, -0.25, 0.25, 0.5)}
    out |= {f"wfair_tot({a:g})": weighted_fair(a, total=True) for a in (-1.0, -0.5, -0.25)}
    out |= {f"fair_x({x:g})": scaled_fair(x) for x in (0.75, 1.25, 1.5)}
    out["fair_srpt"] = fair_srpt
    out["fair_cpath"] = fair_within_job(critical_path)
    out["fair_bigstage"] = fair_within_job(lambda s: s.unassigned * s.spec.mean_duration)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--train", type=int, default=2, help="train-split sequences (the pool's)")
    ap.add_argument("--test", type=int, default=3, help="test-split sequences (the pipeline's)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cjs_rule_variants_cpu")
    args = ap.parse_args()

    params = ClusterParams(job_arrival_cap=args.jobs, job_arrival_rate=4e-5, num_executors=50, limit_above_held=True)
    library = JobLibrary(params.tpch_dir)
    splits = {"train": args.train, "test": args.test}
    jct = {name: {split: evaluate_scheduler(rule, params, split, n, library=library, keep_jct=True,
                                            progress=False)["jct_s"] for split, n in splits.items()}
           for name, rule in variants().items()}
    rows = {}
    for name, per_split in jct.items():
        rows[name] = {}
        for split, values in per_split.items():
            diff = mean_interval(a - b for a, b in zip(values, jct["fair"][split]))
            rows[name][split] = {"avg_jct_s": sum(values) / len(values), "vs_fair_s": diff[0], "vs_fair_ci95": diff[1]}
        print(f"{name:16s} " + "  ".join(f"{split} {r['avg_jct_s']:6.2f} ({r['vs_fair_s']:+.2f} ± {r['vs_fair_ci95']:.2f})"
                                         for split, r in rows[name].items()), flush=True)

    setting = {"jobs": args.jobs, "sequences": splits, "executors": params.num_executors,
               "arrival_rate_per_ms": params.job_arrival_rate, "limit_above_held": True, "cpu": _cpu_name()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"setting": setting, "rules": rows}, indent=2))
    lines = [f"# CJS rules around fair: {args.jobs}-job sequences, {params.num_executors} executors, "
             "Decima's valid limits", "",
             "Average JCT (s) and the paired difference per job against fair (negative: faster), 95% interval "
             f"over jobs. train: the pool's {args.train} sequences; test: the pipeline's {args.test}. "
             f"CPU: {setting['cpu']}.", "",
             "| rule | train | vs fair | test | vs fair |", "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[s]['avg_jct_s']:.2f} | {r[s]['vs_fair_s']:+.2f} ± {r[s]['vs_fair_ci95']:.2f}"
                                                for s in splits) + " |")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
