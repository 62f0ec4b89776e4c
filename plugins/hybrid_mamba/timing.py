"""Quick forward timing of the default student (not a test, not the project's benchmark stage):

    python -m mamba4net.plugins.hybrid_mamba.timing --lengths 256 1024 --threads 2

Batch 1, random weights, no grad; best of ``--repeats``. The reference scan is timed only up to
``--ref-max-len`` (it loops over time steps in Python).
"""

from __future__ import annotations

import argparse
import time


def _best_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1000.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ref-max-len", type=int, default=1024)
    args = ap.parse_args(argv)

    import torch

    from .config import HybridMambaParams
    from .model import HybridMambaBackbone
    from .ssd import ssd_scan_chunked, ssd_scan_ref, ssd_step

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = HybridMambaBackbone(HybridMambaParams()).eval()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"hybrid_mamba defaults: {n_params / 1e6:.2f}M parameters, {torch.get_num_threads()} threads")
    for length in args.lengths:
        x = torch.randn(1, length, model.d_model)
        row = [f"L={length}"]
        with torch.no_grad():
            for name, scan in (("chunked", ssd_scan_chunked), ("ref", ssd_scan_ref)):
                if name == "ref" and length > args.ref_max_len:
                    continue
                model.kernels = {"ssd_scan": scan, "ssd_step": ssd_step}
                reps = args.repeats if name == "chunked" else 1
                row.append(f"{name} {_best_ms(lambda: model(x), reps):.0f} ms")
        print(", ".join(row), flush=True)


if __name__ == "__main__":
    main()
