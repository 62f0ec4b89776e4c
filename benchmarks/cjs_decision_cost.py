"""CJS: what one scheduling decision costs the teacher and the student, side by side, batch 1.

    python benchmarks/cjs_decision_cost.py [--config examples/cjs.yaml] [--episode 0] [--rounds 2]
        [--max-decisions N] [--threads 1] [--out benchmarks/results/cjs_decision_cost_cpu]

The config's teacher and student are built exactly as the pipeline builds them
(``build_netmodel``: the registry's backbone, the task's encoder and head, seeded), with the
weights they start from (the teacher's pretrained LLM layers with fresh LoRA, encoder and head; a
random student): a decision's cost does not depend on what the weights have learned. One seeded
test sequence of the task (``--episode``) is played by four schedulers (:mod:`.policy`):

* ``student_live``: the student streaming (through its streaming decoder), each decision encoded
  by the live path (the active jobs' graph structure kept between decisions, no batch, no
  torch_geometric): the default;
* ``student_batch``: the same, each decision encoded through a one-decision batch (assemble,
  torch_geometric), the way training encodes windows;
* ``teacher``: the teacher re-encoding its context block at every decision;
* ``teacher_kv``: the teacher streaming its block from a KV cache of it (live encoding), what a
  teacher's scheduler does by default since CJS's contexts are blocks.

The two students play the sequence and must take the same decisions (``identical_decisions``);
the teachers are asked at the live student's events while the live student's actions are
applied, so all four are timed on the same decisions; the share of decisions on which the two
teachers agree is reported (``teacher_agreement``: 1.0 but for float-rounding ties). After
``--warmup`` untimed decisions each, they play ``--rounds`` times, interleaved (a change in the
machine's load hits all four). A decision's cost
is the scheduler's call (observation, tokens, backbone, heads), by the wall clock and by the
process's CPU time. A last, separate pass of the live student splits its time into observation,
tokens, decoder builds (one per episode; the reset at each context block counts in the rest), backbone steps, heads and the rest. Writes
``<out>.json`` and ``<out>.md`` with the command, the machine and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _stage(sim, pick):
    job_id, index, limit = pick
    job = next(j for j in sim.jobs if j.id == job_id)
    return job.stages[index], limit


def play(scheduler, make_episode, actions=None, limit=None) -> dict:
    """One episode (at most ``limit`` decisions): ``scheduler`` is asked at every event and timed;
    its answer is applied, or ``actions[i]`` (a recorded (job id, stage index, limit)) when given."""
    sim = make_episode()
    limit = len(actions) if actions is not None else limit
    picks, wall, cpu, cands = [], [], [], []
    while not sim.done and (limit is None or len(picks) < limit):
        cands.append(min(len(sim.runnable_stages()), scheduler.max_stages))
        w0, c0 = time.perf_counter(), time.process_time()
        stage, limit_ = scheduler(sim)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        picks.append((stage.job.id, stage.spec.index, limit_))
        sim.step(*(_stage(sim, actions[len(picks) - 1]) if actions is not None else (stage, limit_)))
    return {"picks": picks, "wall": wall, "cpu": cpu, "candidates": cands}


@contextmanager
def split_timer(scheduler, totals: dict[str, float]):
    """Adds the time spent in each part of the streaming scheduler's decisions to ``totals``:
    ``observe`` (the graph features), ``tokens``, ``decoder_build`` (one per episode; the reset at each context block counts in the rest),
    ``backbone`` (the recurrent steps) and ``heads``."""
    from mamba4net.plugins.cjs import policy
    from mamba4net.plugins.seqpolicy import policy as loop  # where the scheduler builds its decoder

    def timed(name, fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0
        return run

    def decoder_for(*args, **kwargs):
        decoder = timed("decoder_build", make_decoder)(*args, **kwargs)
        decoder.step = timed("backbone", decoder.step)
        if hasattr(decoder, "step_many"):
            decoder.step_many = timed("backbone", decoder.step_many)
        return decoder

    observe, make_decoder = policy.observe, loop.decoder_for
    policy.observe, loop.decoder_for = timed("observe", observe), decoder_for
    scheduler.decoder = None  # a scheduler keeps its decoder between episodes: built again, timed
    scheduler.decision_tokens = timed("tokens", scheduler.decision_tokens)  # instance attributes shadow the methods
    scheduler.model.head.scores = timed("heads", scheduler.model.head.scores)
    try:
        yield
    finally:
        policy.observe, loop.decoder_for = observe, make_decoder
        del scheduler.decision_tokens, scheduler.model.head.scores


def summary(run: dict) -> dict:
    ms = [1e3 * t for t in run["wall"]]
    cpu = [1e3 * t for t in run["cpu"]]
    q = statistics.quantiles(ms, n=10)
    return {"decisions": len(run["picks"]), "timed_decisions": len(ms), "median_ms": statistics.median(ms),
            "mean_ms": statistics.mean(ms), "p10_ms": q[0], "p90_ms": q[-1], "cpu_median_ms": statistics.median(cpu),
            "cpu_mean_ms": statistics.mean(cpu), "median_ms_per_round": run["rounds"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "cjs.yaml"))
    ap.add_argument("--episode", type=int, default=0, help="index of the test sequence")
    ap.add_argument("--max-decisions", type=int, default=None, help="stop the episode after this many")
    ap.add_argument("--warmup", type=int, default=20, help="decisions each scheduler takes untimed first")
    ap.add_argument("--rounds", type=int, default=2, help="times each scheduler plays the sequence")
    ap.add_argument("--target-return", type=float, default=None,
                    help="job-seconds asked for (default -100 per job); immaterial to the cost")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="the run seed the models are built with")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "cjs_decision_cost_cpu"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    print(f"load average at the start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; {args.threads} thread(s)",
          flush=True)

    from mamba4net.core.bench.run import _cpu_name  # the bench's own description of the CPU
    from mamba4net.core.config import load_config
    from mamba4net.core.model import build_netmodel
    from mamba4net.plugins.cjs.evaluation import SPLIT_SEEDS, episode_jobs, make_sim
    from mamba4net.plugins.cjs.policy import SequenceScheduler
    from mamba4net.registry import default_registry

    loaded = load_config(args.config)
    reg = default_registry()
    task = reg.get("tasks", loaded.cfg.task["name"]).build(loaded.params["task"])
    p = task.params
    target = args.target_return if args.target_return is not None else -100.0 * p.eval_jobs
    models = {role: build_netmodel(reg, loaded, role, task, args.seed).eval() for role in ("teacher", "student")}
    params = {role: sum(t.numel() for t in m.parameters()) for role, m in models.items()}
    kw = dict(window=p.window, max_stages=p.max_stages, limits=task.limits, return_scale=p.return_scale,
              target_return=target)
    schedulers = {
        "student_live": SequenceScheduler(models["student"], mode="stream", encoding="live", **kw),
        "student_batch": SequenceScheduler(models["student"], mode="stream", encoding="batch", **kw),
        "teacher": SequenceScheduler(models["teacher"], mode="reencode", **kw),
        "teacher_kv": SequenceScheduler(models["teacher"], mode="stream", **kw),
    }
    seed = SPLIT_SEEDS["test"] + args.episode
    jobs = episode_jobs(p.cluster, task.library, seed, p.eval_jobs)

    def episode():
        return make_sim(p.cluster).reset(jobs, seed=seed)

    runs: dict[str, dict] = {name: {"picks": None, "wall": [], "cpu": [], "candidates": [], "rounds": []}
                             for name in schedulers}
    with torch.no_grad():
        for name, sched in schedulers.items():
            play(sched, episode, limit=args.warmup)
        for r in range(args.rounds):  # interleaved, so that a change in the machine's load hits all four
            for name, sched in schedulers.items():
                follow = name.startswith("teacher")  # asked at the live student's events, its actions applied
                run = play(sched, episode, actions=runs["student_live"]["picks"] if follow else None,
                           limit=args.max_decisions)
                if runs[name]["picks"] is None:
                    runs[name]["picks"] = run["picks"]
                elif run["picks"] != runs[name]["picks"] and not follow:
                    raise RuntimeError(f"{name} decided differently in round {r + 1}: not deterministic")
                for key in ("wall", "cpu", "candidates"):
                    runs[name][key] += run[key]
                runs[name]["rounds"].append(1e3 * statistics.median(run["wall"]))
                print(f"round {r + 1} {name:14s} {len(run['wall'])} decisions: median "
                      f"{1e3 * statistics.median(run['wall']):.2f} ms", flush=True)
        parts: dict[str, float] = {}
        with split_timer(schedulers["student_live"], parts):  # a separate pass: the timers cost a little
            split_run = play(schedulers["student_live"], episode, limit=args.max_decisions)
    identical = runs["student_live"]["picks"] == runs["student_batch"]["picks"]
    pairs = list(zip(runs["teacher"]["picks"], runs["teacher_kv"]["picks"]))
    agreement = sum(a == b for a, b in pairs) / max(len(pairs), 1)
    rows = {name: summary(run) for name, run in runs.items()}
    t = rows["teacher"]
    ratios = {name: {"median": t["median_ms"] / r["median_ms"], "mean": t["mean_ms"] / r["mean_ms"],
                     "cpu_median": t["cpu_median_ms"] / r["cpu_median_ms"],
                     "median_per_round": [a / b for a, b in zip(t["median_ms_per_round"], r["median_ms_per_round"])]}
              for name, r in rows.items() if name != "teacher"}
    kv = rows["teacher_kv"]
    kv_over_student = {"median": kv["median_ms"] / rows["student_live"]["median_ms"],
                       "cpu_median": kv["cpu_median_ms"] / rows["student_live"]["cpu_median_ms"]}
    n_split = len(split_run["wall"])
    split = {k: 1e3 * v / n_split for k, v in parts.items()}
    split["rest"] = 1e3 * statistics.mean(split_run["wall"]) - sum(split.values())
    cands = runs["student_live"]["candidates"]
    out = {
        "command": "python benchmarks/cjs_decision_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": os.path.relpath(args.config, ROOT), "test_sequence": args.episode, "sequence_seed": seed,
        "jobs": p.eval_jobs, "window": p.window, "max_stages": p.max_stages, "rounds": args.rounds,
        "mean_candidates_per_decision": statistics.mean(cands), "parameters": params,
        "identical_decisions": identical, "teacher_agreement": agreement, "schedulers": rows,
        "teacher_over_student": ratios, "teacher_kv_over_student_live": kv_over_student,
        "student_live_split_mean_ms": split,
        "machine": {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "threads": args.threads,
                    "torch": torch.__version__, "load_average_start": load0, "load_average_end": os.getloadavg()},
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(out))
    print(markdown(out))
    return 0 if identical else 1


LABELS = {"teacher": "teacher, re-encoding its block", "teacher_kv": "teacher, KV cache of its block (default)",
          "student_batch": "student, streaming, batch encoding",
          "student_live": "student, streaming, live encoding (default)"}


def markdown(out: dict) -> str:
    m = out["machine"]
    lines = [
        f"# CJS: cost of one scheduling decision, batch 1 ({Path(out['config']).name})", "",
        f"`{out['command']}`  ",
        f"{m['cpu']}, {m['cpu_count']}-core CPU container, {m['threads']} thread(s), torch {m['torch']}; load average "
        f"{m['load_average_start'][0]:.2f} at the start, {m['load_average_end'][0]:.2f} at the end (a shared machine: "
        f"ratios within one run are comparable, absolute times are noisy).", "",
        f"Test sequence {out['test_sequence']} (seed {out['sequence_seed']}, {out['jobs']} jobs), played by both "
        f"students; the teachers are asked at the live student's events (its actions applied). "
        f"{out['schedulers']['student_live']['decisions']} decisions, {out['mean_candidates_per_decision']:.2f} "
        f"candidate stages per decision on average; {out['rounds']} interleaved rounds, the statistics over all "
        f"of them. Weights as built (the teacher's pretrained layers, everything else untrained: the cost does not "
        f"depend on them). The students step through their "
        f"streaming decoder. Decisions of the two student paths identical: "
        f"**{'yes' if out['identical_decisions'] else 'NO'}**; the two teachers agree on "
        f"**{100 * out['teacher_agreement']:.1f}%** of the decisions.", "",
        "Ratios to the re-encoding teacher: of the wall-clock medians (per round too), of the CPU-time medians and of the "
        "means. When the machine's load exceeds its cores, the wall clock inflates the teacher's long calls more "
        "than the students' short ones (more of them are preempted): the CPU-time ratio is then the fair one.", "",
        "| scheduler | median ms | per round | CPU median ms | mean ms | p10 - p90 ms | teacher / this: median "
        "| per round | CPU median | mean |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("teacher", "teacher_kv", "student_batch", "student_live"):
        r = out["schedulers"][name]
        ratio = out["teacher_over_student"].get(name)
        cells = ["1.00x", "", "1.00x", "1.00x"] if ratio is None else [
            f"{ratio['median']:.2f}x", " / ".join(f"{x:.2f}x" for x in ratio["median_per_round"]),
            f"**{ratio['cpu_median']:.2f}x**", f"{ratio['mean']:.2f}x"]
        rounds = " / ".join(f"{x:.2f}" for x in r["median_ms_per_round"])
        lines.append(f"| {LABELS[name]} | {r['median_ms']:.2f} | {rounds} | {r['cpu_median_ms']:.2f} "
                     f"| {r['mean_ms']:.2f} | {r['p10_ms']:.2f} - {r['p90_ms']:.2f} | " + " | ".join(cells) + " |")
    kv = out["teacher_kv_over_student_live"]
    lines += ["", f"The default teacher (KV cache) over the default student (live): **{kv['median']:.2f}x** by the "
              f"wall-clock medians, {kv['cpu_median']:.2f}x by the CPU-time medians."]
    split = out["student_live_split_mean_ms"]
    total = sum(split.values())
    parts = ("observe", "tokens", "decoder_build", "backbone", "heads", "rest")
    lines += ["", "Where the live student's decision goes (mean ms per decision; the decoder is built once "
              "per episode and reset at each context block):", "",
              "| observation | tokens | decoder build | backbone steps | heads | rest |",
              "|---:|---:|---:|---:|---:|---:|",
              "| " + " | ".join(f"{split.get(k, 0.0):.2f} ({100 * split.get(k, 0.0) / total:.0f}%)"
                               for k in parts) + " |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
