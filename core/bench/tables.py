"""``bench.md``: a bench.json as Markdown tables (size, throughput, memory, streaming latency).

One column per measured role (the teacher first), and one ratio column per student against the
teacher; with the built-in method's two roles the headers read "teacher", "student" and
"student / teacher".
"""

from __future__ import annotations

from mamba4net.core.bench.plan import teacher_and_students
from mamba4net.core.bench.sweep import KV_STEP, ONNX_STEP, REENCODE, STEP, series_name


def mib(n) -> str:
    return "" if n is None else f"{n / 2**20:.2f} MiB"


def _num(v, fmt: str = "{:.4g}") -> str:
    return "" if v is None else fmt.format(v)


def _x(v) -> str:
    return "" if v is None else f"{v:.3g}x"


def _roles(bench: dict) -> tuple[str | None, list[str], list[str]]:
    """(teacher, students, every measured role in column order)."""
    teacher, students = teacher_and_students(bench)
    ordered = ([teacher] if teacher else []) + students
    return teacher, students, ordered + [r for r in bench["models"] if r not in ordered]


def _ratios_of(bench: dict, student: str) -> dict:
    r = bench.get("ratios", {})
    return r.get("by_student", {}).get(student) or (r if r.get("student", "student") == student else {})


def _over(student: str, teacher: str | None) -> str:
    return f"{student} / {teacher}"


