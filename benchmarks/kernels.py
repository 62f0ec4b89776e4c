"""Kernel benchmark: every available implementation of each registry op, side by side, per shape.

    python benchmarks/kernels.py                       # CPU, the VP student's shapes, L = 1024..8192
    python benchmarks/kernels.py --device cuda         # on a GPU machine (also: bandwidth vs peak)
    python benchmarks/kernels.py --lengths 1024 --chunks 16 64 --repeats 5 --threads 2

For each op and shape it times every implementation the kernel registry offers on the device (plus,
for ``ssd_scan``, transformers' Mamba-2 PyTorch chunked scan on the same inputs), checks each output
against the op's reference, and reports the time and the speed-up over the reference
(ref_ms / ms; > 1 is faster). Writes ``kernels_<device>.json`` and ``.md`` (or ``--name``) to ``--out``.

Shapes are those of the VP student of the recorded results (d_model 256, expand 2 -> 16 heads of
P = 32, d_state N = 32, 1 group, batch 1, conv over 576 channels, width 4): today's default VP
student (examples/vp.yaml, d_model 128) has half the heads and 320 conv channels.

Times are the best of ``--repeats`` runs after a warm-up (the sequential reference: ``--ref-repeats``).
On a shared machine they are noisy: the JSON records the load average at the start and the end, and
``--threads 1 --clock process`` (CPU time of this process) keeps other jobs out of the ratios.
On a GPU, achieved memory bandwidth = (bytes of every input read once + every output written once)
/ time, as a fraction of the device's peak (``--peak-gbps``, or a table of known devices); on a CPU
it is not measured (null).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

# peak DRAM bandwidth in GB/s by device-name fragment (vendor data sheets)
PEAK_GBPS = {"H200": 4800.0, "H100 SXM": 3350.0, "H100 PCIe": 2000.0, "H100": 3350.0,
             "A100-SXM4-80GB": 2039.0, "A100 80GB PCIe": 1935.0, "A100": 1555.0, "L4": 300.0}

REFERENCE = {"ssd_scan": "ssd_scan_torch_ref", "ssd_step": "ssd_step_torch",
             "causal_conv1d": "causal_conv1d_torch", "kd_loss": "kd_loss_torch"}

H, P, N, G, CONV_DIM, CONV_K = 16, 32, 32, 1, 576, 4  # the VP student's mixer


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_ms(fn: Callable[[], Any], device: str, repeats: int, clock: str = "wall") -> float:
    """Best time of ``repeats`` calls after one warm-up call, in ms. ``clock="process"`` counts this
    process's CPU time instead of wall time: with one thread, robust to other jobs on the machine."""
    now = time.perf_counter if clock == "wall" else time.process_time
    fn()
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = now()
        fn()
        _sync(device)
        best = min(best, now() - t0)
    return best * 1e3


def _nbytes(obj) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (tuple, list)):
        return sum(_nbytes(o) for o in obj)
    return 0


def _max_diff(a, b) -> float:
    import torch

    if isinstance(a, (tuple, list)):
        return max(_max_diff(u, v) for u, v in zip(a, b))
    return (a.float() - b.float()).abs().max().item() if a.numel() else 0.0


