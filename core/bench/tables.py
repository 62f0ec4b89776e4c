"""``bench.md``: a bench.json as Markdown tables (size, throughput, memory, streaming latency)."""

from __future__ import annotations

from mamba4net.core.bench.sweep import STUDENT_STEP, TEACHER_KV, TEACHER_REENCODE


def mib(n) -> str:
    return "" if n is None else f"{n / 2**20:.2f} MiB"


def _num(v, fmt: str = "{:.4g}") -> str:
    return "" if v is None else fmt.format(v)


def _x(v) -> str:
    return "" if v is None else f"{v:.3g}x"


def size_table(bench: dict) -> str:
    m, r = bench["models"], bench.get("ratios", {})
    t, s = m.get("teacher", {}), m.get("student", {})
    rows = [
        ("parameters", t.get("params"), s.get("params"), r.get("params_student_over_teacher"), "{:,}"),
        ("parameters, without unused ones*", t.get("params_without_unused"), s.get("params_without_unused"),
         r.get("params_student_over_teacher_without_unused"), "{:,}"),
        ("deployed size (safetensors)", t.get("deploy_bytes"), s.get("deploy_bytes"), r.get("size_student_over_teacher"), None),
        ("deployed size, without unused ones*", t.get("deploy_bytes_without_unused"), s.get("deploy_bytes_without_unused"),
         r.get("size_student_over_teacher_without_unused"), None),
        ("LoRA adapters only", t.get("lora_bytes"), None, None, None),
        ("LoRA + encoder + head (what adaptation trained)", t.get("adapter_bytes"), None, None, None),
    ]
    lines = ["| | teacher | student | student / teacher |", "|---|---|---|---|"]
    for label, a, b, ratio, fmt in rows:
        if a is None and b is None:
            continue
        show = (lambda v: _num(v, fmt)) if fmt else mib
        lines.append(f"| {label} | {show(a)} | {show(b)} | {_num(ratio, '{:.4f}')} |")
    unused = t.get("unused_params")
    note = (f"\n\\* unused: {unused:,} teacher parameters its forward pass never reads, as the backbone "
            f"reports them (an LLM fed `inputs_embeds` by the task's encoders: its token-embedding table).\n"
            if unused else "\n")
    return "\n".join(lines) + "\n" + note


def task_batch_table(bench: dict) -> str:
    tb = bench.get("task_batch", {})
    if not tb:
        return "_not measured_\n"
    lines = ["| model | batch x tokens | forward ms (median) | tokens / s |", "|---|---|---|---|"]
    for role, row in tb.items():
        lines.append(f"| {role} | {row['batch_size']} x {row['tokens_per_sample']} | {row['forward_ms']:.2f} | "
                     f"{row['tokens_per_s']:.0f} |")
    ratio = bench.get("ratios", {}).get("task_batch_throughput_student_over_teacher")
    return "\n".join(lines) + (f"\n\nStudent / teacher throughput on this batch: {_x(ratio)}\n" if ratio else "\n")


def throughput_table(bench: dict) -> str:
    rows = bench.get("throughput", [])
    if not rows:
        return "_not measured_\n"
    by = {(r["role"], r["batch_size"], r["seq_len"]): r for r in rows}
    ratio = {(x["batch_size"], x["seq_len"]): x["student_over_teacher"] for x in bench.get("ratios", {}).get("throughput", [])}
    lines = ["| batch | L | teacher ms | student ms | teacher tok/s | student tok/s | student / teacher | "
             "teacher peak mem | student peak mem |", "|---|---|---|---|---|---|---|---|---|"]
    for b, length in sorted({(k[1], k[2]) for k in by}):
        t, s = by.get(("teacher", b, length), {}), by.get(("student", b, length), {})

        def cell(r, key, fmt="{:.1f}"):
            if not r:
                return ""
            return "skipped" if r["status"] != "ok" else _num(r.get(key), fmt)

        lines.append(f"| {b} | {length} | {cell(t, 'median_ms')} | {cell(s, 'median_ms')} | "
                     f"{cell(t, 'tokens_per_s', '{:.0f}')} | {cell(s, 'tokens_per_s', '{:.0f}')} | "
                     f"{_x(ratio.get((b, length)))} | {mib(t.get('peak_bytes'))} | {mib(s.get('peak_bytes'))} |")
    return "\n".join(lines) + "\n"