def size_table(bench: dict) -> str:
    teacher, students, roles = _roles(bench)
    m = bench["models"]
    rows = [
        ("parameters", "params", "params_student_over_teacher", "{:,}"),
        ("parameters, without unused ones*", "params_without_unused", "params_student_over_teacher_without_unused", "{:,}"),
        ("deployed size (safetensors)", "deploy_bytes", "size_student_over_teacher", None),
        ("deployed size, without unused ones*", "deploy_bytes_without_unused", "size_student_over_teacher_without_unused", None),
        ("LoRA adapters only", "lora_bytes", None, None),
        ("LoRA + encoder + head (what adaptation trained)", "adapter_bytes", None, None),
    ]
    head = roles + [_over(s, teacher) for s in students] if teacher else roles
    lines = ["| | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for label, key, ratio_key, fmt in rows:
        values = [m[r].get(key) for r in roles]
        if all(v is None for v in values):
            continue
        show = (lambda v: _num(v, fmt)) if fmt else mib
        cells = [show(v) for v in values]
        if teacher:
            cells += [_num(_ratios_of(bench, s).get(ratio_key), "{:.4f}") if ratio_key else "" for s in students]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    unused = m.get(teacher, {}).get("unused_params") if teacher else None
    note = (f"\n\\* unused: {unused:,} teacher parameters its forward pass never reads, as the backbone "
            f"reports them (an LLM fed `inputs_embeds` by the task's encoders: its token-embedding table).\n"
            if unused else "\n")
    return "\n".join(lines) + "\n" + note


def task_batch_table(bench: dict) -> str:
    tb = bench.get("task_batch", {})
    if not tb:
        return "_not measured_\n"
    teacher, students, _ = _roles(bench)
    lines = ["| model | batch x tokens | forward ms (median) | tokens / s |", "|---|---|---|---|"]
    for role, row in tb.items():
        lines.append(f"| {role} | {row['batch_size']} x {row['tokens_per_sample']} | {row['forward_ms']:.2f} | "
                     f"{row['tokens_per_s']:.0f} |")
    notes = []
    for s in students:
        ratio = _ratios_of(bench, s).get("task_batch_throughput_student_over_teacher")
        if ratio:
            notes.append(f"{s.capitalize()} / {teacher} throughput on this batch: {_x(ratio)}")
    return "\n".join(lines) + ("\n\n" + "\n\n".join(notes) + "\n" if notes else "\n")


def _cell(r: dict, key: str, fmt: str = "{:.1f}") -> str:
    if not r:
        return ""
    return "skipped" if r["status"] != "ok" else _num(r.get(key), fmt)


def throughput_table(bench: dict) -> str:
    rows = bench.get("throughput", [])
    if not rows:
        return "_not measured_\n"
    teacher, students, roles = _roles(bench)
    roles = [r for r in roles if any(x["role"] == r for x in rows)]
    by = {(r["role"], r["batch_size"], r["seq_len"]): r for r in rows}
    ratio = {s: {(x["batch_size"], x["seq_len"]): x["student_over_teacher"]
                 for x in _ratios_of(bench, s).get("throughput", [])} for s in students}
    # the FLOP bound (teacher FLOPs / student FLOPs) of every point, and measured ratio / bound
    bound = {s: {(x["batch_size"], x["seq_len"]): x["flop_ratio"]
                 for x in _ratios_of(bench, s).get("flop_bound", [])} for s in students}
    bounded = [s for s in students if teacher and bound[s]]
    head = ([f"{r} ms" for r in roles] + [f"{r} tok/s" for r in roles]
            + [_over(s, teacher) for s in students if teacher]
            + [h for s in bounded for h in (f"FLOP bound {_over(s, teacher)}", f"{s}: of bound")]
            + [f"{r} peak mem" for r in roles])
    lines = ["| batch | L | " + " | ".join(head) + " |", "|---" * (len(head) + 2) + "|"]
    for b, length in sorted({(k[1], k[2]) for k in by}):
        got = [by.get((r, b, length), {}) for r in roles]
        measured = {s: ratio[s].get((b, length)) for s in students if teacher}
        cells = ([_cell(x, "median_ms") for x in got] + [_cell(x, "tokens_per_s", "{:.0f}") for x in got]
                 + [_x(measured[s]) for s in students if teacher]
                 + [c for s in bounded for c in (_x(bound[s].get((b, length))), _percent(measured[s], bound[s].get((b, length))))]
                 + [mib(x.get("peak_bytes")) for x in got])
        lines.append(f"| {b} | {length} | " + " | ".join(cells) + " |")
    note = ""
    if bounded and bench.get("flop_count"):
        note = ("\nFLOP bound: " + bench["flop_count"]["convention"] + " \"of bound\" = the measured ratio "
                "as a share of the bound.\n")
    return "\n".join(lines) + "\n" + note


def _percent(measured, bound) -> str:
    return "" if measured is None or not bound else f"{100 * measured / bound:.0f}%"


def latency_table(bench: dict) -> str:
    rows = bench.get("latency", [])
    if not rows:
        return "_not measured_\n"
    teacher, students, _ = _roles(bench)
    by = {(r["series"], r["history"]): r for r in rows}
    present = {r["series"] for r in rows}
    step = [(s, series_name(s, STEP)) for s in students if series_name(s, STEP) in present]
    kv = series_name(teacher, KV_STEP) if teacher else None
    re = series_name(teacher, REENCODE) if teacher else None
    cols = [(f"{s} step ms", name) for s, name in step]
    cols += [(f"{s} onnxruntime step ms", series_name(s, ONNX_STEP)) for s in students
             if series_name(s, ONNX_STEP) in present]
    cols += [(f"{teacher} KV-cache step ms", kv), (f"{teacher} re-encode ms", re)] if teacher else []
    single = len(step) == 1
    ratios = []
    for s, name in step:
        if teacher:
            ratios += [("KV / " + ("student" if single and s == "student" else s), kv, name),
                       ("re-encode / " + ("student" if single and s == "student" else s), re, name)]
    states = [(f"{s} state", name) for s, name in step] + ([(f"{teacher} KV cache", kv)] if teacher else [])
    onnx = [s for s in students if series_name(s, ONNX_STEP) in present]
    head = [c for c, _ in cols] + [c for c, _, _ in ratios] + [c for c, _ in states]
    head += [f"{s} onnxruntime session (resident)" for s in onnx]
    lines = ["| history | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]

    def ms(r):
        if not r:
            return ""
        return "skipped" if r["status"] != "ok" else f"{r['median_ms']:.2f}"

    def over(r, s):
        ok = r and s and r["status"] == "ok" and s["status"] == "ok"
        return _x(r["median_ms"] / s["median_ms"]) if ok else ""

    for h in sorted({k[1] for k in by}):
        cells = [ms(by.get((name, h), {})) for _, name in cols]
        cells += [over(by.get((a, h), {}), by.get((b, h), {})) for _, a, b in ratios]
        cells += [mib(by.get((name, h), {}).get("state_bytes")) for _, name in states]
        cells += [mib(by.get((series_name(s, ONNX_STEP), h), {}).get("session_rss_bytes")) for s in onnx]
        lines.append(f"| {h} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def skipped_list(bench: dict) -> str:
    out = []
    for r in bench.get("throughput", []) + bench.get("latency", []):
        if r["status"] != "ok":
            where = f"B={r['batch_size']} L={r['seq_len']}" if "seq_len" in r else f"history {r['history']}"
            out.append(f"- {r.get('series') or r.get('role')} {where}: {r['reason']}")
    return "\n".join(out) + "\n" if out else ""


def setup_line(bench: dict) -> str:
    s, p = bench["setup"], bench["plan"]
    line = (f"Device `{s['device']}` ({s.get('gpu') or s.get('cpu')}), {s['torch_threads']} torch threads "
            f"({s.get('decision_threads', s['torch_threads'])} for the streaming latency), "
            f"torch {s['torch']}, code {s.get('code_version')}; {p['warmup']} warm-up call(s), median of up to {p['repeats']} timed calls per "
            f"point, {p['budget_s']:.0f} s budget per point. Load average at start/end: "
            f"{s.get('load_average_start')} / {s.get('load_average_end')} (above ~0 means other work shared "
            f"the machine: timings are then noisy). Peak memory: {s['memory_method']}.")
    if s.get("teacher_lora_merged"):
        line += " The teacher's LoRA adapters were merged into its weights for the speed measurements."
    return line + "\n"


def bench_markdown(bench: dict, plots: list[str]) -> str:
    src = bench.get("source", {})
    teacher, students, _ = _roles(bench)
    title = "teacher vs student" if (teacher, students) == ("teacher", ["student"]) else \
        f"{teacher} vs {', '.join(students)}"
    parts = [f"# Efficiency: {title}\n"]
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
