"""Mean and 95% interval of every model's scores over runs of one config with different seeds.

    python benchmarks/aggregate_seeds.py RUN_DIR [RUN_DIR ...] [--keys accuracy,flops_fraction] [--out FILE.md]

Per model and key: the mean over the runs, the 95% Student-t interval of that mean (over seeds),
and, for a metric that is a proportion over test items (accuracy), the mean over the runs of
each run's 95% binomial interval half-width (over items). Writes Markdown (and JSON beside it).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from mamba4net.core.stats import mean_interval


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--keys", default=None, help="score keys (default: the metric and flops_fraction)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    results = [json.loads((r / "results.json").read_text()) for r in args.runs]
    metric = results[0]["metric"]
    keys = args.keys.split(",") if args.keys else [metric, "flops_fraction"]
    models = [m for m in results[0]["models"] if all(m in r["models"] for r in results)]
    higher = results[0]["higher_is_better"]
    summary = {}
    for m in models:
        row = {}
        for k in keys:
            values = [r["models"][m][k] for r in results if r["models"][m].get(k) is not None]
            if len(values) == len(results):
                mean, half = mean_interval(values)
                row[k] = {"mean": mean, "ci95": half, "values": values}
        n = results[0]["models"][m].get("n_samples")
        if metric in row and n and metric == "accuracy":
            row[metric]["items_ci95"] = sum(1.96 * math.sqrt(v * (1 - v) / n) for v in row[metric]["values"]) / len(results)
        summary[m] = row
    order = sorted(summary, key=lambda m: summary[m].get(metric, {}).get("mean", float("nan")), reverse=higher)
    lines = [f"Runs: {', '.join(str(r) for r in args.runs)} ({len(results)} seeds).", "",
             "| model | " + " | ".join(f"{k} (mean ± 95% CI over seeds)" for k in keys) + " |",
             "|---" * (len(keys) + 1) + "|"]
    for m in order:
        cells = []
        for k in keys:
            c = summary[m].get(k)
            if c is None:
                cells.append("")
                continue
            extra = f" (± {c['items_ci95']:.4f} over test items)" if "items_ci95" in c else ""
            cells.append(f"{c['mean']:.4f} ± {c['ci95']:.4f}{extra}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps({"runs": [str(r) for r in args.runs], "models": summary},
                                                            indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
