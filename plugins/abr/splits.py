"""Train / valid / test trace splits.

* test  = ``fcc-test`` with NetLLM's fixed start pointers (``meta/fcc-test_mahimahi_ptrs.json``);
  used to compare with published numbers, never for model selection.
* valid = the traces of a seeded ``valid_fraction`` of the FCC *source* traces in ``fcc-train``
  (a source is the FCC trace id: ``trace_<id>_...`` and ``test_fcc_trace_<id>_...`` segments of
  the same measurement belong together), so no validation trace shares a source with training.
  ``fcc-valid`` is not used: all its files are byte-identical to ``fcc-train`` files.
* train = ``fcc-train`` minus the validation sources (the Norway HSDPA logs always stay in train).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .traces import Trace, TraceError, load_traces

FCC_SOURCE = re.compile(r"trace_(\d+)_")


def source_of(name: str) -> str | None:
    """The FCC source id of a trace file name, ``None`` for non-FCC (Norway) traces."""
    m = FCC_SOURCE.search(name)
    return m.group(1) if m and not name.endswith(".log") else None


def _test_ptrs(abr_dir: Path, traces: list[Trace]) -> list[int]:
    path = abr_dir / "traces" / "meta" / "fcc-test_mahimahi_ptrs.json"
    try:
        by_file = json.loads(path.read_text())["by_file"]
    except (OSError, ValueError, KeyError) as exc:
        raise TraceError(f"{path}: cannot read the fixed test start pointers ({exc})") from None
    missing = [t.name for t in traces if t.name not in by_file]
    if missing:
        raise TraceError(f"{path}: no start pointer for {missing[0]} ({len(missing)} traces missing)")
    ptrs = [int(by_file[t.name]) for t in traces]
    for t, p in zip(traces, ptrs):
        if not 1 <= p < len(t):
            raise TraceError(f"{path}: start pointer {p} of {t.name} is outside 1..{len(t) - 1}")
    return ptrs


def load_split(abr_dir: str | Path, split: str, *, valid_fraction: float = 0.15,
               seed: int = 0) -> tuple[list[Trace], list[int] | None]:
    """(traces, fixed start pointers or None) of ``split`` in sorted-name order."""
    abr_dir = Path(abr_dir)
    if split == "test":
        traces = load_traces(abr_dir / "traces" / "test" / "fcc-test")
        return traces, _test_ptrs(abr_dir, traces)
    if split not in ("train", "valid"):
        raise ValueError(f"unknown split {split!r}; splits: train, valid, test")
    traces = load_traces(abr_dir / "traces" / "train" / "fcc-train")
    sources = sorted({s for t in traces if (s := source_of(t.name)) is not None})
    rng = np.random.default_rng(seed)
    n_valid = max(1, round(valid_fraction * len(sources)))
    held_out = {sources[i] for i in rng.choice(len(sources), size=n_valid, replace=False)}
    keep = [t for t in traces if (source_of(t.name) in held_out) == (split == "valid")]
    return keep, None
