"""ABR baselines on fcc-test (fixed start pointers, no delay noise): the simulator's fidelity check.

Scores each rule policy, RobustMPC's variants (NetLLM's one-level-jump search with its chunk-size
offset, then without each of those), always-lowest as a floor and, with ``--pensieve``, the learned
Pensieve-style policy with its default budget. Prints a table and writes ``abr_baselines.json`` and
``.md``. Published (NetLLM, same traces and pointers): BBA 0.735, RobustMPC 0.844.

    python benchmarks/abr_baselines.py [--pensieve] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mamba4net.plugins.abr.baselines import BBA, RateBased, RobustMPC
from mamba4net.plugins.abr.rollout import rollout, summarize
from mamba4net.plugins.abr.task import ABRTask


class Lowest:
    def reset(self, n: int) -> None:
        pass

    def act(self, obs) -> np.ndarray:
        return np.zeros(len(obs.buffer_s), dtype=np.int64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pensieve", action="store_true", help="also train and score the learned baseline")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()

    task = ABRTask()
    policies = {
        "always_lowest": Lowest(),
        "bba": BBA(),
        "rate_based": RateBased(),
        "robust_mpc (default: jump <= 1, NetLLM's size offset)": RobustMPC(),
        "robust_mpc, jump <= 1, true sizes": RobustMPC(genet_sizes=False),
        "robust_mpc, full 6^5 search, NetLLM's size offset": RobustMPC(max_jump=None),
        "robust_mpc, full 6^5 search, true sizes": RobustMPC(max_jump=None, genet_sizes=False),
    }
    fit_s = {}
    if args.pensieve:
        from mamba4net.plugins.abr.baselines.pensieve import Pensieve

        t0 = time.perf_counter()
        learned = Pensieve()
        learned.fit(task)
        policies["pensieve (default budget)"] = learned
        fit_s["pensieve (default budget)"] = round(time.perf_counter() - t0, 1)

    rows = {}
    for name, policy in policies.items():
        if callable(getattr(policy, "fit", None)) and name not in fit_s:
            policy.fit(task)  # rule policies: take the video's chunk sizes
        t0 = time.perf_counter()
        scores = summarize(rollout(task.env("test"), policy))
        rows[name] = {**{k: round(v, 4) for k, v in scores.items()}, "eval_seconds": round(time.perf_counter() - t0, 2)}
        if name in fit_s:
            rows[name]["fit_seconds"] = fit_s[name]
        print(f"{name:55s} QoE {scores['qoe']:.4f}  ({rows[name]['eval_seconds']} s)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "abr_baselines.json").write_text(json.dumps({"split": "fcc-test", "models": rows}, indent=1) + "\n")
    lines = ["| policy | QoE | bitrate Mbps | rebuffer s | smoothness Mbps | eval s |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['qoe']:.3f} | {r['bitrate_mbps']:.3f} | {r['rebuffer_s']:.4f} | "
                     f"{r['smooth_mbps']:.3f} | {r['eval_seconds']} |")
    md = ("# ABR baselines on fcc-test (100 traces, fixed start pointers, no noise)\n\n"
          "Per-chunk QoE = bitrate - 4.3 x rebuffer - |bitrate change| (Mbps, s), mean over chunks 1..47 "
          "and over traces. Published (NetLLM): BBA 0.735, RobustMPC 0.844.\n\n" + "\n".join(lines) + "\n")
    (args.out / "abr_baselines.md").write_text(md)
    print(f"wrote {args.out / 'abr_baselines.md'}")


if __name__ == "__main__":
    main()