def cases(args, device: str):
    """(op, shape label, make_inputs() -> (args, kwargs), train) for every benchmarked shape."""
    import torch
    import torch.nn.functional as F

    def gen(seed):
        return torch.Generator(device=device).manual_seed(seed)

    def scan_inputs(L, chunk, grad):
        g = gen(L)
        x = torch.randn(1, L, H, P, device=device, generator=g, requires_grad=grad)
        dt = F.softplus(torch.randn(1, L, H, device=device, generator=g) - 3.0)  # ~0.05, like init
        A = -torch.empty(H, device=device).uniform_(1.0, 16.0, generator=g)  # mamba_ssm's A range
        B = torch.randn(1, L, G, N, device=device, generator=g, requires_grad=grad)
        C = torch.randn(1, L, G, N, device=device, generator=g, requires_grad=grad)
        D = torch.ones(H, device=device)
        return (x, dt, A, B, C, chunk), {"D": D}

    for L in args.lengths:
        for chunk in args.chunks:
            yield "ssd_scan", f"L={L} chunk={chunk}", lambda L=L, c=chunk: scan_inputs(L, c, False), False
            if L <= args.train_max_len:
                yield ("ssd_scan", f"L={L} chunk={chunk} fwd+bwd",
                       lambda L=L, c=chunk: scan_inputs(L, c, True), True)
        yield ("causal_conv1d", f"L={L} c={CONV_DIM} k={CONV_K}",
               lambda L=L: ((torch.randn(1, L, CONV_DIM, device=device, generator=gen(1)),
                             torch.randn(CONV_DIM, CONV_K, device=device, generator=gen(2)),
                             torch.randn(CONV_DIM, device=device, generator=gen(3))), {}), False)
    for b in args.step_batches:
        yield ("ssd_step", f"batch={b}",
               lambda b=b: ((torch.randn(b, H, P, N, device=device, generator=gen(4)),
                             torch.randn(b, H, P, device=device, generator=gen(5)),
                             torch.rand(b, H, device=device, generator=gen(6)) * 0.1,
                             -torch.rand(H, device=device, generator=gen(7)) * 15 - 1,
                             torch.randn(b, G, N, device=device, generator=gen(8)),
                             torch.randn(b, G, N, device=device, generator=gen(9)),
                             torch.ones(H, device=device)), {}), False)
    for rows, classes in args.kd_shapes:
        for train in (False, True):
            yield ("kd_loss", f"rows={rows} classes={classes}" + (" fwd+bwd" if train else ""),
                   lambda r=rows, c=classes, t=train: (
                       ((torch.randn(r, c, device=device, generator=gen(10)) * 3).requires_grad_(t),
                        torch.randn(r, c, device=device, generator=gen(11)) * 3, 2.0), {}), train)


def _comparators(op: str) -> dict[str, Callable]:
    """Implementations outside the registry measured alongside (same inputs, same semantics)."""
    if op != "ssd_scan":
        return {}
    import inspect

    try:
        from transformers.models.mamba2.modeling_mamba2 import mamba2_chunk_scan
    except ImportError as exc:  # another transformers version: measured without it
        print(f"transformers' Mamba-2 PyTorch scan not measured: {exc}", file=sys.stderr)
        return {}
    # unwrapped: transformers swaps in mamba-ssm's kernel where installed; this is its torch path
    return {"transformers_mamba2_torch": inspect.unwrap(mamba2_chunk_scan)}


def run_case(op, label, make, train, device, args) -> list[dict]:
    import torch

    from mamba4net.core.kernels import available_kernels
    from mamba4net.registry import default_registry

    reg = default_registry().kind("kernels")
    impls = {name: reg.get(name).factory() for name in available_kernels(op, device)}
    impls.update(_comparators(op))
    ref_name = REFERENCE[op]
    inputs, kwargs = make()
    ref_out = impls[ref_name](*inputs, **kwargs)
    rows = []
    for name, fn in impls.items():
        if name == ref_name or "ref" in name:
            repeats = args.ref_repeats
        else:
            repeats = args.repeats

        def call(fn=fn):
            if train:
                out = fn(*inputs, **kwargs)
                (out if out.dim() == 0 else out.square().mean()).backward()
                return out
            with torch.no_grad():
                return fn(*inputs, **kwargs)

        out = call()
        ms = time_ms(call, device, repeats, args.clock)
        moved = _nbytes(inputs) + _nbytes(out)
        gbps = moved / (ms * 1e-3) / 1e9
        peak = args.peak_gbps if device == "cuda" else None
        rows.append({
            "op": op, "shape": label, "impl": name, "ms": round(ms, 3),
            "max_abs_diff_vs_ref": _max_diff(out, ref_out),
            "gbps": round(gbps, 2) if device == "cuda" else None,
            "bandwidth_fraction_of_peak": round(gbps / peak, 4) if peak else None,
        })
    ref_ms = next(r["ms"] for r in rows if r["impl"] == ref_name)
    for r in rows:
        r["speedup_vs_ref"] = round(ref_ms / r["ms"], 2)
    return rows


