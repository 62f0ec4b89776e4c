"""CJS: how many decisions a scheduler takes, and how many of them set a job's parallelism limit at
or below the executors the job already holds.

    python benchmarks/cjs_limit_churn.py [RUN_DIR] [--roles student teacher] [--split valid]
        [--jobs 50] [--episode 0] [--out benchmarks/results/cjs_limit_churn_cpu]

In the simulator (:mod:`mamba4net.plugins.cjs.sim`) a step always sends at least one executor. When
the limit it sets is not above what the job holds, that executor runs one task and then, its job
being over the limit, waits idle there: a new scheduling event, a new decision. Decima's agent
cannot do this (its limit choices are masked to levels above the job's executors, ``least_exec_amount``
in its ``actor_agent.py``). Each scheduler here plays one seeded sequence twice: as it is, and
*floored*: its limit raised to the job's executors plus one, which is what the forced executor
amounts to in Decima's setting. Per run: decisions, average JCT and the share of decisions whose
limit is at or below the job's executors (of a job that does not hold every executor; 0 when
floored, by construction). Floored, a sequence policy still conditions its next decisions on the
level it chose (its action token), not on the raised one: a probe of the simulator's semantics,
not a policy trained under Decima's mask.

The rules (fifo, fair, srwf) always run; ``RUN_DIR`` adds a finished CJS run's ``--roles``
(its finished weights, asking for the run's own target return). Writes ``<out>.json``/``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def floored(scheduler):
    """``scheduler`` with each limit raised to the chosen job's executors plus one."""
    def decide(sim):
        stage, limit = scheduler(sim)
        return stage, max(limit, stage.job.num_executors + 1)
    return decide


def play(scheduler, params, jobs, seed) -> dict:
    from mamba4net.plugins.cjs.evaluation import make_sim

    sim = make_sim(params)
    sim.reset(jobs, seed=seed)
    at_or_below = 0
    t0 = time.perf_counter()
    while not sim.done:
        stage, limit = scheduler(sim)
        held = stage.job.num_executors
        at_or_below += held < sim.num_executors and limit <= held  # a job holding them all cannot get more
        sim.step(stage, limit)
    r = sim.result()
    n = r.decisions
    return {"decisions": n, "avg_jct_s": r.avg_jct_s, "decisions_per_job": n / len(r.jct_s),
            "at_or_below_share": at_or_below / n, "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", default=None)
    ap.add_argument("--roles", nargs="*", default=["student"])
    ap.add_argument("--config", default=str(ROOT / "examples" / "cjs_200.yaml"), help="without RUN_DIR")
    ap.add_argument("--split", default="valid", choices=["valid", "test"])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--episode", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cjs_limit_churn_cpu"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(1)

    from mamba4net.core.config import load_config
    from mamba4net.plugins.cjs.evaluation import SPLIT_SEEDS, episode_jobs
    from mamba4net.plugins.cjs.schedulers import RULES
    from mamba4net.registry import default_registry

    reg = default_registry()
    config = Path(args.run_dir) / "config.yaml" if args.run_dir else Path(args.config)
    loaded = load_config(config, ["runtime.threads=1"], registry=reg)
    # name -> a fresh scheduler (a sequence policy keeps its episode's state)
    makers = {name: (lambda rule=rule: rule) for name, rule in RULES.items()}
    if args.run_dir:
        from mamba4net.core.context import RunContext
        from mamba4net.core.runs import RunDir
        from mamba4net.core.runtime import apply_runtime

        run = RunDir(args.run_dir)
        ctx = RunContext(loaded, reg, run=run, out=run, device=apply_runtime(loaded))
        task = ctx.task
        for role in args.roles:
            model = ctx.model(role).eval()
            makers[role] = lambda m=model: task.as_scheduler(m, jobs=args.jobs)
    else:
        task = reg.get("tasks", loaded.cfg.task["name"]).build(loaded.params["task"])
    p = task.params
    seed = SPLIT_SEEDS[args.split] + args.episode
    jobs = episode_jobs(p.cluster, task.library, seed, args.jobs)
    rows = {}
    with torch.no_grad():
        for name, make in makers.items():
            for variant, sched in (("as is", make()), ("floored", floored(make()))):
                rows[f"{name}, {variant}"] = r = play(sched, p.cluster, jobs, seed)
                print(f"{name:8s} {variant:8s} {r['decisions']:6d} decisions, avg JCT {r['avg_jct_s']:6.1f} s, "
                      f"at/below the job's executors {100 * r['at_or_below_share']:4.1f}%, {r['seconds']:.0f} s",
                      flush=True)
    out = {"command": "python benchmarks/cjs_limit_churn.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "config": os.path.relpath(config, ROOT), "split": args.split, "jobs": args.jobs, "sequence_seed": seed,
           "num_executors": p.cluster.num_executors, "rows": rows, "load_average_end": os.getloadavg()}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    from mamba4net.core.bench.run import _cpu_name  # the bench's own description of the CPU

    out["cpu"] = _cpu_name()
    lines = [f"# CJS: decisions and limits at or below a job's executors ({args.split} sequence {args.episode}, "
             f"{args.jobs} jobs)", "", f"`{out['command']}`  ",
             f"{out['cpu']}, 1 thread; the schedulers are deterministic, so these numbers do not depend on the "
             f"machine's load.", "",
             "| scheduler | decisions | per job | avg JCT (s) | limit at/below the job's executors |",
             "|---|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['decisions']} | {r['decisions_per_job']:.0f} | {r['avg_jct_s']:.1f} | "
                     f"{100 * r['at_or_below_share']:.0f}% |")
    path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
