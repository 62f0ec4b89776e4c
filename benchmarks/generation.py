"""Token-by-token generation: the teacher's KV-cache step against the student's recurrent step.

    python benchmarks/generation.py [--config examples/mohawk_lm.yaml] [--contexts 1024,4096,16384,32768]
                                    [--batches 1,4,16,64] [--budget-gib 16] [--repeats 5]
                                    [--out benchmarks/results/generation_cpu]

For every context length C and batch B: one decoding step of each backbone (the config's teacher
and student, weights as built: speed and memory do not depend on their values) given a history of
C tokens: the teacher's KV cache holds C positions per sequence (filled with random keys and
values: the same tensors a prefill would leave, without spending a prefill per point), the
student's state is its constant-size recurrent state. Recorded: the median step time, tokens per
second (B / step), and the bytes of weights and of the cache or state (exact tensor sizes). A
point whose weights + cache would exceed ``--budget-gib`` is not run: the table says so. For each
model and context: the largest batch whose weights + cache fit the budget (Llamba's "much larger
batches"), from the measured bytes per sequence. Writes ``<out>.json``, ``<out>.md`` and
``<out>.png``; load average and threads beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.replace(",", " ").split()]


def tensor_bytes(obj) -> int:
    from mamba4net.core.bench.sweep import state_bytes

    return state_bytes(obj)


def teacher_cache(teacher, batch: int, context: int):
    """A DynamicCache of ``context`` random positions per layer (what a prefill would leave)."""
    from transformers import DynamicCache

    cfg = teacher.config
    cache = DynamicCache(config=cfg)
    shape = (batch, teacher.num_kv_heads, context, teacher.head_dim)
    for layer in range(teacher.num_layers):
        cache.update(torch.randn(shape, dtype=teacher.dtype), torch.randn(shape, dtype=teacher.dtype), layer)
    return cache


def student_state(student, batch: int):
    state = student.init_state(batch)
    for layer_state in state:  # random contents: a state after some history
        for t in vars(layer_state).values() if hasattr(layer_state, "__dict__") else []:
            if torch.is_tensor(t):
                t.normal_()
    return state


def time_steps(step, repeats: int) -> float:
    step()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "examples" / "mohawk_lm.yaml"))
    ap.add_argument("--contexts", type=_ints, default=[1024, 2048, 4096, 8192, 16384, 32768])
    ap.add_argument("--batches", type=_ints, default=[1, 4, 16, 64])
    ap.add_argument("--budget-gib", type=float, default=16.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generation_cpu"))
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from mamba4net.core.config import load_config
    from mamba4net.registry import default_registry

    loaded = load_config(args.config)
    reg = default_registry()
    with torch.no_grad():
        teacher = reg.get("teachers", loaded.cfg.teacher["name"]).build(loaded.params["teacher"]).eval()
        student = reg.get("students", loaded.cfg.student["name"]).build(loaded.role_params["student"]).eval()
    budget = int(args.budget_gib * 2**30)
    weights = {"teacher": tensor_bytes(dict(teacher.state_dict())),
               "student": tensor_bytes(dict(student.state_dict()))}
    per_token_kv = 2 * teacher.num_layers * teacher.num_kv_heads * teacher.head_dim * torch.finfo(teacher.dtype).bits // 8
    per_seq_state = tensor_bytes(student.init_state(1))
    rows, load0 = [], os.getloadavg()
    for context in args.contexts:
        for batch in args.batches:
            for name in ("teacher", "student"):
                need = weights[name] + batch * (per_token_kv * context if name == "teacher" else per_seq_state)
                row = {"model": name, "context": context, "batch": batch, "bytes_needed": need}
                if need > budget:
                    rows.append({**row, "status": "over budget"})
                    continue
                d = teacher.d_model if name == "teacher" else student.d_model
                x = torch.randn(batch, d)
                with torch.no_grad():
                    if name == "teacher":
                        cache = teacher_cache(teacher, batch, context)
                        held = tensor_bytes(cache)

                        def step():
                            teacher.step_cached(x, cache)
                            cache.crop(-1)  # the history stays at C positions
                    else:
                        state = student_state(student, batch)
                        held = tensor_bytes(state)

                        def step():
                            student.step(x, state)
                    seconds = time_steps(step, args.repeats)
                rows.append({**row, "status": "ok", "step_ms": seconds * 1e3, "tokens_per_s": batch / seconds,
                             "state_bytes": held, "memory_bytes": weights[name] + held})
                print(f"{name:8s} C={context:6d} B={batch:3d}: {seconds * 1e3:8.2f} ms/step, "
                      f"{batch / seconds:9.1f} tok/s, cache/state {held / 2**20:9.1f} MiB", flush=True)
                del x
                if name == "teacher":
                    del cache
    largest = {name: {c: int(max(0, (budget - weights[name]) //
                                 (per_token_kv * c if name == "teacher" else per_seq_state)))
                      for c in args.contexts} for name in ("teacher", "student")}
    out = {"config": args.config, "budget_bytes": budget, "weights_bytes": weights,
           "teacher_kv_bytes_per_token_per_sequence": per_token_kv, "student_state_bytes_per_sequence": per_seq_state,
           "largest_batch_within_budget": largest, "rows": rows,
           "setup": {"threads": args.threads, "load_average_start": load0, "load_average_end": os.getloadavg(),
                     "torch": torch.__version__, "repeats": args.repeats, "cpu_count": os.cpu_count()}}
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    path.with_suffix(".md").write_text(markdown(out))
    plot(out, path.with_suffix(".png"))
    print(markdown(out))
    return 0


def markdown(out: dict) -> str:
    gib = 2**30
    lines = [f"Generation, one decoding step per token; `{Path(out['config']).name}`'s teacher and student; "
             f"budget {out['budget_bytes'] / gib:.0f} GiB; {out['setup']['threads']} threads; load average "
             f"{out['setup']['load_average_start']} -> {out['setup']['load_average_end']}.", "",
             f"Weights: teacher {out['weights_bytes']['teacher'] / 2**20:.0f} MiB, student "
             f"{out['weights_bytes']['student'] / 2**20:.0f} MiB. Teacher KV cache: "
             f"{out['teacher_kv_bytes_per_token_per_sequence'] / 1024:.1f} KiB per token per sequence; student "
             f"state: {out['student_state_bytes_per_sequence'] / 2**20:.2f} MiB per sequence, whatever the context.", "",
             "| context | batch | teacher ms/step | teacher tok/s | teacher memory | student ms/step | student tok/s | student memory |",
             "|---|---|---|---|---|---|---|---|"]
    by = {(r["model"], r["context"], r["batch"]): r for r in out["rows"]}
    for c, b in sorted({(r["context"], r["batch"]) for r in out["rows"]}):
        cells = []
        for m in ("teacher", "student"):
            r = by[(m, c, b)]
            if r["status"] != "ok":
                cells += [r["status"], "", f"{r['bytes_needed'] / gib:.1f} GiB needed"]
            else:
                cells += [f"{r['step_ms']:.1f}", f"{r['tokens_per_s']:.0f}", f"{r['memory_bytes'] / gib:.2f} GiB"]
        lines.append(f"| {c} | {b} | " + " | ".join(cells) + " |")
    lines += ["", f"Largest batch whose weights + cache fit {out['budget_bytes'] / gib:.0f} GiB:", "",
              "| context | teacher | student |", "|---|---|---|"]
    for c in sorted(out["largest_batch_within_budget"]["teacher"], key=int):
        lines.append(f"| {c} | {out['largest_batch_within_budget']['teacher'][c]} | "
                     f"{out['largest_batch_within_budget']['student'][c]} |")
    return "\n".join(lines) + "\n"


def plot(out: dict, path: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from mamba4net.core.plotting import log2_axes, pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ok = [r for r in out["rows"] if r["status"] == "ok"]
    colors = {"teacher": "tab:red", "student": "tab:green"}
    for m in ("teacher", "student"):
        pts = sorted((r["context"], r["memory_bytes"] / 2**20) for r in ok if r["model"] == m and r["batch"] == 1)
        if pts:
            axes[0].plot(*zip(*pts), marker="o", color=colors[m], label=f"{m}, batch 1")
        for b, style in zip(sorted({r["batch"] for r in ok}), ["-", "--", ":", "-."]):
            pts = sorted((r["context"], r["tokens_per_s"]) for r in ok if r["model"] == m and r["batch"] == b)
            if pts:
                axes[1].plot(*zip(*pts), style, marker="o", color=colors[m], label=f"{m}, batch {b}")
        largest = out["largest_batch_within_budget"][m]
        axes[2].plot([int(c) for c in largest], [max(v, 0.5) for v in largest.values()], marker="o", color=colors[m], label=m)
    axes[0].set_title("memory of one sequence (weights + cache/state)")
    axes[0].set_ylabel("MiB")
    axes[1].set_title("generated tokens / s")
    axes[2].set_title(f"largest batch within {out['budget_bytes'] / 2**30:.0f} GiB")
    log2_axes(axes, "context (tokens)")
    save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