def to_markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        f"# Kernel benchmark ({meta['device']})", "",
        f"`{meta['command']}`  ",
        f"{meta['device_name']}, torch {meta['torch']}, {meta['threads']} threads, {meta['clock']} "
        f"clock; load average "
        f"{meta['loadavg_start']} at the start, {meta['loadavg_end']} at the end "
        "(a shared machine: ratios within one run are comparable, absolute times are noisy).", "",
        "speed-up = reference time / time (> 1: faster than the op's PyTorch reference: the "
        "sequential scan for ssd_scan). Bandwidth is measured on GPUs only.", "",
        "| op | shape | implementation | ms | speed-up vs ref | max abs diff vs ref | GB/s | of peak |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        bw = "-" if r["gbps"] is None else f"{r['gbps']:.1f}"
        frac = "-" if r["bandwidth_fraction_of_peak"] is None else f"{r['bandwidth_fraction_of_peak']:.1%}"
        lines.append(f"| {r['op']} | {r['shape']} | {r['impl']} | {r['ms']:.2f} | "
                     f"{r['speedup_vs_ref']:.2f}x | {r['max_abs_diff_vs_ref']:.1e} | {bw} | {frac} |")
    return "\n".join(lines) + "\n"


def _pair(text: str) -> tuple[int, int]:
    rows, _, classes = text.partition("x")
    return int(rows), int(classes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--ops", nargs="+", default=list(REFERENCE), choices=list(REFERENCE))
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 8192])
    ap.add_argument("--chunks", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--train-max-len", type=int, default=1024, help="fwd+bwd of the scan up to this L")
    ap.add_argument("--step-batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--kd-shapes", type=_pair, nargs="+", default=[(4096, 6), (256, 32000)],
                    help="ROWSxCLASSES")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ref-repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", default="wall", choices=["wall", "process"],
                    help="process: CPU time of this process (use with --threads 1 on a busy machine)")
    ap.add_argument("--peak-gbps", type=float, default=None, help="device peak; default: known table")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    ap.add_argument("--name", default=None, help="file stem; default kernels_<device>")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from mamba4net.core.progress import progress_bar

    torch.set_num_threads(args.threads)
    device = args.device
    if device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("benchmarks/kernels.py: --device cuda but no CUDA device is visible")
        name = torch.cuda.get_device_name()
        if args.peak_gbps is None:
            args.peak_gbps = next((v for k, v in PEAK_GBPS.items() if k in name), None)
    else:
        name = platform.processor() or platform.machine()
    meta = {
        "device": device, "device_name": name, "torch": torch.__version__, "threads": args.threads,
        "clock": args.clock,
        "command": "python benchmarks/kernels.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "loadavg_start": round(os.getloadavg()[0], 2), "peak_gbps": args.peak_gbps,
    }
    todo = [c for c in cases(args, device) if c[0] in args.ops]
    rows: list[dict] = []
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (args.name or f"kernels_{device}")
    bar = progress_bar(len(todo), "kernels")
    for op, label, make, train in todo:
        rows.extend(run_case(op, label, make, train, device, args))
        bar.update(1)
        print(f"{op} {label}: " + ", ".join(
            f"{r['impl']} {r['ms']:.2f} ms ({r['speedup_vs_ref']:.2f}x)" for r in rows
            if r["op"] == op and r["shape"] == label), flush=True)
        meta["loadavg_end"] = round(os.getloadavg()[0], 2)
        meta["cases_done"] = f"{len({(r['op'], r['shape']) for r in rows})} of {len(todo)}"
        # after every case: a run stopped by a time limit keeps what it measured
        stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
        stem.with_suffix(".md").write_text(to_markdown(meta, rows))
    bar.close()
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
