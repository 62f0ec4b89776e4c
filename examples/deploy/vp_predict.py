"""Predict a viewer's head motion from one trace with an exported VP student: onnxruntime and numpy only.

    mamba4net export RUN_DIR                           # an examples/vp.yaml run
    python examples/deploy/vp_predict.py RUN_DIR [--trace CSV]

A trace is a CSV without header (time_s, roll, pitch, yaw; degrees, 5 Hz). Every window of the
last ``his_window`` samples becomes one prediction of the next ``fut_window`` samples; the script
prints the MAE in degrees (wrapped at 360) beside the "head stays still" rule's, and the latency of
one prediction at batch 1, and checks that torch was never imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_decider import Decider  # noqa: E402

SCALE = np.array([180.0, 90.0, 180.0])  # roll, pitch, yaw: degrees per model unit


def wrap(deg: np.ndarray) -> np.ndarray:
    return (deg + 180.0) % 360.0 - 180.0


def main(argv: list[str] | None = None) -> None:
    data = Path(os.environ.get("MAMBA4NET_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--trace", type=Path, default=data / "vp" / "Jin2022" / "video4" / "5Hz" / "simple_5Hz_user83.csv",
                    help="a viewport CSV (default: a test-split trace of Jin2022)")
    args = ap.parse_args(argv)

    decider = Decider(args.run_dir / "deploy" / "student.json")
    his, fut = int(decider.constants["his_window"]), int(decider.constants["fut_window"])
    angles = np.loadtxt(args.trace, delimiter=",", ndmin=2)[:, 1:4]  # (T, 3) degrees
    starts = np.arange(his, len(angles) - fut + 1)
    windows = np.stack([angles[t - his:t] for t in starts])  # (N, his, 3)
    last = windows[:, -1]  # (N, 3)
    history = (wrap(windows - last[:, None]) / SCALE).astype(np.float32)
    inputs = {"history": history}
    if "history_abs" in decider.manifest["inputs"]:
        inputs["history_abs"] = (windows / SCALE).astype(np.float32)
    offsets = decider.decide(**inputs)  # (N, fut, 3)
    pred = wrap(last[:, None] + offsets * SCALE)
    truth = np.stack([angles[t:t + fut] for t in starts])
    mae = np.abs(wrap(pred - truth)).mean()
    still = np.abs(wrap(last[:, None] - truth)).mean()
    print(f"{args.trace.name}: {len(starts)} predictions of {fut} samples: MAE {mae:.3f} deg "
          f"(head stays still: {still:.3f} deg)")

    times = []
    for i in range(min(200, len(starts))):
        t0 = time.perf_counter()
        decider.decide(**{k: v[i:i + 1] for k, v in inputs.items()})
        times.append(time.perf_counter() - t0)
    print(f"one window: {statistics.median(times) * 1e3:.3f} ms per prediction (median of {len(times)}, 1 thread)")
    print("torch imported:", "torch" in sys.modules)


if __name__ == "__main__":
    main()
