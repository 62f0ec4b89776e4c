"""PNG plots of a bench.json: throughput vs length (log-log), latency vs history, memory vs length."""

from __future__ import annotations

from pathlib import Path

from mamba4net.core.bench.plan import teacher_and_students
from mamba4net.core.bench.sweep import KV_STEP, ONNX_STEP, REENCODE, STEP
from mamba4net.core.plotting import log2_axes, pyplot, save_figure

TEACHER_COLORS = {REENCODE: "tab:red", KV_STEP: "tab:orange"}
STUDENT_COLORS = ("tab:green", "tab:blue", "tab:purple", "tab:olive", "tab:cyan", "tab:brown", "tab:pink")
MODE_LABEL = {STEP: "recurrent step", ONNX_STEP: "recurrent step in onnxruntime", KV_STEP: "step with KV cache", REENCODE: "re-encode the window"}


def role_colors(bench: dict) -> dict[str, str]:
    """The teacher red, the students green first, then other colours, in their order."""
    teacher, students = teacher_and_students(bench)
    colors = {s: STUDENT_COLORS[i % len(STUDENT_COLORS)] for i, s in enumerate(students)}
    if teacher:
        colors[teacher] = "tab:red"
    return colors


def _ok(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "ok"]


def _by_role_batch(rows: list[dict], key: str) -> dict[tuple[str, int], list[tuple[int, float]]]:
    out: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for r in _ok(rows):
        if r.get(key) is not None:
            out.setdefault((r["role"], r["batch_size"]), []).append((r["seq_len"], r[key]))
    return {k: sorted(v) for k, v in out.items()}


def _lines(ax, series: dict, colors: dict[str, str], scale: float = 1.0) -> None:
    batches = sorted({b for _, b in series})
    styles = ["-", "--", ":", "-."]
    for (role, b), pts in sorted(series.items()):
        xs, ys = zip(*pts)
        ax.plot(xs, [y * scale for y in ys], styles[batches.index(b) % 4], marker="o", color=colors.get(role),
                label=f"{role}, batch {b}")


def _slope_guides(ax, series: dict) -> None:
    """Faint reference lines of slope 1 (linear) and 2 (quadratic) through the lowest point."""
    pts = [p for v in series.values() for p in v]
    xs = sorted({x for x, _ in pts})
    if len(xs) < 2:
        return
    x0, y0 = min(pts, key=lambda p: (p[0], p[1]))
    for power, label in ((1, "slope 1 (linear)"), (2, "slope 2 (quadratic)")):
        ax.plot(xs, [y0 * (x / x0) ** power for x in xs], color="gray", alpha=0.4,
                linestyle="--" if power == 1 else ":", label=label)


def plot_throughput(bench: dict, path: Path) -> bool:
    series = _by_role_batch(bench.get("throughput", []), "tokens_per_s")
    if not series:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = role_colors(bench)
    _lines(axes[0], series, colors)
    axes[0].set_title("throughput (input tokens / s)")
    axes[0].set_ylabel("tokens / s")
    times = _by_role_batch(bench.get("throughput", []), "median_ms")
    _lines(axes[1], times, colors)
    _slope_guides(axes[1], times)
    axes[1].set_title("time per forward pass: slope 1 = linear, 2 = quadratic")
    axes[1].set_ylabel("ms")
    log2_axes(axes, "sequence length L")
    save_figure(fig, path)
    return True


def _role_mode(row: dict) -> tuple[str, str]:
    """(role, mode) of a latency row (also of bench.json files that only recorded the series)."""
    if "role" in row:
        return row["role"], row["mode"]
    mode = next((m for m in (KV_STEP, REENCODE, ONNX_STEP, STEP) if row["series"].endswith("_" + m)), "")
    return row["series"][: -len(mode) - 1] if mode else row["series"], mode


def plot_latency(bench: dict, path: Path) -> bool:
    rows = _ok(bench.get("latency", []))
    if not rows:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    colors = role_colors(bench)
    for name in dict.fromkeys(r["series"] for r in rows):
        pts = sorted((r["history"], r["median_ms"]) for r in rows if r["series"] == name)
        role, mode = _role_mode(next(r for r in rows if r["series"] == name))
        color = TEACHER_COLORS.get(mode) if colors.get(role) == "tab:red" else colors.get(role)
        ax.plot(*zip(*pts), marker="o", color=color, label=f"{role}: {MODE_LABEL.get(mode, mode)}")
    ax.set_ylabel("ms per decision (median)")
    ax.set_title("streaming latency per decision, batch 1")
    log2_axes([ax], "history length (tokens)", legend_size=8)
    save_figure(fig, path)
    return True


def plot_memory(bench: dict, path: Path) -> bool:
    series = _by_role_batch(bench.get("throughput", []), "peak_bytes")
    series = {k: [(x, y) for x, y in v if y > 0] for k, v in series.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    _lines(ax, series, role_colors(bench), scale=1 / 2**20)
    ax.set_ylabel("peak memory of one forward (MiB)")
    ax.set_title(f"peak memory ({bench['setup']['device']}, increase over the baseline)")
    log2_axes([ax], "sequence length L")
    save_figure(fig, path)
    return True


PLOTS = {"bench_throughput.png": plot_throughput, "bench_latency.png": plot_latency, "bench_memory.png": plot_memory}


def plot_all(bench: dict, folder: Path, keep_existing: bool = False) -> list[Path]:
    """Every plot that has data, written into ``folder``; returns the plots' paths.
    ``keep_existing``: a plot already in the folder is not drawn again."""
    written = []
    for name, fn in PLOTS.items():
        if (keep_existing and (folder / name).exists()) or fn(bench, folder / name):
            written.append(folder / name)
    return written