def latency_table(bench: dict) -> str:
    rows = bench.get("latency", [])
    if not rows:
        return "_not measured_\n"
    by = {(r["series"], r["history"]): r for r in rows}
    lines = ["| history | student step ms | teacher KV-cache step ms | teacher re-encode ms | "
             "KV / student | re-encode / student | student state | teacher KV cache |",
             "|---|---|---|---|---|---|---|---|"]
    for h in sorted({k[1] for k in by}):
        s, kv, re = (by.get((n, h), {}) for n in (STUDENT_STEP, TEACHER_KV, TEACHER_REENCODE))

        def ms(r):
            if not r:
                return ""
            return "skipped" if r["status"] != "ok" else f"{r['median_ms']:.2f}"

        def over(r):
            ok = r and s and r["status"] == "ok" and s["status"] == "ok"
            return _x(r["median_ms"] / s["median_ms"]) if ok else ""

        lines.append(f"| {h} | {ms(s)} | {ms(kv)} | {ms(re)} | {over(kv)} | {over(re)} | "
                     f"{mib(s.get('state_bytes'))} | {mib(kv.get('state_bytes'))} |")
    return "\n".join(lines) + "\n"


def skipped_list(bench: dict) -> str:
    out = []
    for r in bench.get("throughput", []) + bench.get("latency", []):
        if r["status"] != "ok":
            where = f"B={r['batch_size']} L={r['seq_len']}" if "seq_len" in r else f"history {r['history']}"
            out.append(f"- {r.get('role') or r.get('series')} {where}: {r['reason']}")
    return "\n".join(out) + "\n" if out else ""


def setup_line(bench: dict) -> str:
    s, p = bench["setup"], bench["plan"]
    line = (f"Device `{s['device']}` ({s.get('gpu') or s.get('cpu')}), {s['torch_threads']} torch threads, "
            f"torch {s['torch']}, code {s.get('code_version')}; {p['warmup']} warm-up call(s), median of up to {p['repeats']} timed calls per "
            f"point, {p['budget_s']:.0f} s budget per point. Load average at start/end: "
            f"{s.get('load_average_start')} / {s.get('load_average_end')} (above ~0 means other work shared "
            f"the machine: timings are then noisy). Peak memory: {s['memory_method']}.")
    if s.get("teacher_lora_merged"):
        line += " The teacher's LoRA adapters were merged into its weights for the speed measurements."
    return line + "\n"


def bench_markdown(bench: dict, plots: list[str]) -> str:
    src = bench.get("source", {})
    parts = ["# Efficiency: teacher vs student\n"]
    if src:
        parts.append("Source: " + ", ".join(f"{k} `{v}`" for k, v in src.items() if v not in (None, [], "")) + "\n")
    parts += [setup_line(bench), "\n## Size\n", size_table(bench),
              "\n## Whole model on a task batch\n", task_batch_table(bench),
              "\n## Backbone throughput (input tokens per second, synthetic inputs_embeds)\n",
              "The backbone is the part whose cost grows with the sequence length; encoders and heads "
              "are per-token or per-answer layers.\n\n", throughput_table(bench),
              "\n## Streaming: latency per decision vs history length (batch 1)\n", latency_table(bench)]
    skipped = skipped_list(bench)
    if skipped:
        parts += ["\n## Skipped points\n", skipped]
    if plots:
        parts.append("\n" + "\n".join(f"![{p}]({p})" for p in plots) + "\n")
    return "\n".join(parts)
