"""A student's share of the FLOP bound against a bigger teacher at one length, with the two
models' forward passes interleaved call by call.

    python benchmarks/interleaved_share.py [--config examples/vp.yaml] [--against teacher.num_layers=30]
        [--seq-len 1024] [--rounds 8] [--set KEY=VALUE ...] [--out FILE.json]

``mamba4net bench`` measures each point's teacher calls, then its student calls: at L = 1024 the
30-layer teacher's calls fill about 13 s and the student's about 0.15 s, so a slow moment of a
shared machine can land on one model only. Here every round times one teacher forward, then as
many student forwards as fit in the same wall time (their median), and reports the round's
ratio against the FLOP ratio (the bench's counting: :data:`mamba4net.core.bench.flops.BOUND_CONVENTION`).
The median over rounds is the headline; the spread over rounds says how much a single
measurement can move. Both models are built fresh from the config (the teacher with the
``--against`` overrides, LoRA merged), as ``mamba4net bench --against`` builds them; batch 1.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "vp.yaml"))
    ap.add_argument("--against", action="append", default=None, help="teacher.KEY=VALUE (repeatable)")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override, e.g. runtime.kernels.ssd_scan=ssd_scan_torch_chunked (repeatable)")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/interleaved_share_vp_L<seq-len>_cpu.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    against = args.against or ["teacher.num_layers=30"]

    from mamba4net.core.bench.command import _against_config  # the bench's checks of --against
    from mamba4net.core.bench.flops import flops_at
    from mamba4net.core.bench.run import _cpu_name, _load, backbone_flop_curve
    from mamba4net.core.config import load_config
    from mamba4net.core.context import RunContext
    from mamba4net.core.kernels import available_kernels
    from mamba4net.core.model import build_netmodel
    from mamba4net.core.runs import RunDir
    from mamba4net.core.runtime import apply_runtime
    from mamba4net.registry import default_registry

    reg = default_registry()
    threads = [f"runtime.threads={args.threads}", *args.overrides]
    loaded = load_config(args.config, threads, registry=reg)
    device = apply_runtime(loaded)
    with tempfile.TemporaryDirectory(prefix="mamba4net-share-") as tmp:
        ctx = RunContext(loaded, reg, run=RunDir(tmp), out=RunDir(tmp), device=device)
        teacher = build_netmodel(reg, _against_config(Path(args.config), threads, against, loaded, reg), "teacher",
                                 ctx.task, loaded.cfg.seed).eval().backbone
        teacher.merge_lora()
        student = ctx.model("student").eval().backbone
    L = args.seq_len
    # what the student's scan runs: the config's choice, else the registry's best on this device
    scan = loaded.cfg.runtime.kernels.get("ssd_scan") or available_kernels("ssd_scan", device.type)[0]
    flop_ratio = flops_at(backbone_flop_curve("teacher", teacher, device), L) / \
        flops_at(backbone_flop_curve("student", student, device), L)
    xt, xs = torch.randn(1, L, teacher.d_model), torch.randn(1, L, student.d_model)
    load0 = _load()
    rounds = []
    with torch.no_grad():
        teacher(xt), student(xs), student(xs)  # warm-up
        for r in range(args.rounds):
            t0 = time.perf_counter()
            teacher(xt)
            t_ms = 1e3 * (time.perf_counter() - t0)
            s_times, t1 = [], time.perf_counter()
            while time.perf_counter() - t1 < t_ms / 1e3:
                t2 = time.perf_counter()
                student(xs)
                s_times.append(1e3 * (time.perf_counter() - t2))
            s_ms = statistics.median(s_times)
            rounds.append({"teacher_ms": t_ms, "student_ms": s_ms, "student_calls": len(s_times),
                           "share": t_ms / s_ms / flop_ratio})
            print(f"round {r + 1}: teacher {t_ms:.0f} ms, student {s_ms:.1f} ms (median of {len(s_times)}), "
                  f"share of the bound {rounds[-1]['share']:.2f}", flush=True)
    t_med = statistics.median(r["teacher_ms"] for r in rounds)
    s_med = statistics.median(r["student_ms"] for r in rounds)
    shares = [r["share"] for r in rounds]
    out = {"command": "python benchmarks/interleaved_share.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "config": os.path.relpath(args.config, ROOT), "against": against, "overrides": args.overrides,
           "ssd_scan": scan, "seq_len": L, "flop_ratio": flop_ratio,
           "teacher_median_ms": t_med, "student_median_ms": s_med, "share_of_medians": t_med / s_med / flop_ratio,
           "share_median_over_rounds": statistics.median(shares), "share_min": min(shares), "share_max": max(shares),
           "rounds": rounds, "machine": {"cpu": _cpu_name(), "threads": args.threads, "torch": torch.__version__,
                                         "load_average_start": load0, "load_average_end": _load()}}
    print(f"FLOP ratio {flop_ratio:.1f}x; measured {t_med / s_med:.1f}x (medians); share of the bound: "
          f"{out['share_of_medians']:.2f} (rounds {min(shares):.2f}-{max(shares):.2f})")
    path = Path(args.out or ROOT / "benchmarks" / "results" / f"interleaved_share_vp_L{L}_cpu.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
