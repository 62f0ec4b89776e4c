"""One pipeline over several training seeds: ``mamba4net run CONFIG --seeds 0,1,2 [--out DIR]``.

Each seed is a run of its own, ``DIR/seed-<k>/`` (the config with ``seed: k``, and ``{seed}`` in a
``--set`` value replaced by k), resumable like any
run (``--resume``: a seed whose folder holds a run is continued, the others start). Then
``DIR/seeds.json`` and ``DIR/seeds.md`` give, for every model present in all of them, the headline
metric's mean over the seeds and the half-width of its 95% Student-t interval (the spread a reader
should expect from retraining), beside each seed's value. A seed whose result is not finite is
listed and left out of the mean; the command then exits 1 after writing everything.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from mamba4net.core.errors import ConfigError, ResultError
from mamba4net.core.io import atomic_write_text, read_json, write_json
from mamba4net.core.pipeline import run_config
from mamba4net.core.stats import mean_interval


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (or a mix) -> the seeds, in order, without repeats."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        one, span = re.fullmatch(r"\d+", part), re.fullmatch(r"(\d+)-(\d+)", part)
        if one:
            seeds.append(int(part))
        elif span and int(span[1]) <= int(span[2]):
            seeds += range(int(span[1]), int(span[2]) + 1)
        else:
            raise ConfigError(f"--seeds: expected non-negative integers like 0,1,2 or 0-4, got {text!r}")
    return list(dict.fromkeys(seeds))


def for_seed(overrides: list[str] | None, seed: int) -> list[str]:
    """The overrides of one seed's run: ``{seed}`` in a value filled in (e.g. a folder per seed,
    ``task.pool.runs=[{dir: runs/abr/seed-{seed}}]``), then ``seed=<seed>``."""
    return [o.replace("{seed}", str(seed)) for o in overrides or []] + [f"seed={seed}"]


def aggregate(runs: dict[int, Path]) -> dict:
    """The headline metric of every model over the runs ``{seed: run folder}``."""
    results = {seed: read_json(root / "results.json") for seed, root in runs.items()}
    first = next(iter(results.values()))
    metric, higher = first["metric"], first["higher_is_better"]
    models = [m for m in first["models"] if all(m in r["models"] for r in results.values())]
    rows = {}
    for model in models:
        per_seed = {seed: r["models"][model].get(metric) for seed, r in results.items()}
        finite = [v for v in per_seed.values() if isinstance(v, (int, float)) and math.isfinite(v)]
        mean, half = mean_interval(finite) if finite else (float("nan"), float("nan"))
        items = [r["models"][model].get(f"{metric}_ci95") for r in results.values()]
        items = [v for v in items if isinstance(v, (int, float)) and math.isfinite(v)]
        rows[model] = {"mean": mean, "ci95": half, "n": len(finite), "per_seed": per_seed,
                       "item_ci95": sum(items) / len(items) if items else None,
                       "not_finite": [s for s, v in per_seed.items() if not (isinstance(v, (int, float)) and math.isfinite(v))]}
    order = sorted(rows, key=lambda m: (rows[m]["n"] == 0, -rows[m]["mean"] if higher else rows[m]["mean"]))
    return {"task": first["task"], "metric": metric, "higher_is_better": higher, "seeds": list(runs),
            "runs": {str(s): str(p) for s, p in runs.items()}, "models": {m: rows[m] for m in order},
            "interval": "95% Student-t interval of the mean over seeds"}


def seeds_markdown(summary: dict) -> str:
    seeds = summary["seeds"]
    better = "higher" if summary["higher_is_better"] else "lower"
    lines = [f"# {summary['task']}: {summary['metric']} over seeds {', '.join(map(str, seeds))} ({better} is better)\n",
             f"| model | mean ± 95% interval over seeds | n | ± over test items | " + " | ".join(f"seed {s}" for s in seeds) + " |",
             "|---" * (4 + len(seeds)) + "|"]
    for model, row in summary["models"].items():
        cells = [f"{v:.4g}" if isinstance(v, (int, float)) and math.isfinite(v) else "**not finite**"
                 for v in row["per_seed"].values()]
        half = row["ci95"] if abs(row["ci95"]) > 1e-9 * max(abs(row["mean"]), 1.0) else 0.0  # float noise of equal seeds
        head = f"{row['mean']:.4g} ± {half:.2g}" if row["n"] else "**not finite**"
        items = f"± {row['item_ci95']:.2g}" if row.get("item_ci95") is not None else ""
        lines.append(f"| {model} | {head} | {row['n']} | {items} | " + " | ".join(cells) + " |")
    lines.append(f"\nInterval: {summary['interval']} (the spread of retraining). \"± over test items\": the "
                 "95% interval of one run's mean over the test set's items (traces, windows or jobs), averaged "
                 "over the seeds (the spread of the test set drawn); each seed's run folder has its detail.")
    return "\n".join(lines) + "\n"


def run_seeds(config: str | Path, out: str | Path, seeds: list[int], overrides: list[str] | None = None,
              resume: bool = False, registry=None) -> dict:
    """Run ``config`` once per seed into ``out/seed-<k>/``, then write ``seeds.json``/``seeds.md``;
    returns the summary. A seed ending in a non-finite result does not stop the others."""
    out = Path(out)
    runs, failed = {}, None
    for seed in seeds:
        root = out / f"seed-{seed}"
        again = resume and (root / "config.yaml").exists()
        try:
            run_config(config, root, for_seed(overrides, seed), resume=again, registry=registry)
        except ResultError as exc:  # everything was written; aggregate, then report it
            failed = failed or exc
        runs[seed] = root
    summary = aggregate(runs)
    write_json(out / "seeds.json", summary)
    atomic_write_text(out / "seeds.md", seeds_markdown(summary))
    if failed is not None:
        raise failed
    return summary
