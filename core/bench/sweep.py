"""The sweeps: throughput vs (batch, length), streaming latency vs history, peak memory.

Each sweep walks its points in increasing cost and runs the roles side by side at every point, so
a machine slowing down affects both models alike. A point whose cost, extrapolated linearly from
the last point measured (a lower bound for attention, which grows faster), exceeds the per-point
budget is skipped and reported as such instead of hanging the run; so is every larger point of a
series once one call alone overran the budget.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

log = logging.getLogger("mamba4net")

from mamba4net.core.bench.measure import sync, time_call
from mamba4net.core.bench.plan import BenchPlan
from mamba4net.core.runtime import decision_threads
from mamba4net.core.streaming import decoder_for

# ways of producing one streaming decision; a latency series is "<role>_<mode>"
STEP = "step"  # a student's recurrent step from a constant-size state
ONNX_STEP = "onnx_step"  # the same step exported to ONNX, run by onnxruntime (CPU)
KV_STEP = "kv_step"  # a teacher's new token against a KV cache of the history
REENCODE = "reencode"  # a teacher encoding the whole window (history + new token) again
MODES = {"student": (STEP, ONNX_STEP), "teacher": (REENCODE, KV_STEP)}  # the KV prefill is judged by the re-encoding


def series_name(role: str, mode: str) -> str:
    return f"{role}_{mode}"


# the series of the built-in method's roles
STUDENT_STEP, TEACHER_KV, TEACHER_REENCODE = series_name("student", STEP), series_name("teacher", KV_STEP), \
    series_name("teacher", REENCODE)
STUDENT_ONNX = series_name("student", ONNX_STEP)


def input_dtype(backbone: nn.Module) -> torch.dtype:
    p = next(backbone.parameters(), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float32


def state_bytes(state: Any) -> int:
    """Bytes of every tensor reachable from a recurrent state or KV cache (each counted once)."""
    seen: set[int] = set()
    total = 0

    def walk(obj: Any, depth: int) -> None:
        nonlocal total
        if depth > 6 or id(obj) in seen:
            return
        seen.add(id(obj))
        if torch.is_tensor(obj):
            total += obj.numel() * obj.element_size()
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v, depth + 1)
        elif dataclasses.is_dataclass(obj) or hasattr(obj, "__dict__"):
            for v in vars(obj).values():
                walk(v, depth + 1)

    walk(state, 0)
    return total


class Budget:
    """Decides which points of one series still fit the per-point time budget."""

    def __init__(self, budget_s: float, calls: int):
        self.budget_ms, self.calls = budget_s * 1e3, calls
        self.last: tuple[float, float] | None = None  # (size, ms per call) of the last point measured
        self.exhausted: str | None = None

    def skip_reason(self, size: float) -> str | None:
        if self.exhausted:
            return self.exhausted
        if self.last is not None:
            last_size, last_ms = self.last
            estimate = last_ms * size / last_size  # linear extrapolation: a lower bound
            if estimate * self.calls > self.budget_ms:
                return (f"estimated >= {estimate / 1e3:.1f} s per call x {self.calls} calls, "
                        f"over the per-point budget of {self.budget_ms / 1e3:.0f} s")
        return None

    def record(self, size: float, ms: float, label: str) -> None:
        self.last = (size, ms)
        if ms > self.budget_ms:
            self.exhausted = f"one call at {label} already took {ms / 1e3:.1f} s, over the per-point budget"


def _smaller_batch_reason(rows: list[dict], keys: dict, plan: BenchPlan) -> str | None:
    """Skip (B, L) when (B', L) with the next smaller batch B' was skipped or, scaled by B / B',
    would not fit the budget."""
    b, sizes = keys["batch_size"], plan.batch_sizes
    if sizes.index(b) == 0:
        return None
    prev = sizes[sizes.index(b) - 1]
    for r in rows:
        if (r["role"], r["batch_size"], r["seq_len"]) == (keys["role"], prev, keys["seq_len"]):
            if r["status"] != "ok":
                return f"skipped at batch {prev} for this length"
            estimate = r["median_ms"] * b / prev
            if estimate * (plan.warmup + 1) > plan.budget_s * 1e3:
                return (f"estimated >= {estimate / 1e3:.1f} s per call from batch {prev}, "
                        f"over the per-point budget of {plan.budget_s:.0f} s")
    return None


def _skipped(reason: str, **keys) -> dict:
    return {**keys, "status": "skipped", "reason": reason}


@torch.no_grad()
def throughput_sweep(backbones: dict[str, nn.Module], plan: BenchPlan, device: torch.device,
                     memory: Callable | None, bar) -> list[dict]:
    """Forward passes over ``(B, L, d_model)`` random inputs: input tokens per second and peak memory."""
    rows: list[dict] = []
    budgets = {(r, b): Budget(plan.budget_s, plan.warmup + 1) for r in backbones for b in plan.batch_sizes}
    for b in plan.batch_sizes:
        for length in plan.seq_lens:
            for role, backbone in backbones.items():
                keys = {"role": role, "batch_size": b, "seq_len": length, "tokens": b * length}
                bar.set_postfix_str(f"{role} B={b} L={length}")
                budget = budgets[(role, b)]
                reason = budget.skip_reason(b * length) or _smaller_batch_reason(rows, keys, plan)
                if reason:
                    log.info("bench %s B=%d L=%d: skipped, %s", role, b, length, reason)
                    rows.append(_skipped(reason, **keys))
                    bar.update(1)
                    continue
                x = torch.randn(b, length, backbone.d_model, device=device, dtype=input_dtype(backbone))
                timing, peak = time_call(lambda: backbone(x), warmup=plan.warmup, repeats=plan.repeats,
                                         budget_s=plan.budget_s, device=device,
                                         memory=memory if plan.memory else None)
                budget.record(b * length, timing.median_ms, f"B={b} L={length}")
                rows.append({**keys, "status": "ok", **timing.as_dict(),
                             "tokens_per_s": round(b * length / (timing.median_ms / 1e3), 2),
                             "peak_bytes": peak})
                log.info("bench %s B=%d L=%d: %.1f ms, %.0f tokens/s", role, b, length, timing.median_ms,
                         rows[-1]["tokens_per_s"])
                del x
                bar.update(1)
    return rows


@torch.no_grad()
def latency_sweep(models: dict[str, tuple[str, nn.Module]], plan: BenchPlan, device: torch.device, bar) -> list[dict]:
    """Per-decision latency in streaming use (batch 1) against the length of the history, for
    ``models`` = {role: (kind, backbone)}.

    Every point runs with ``runtime.decision_threads`` torch threads (1 by default), like a policy's
    decisions. A student's ``step``: one step of its streaming decoder (what a policy decides
    with, :func:`mamba4net.core.streaming.decoder_for`) from the state after the history (its
    ``prefill``); a teacher's ``kv_step``: its ``step_cached`` against a KV cache of the history
    (each timed call appends one position, so the history grows by at most warm-up + repeats
    tokens during a point); a teacher's ``reencode``: a forward pass over the whole window
    (history plus the new token), what a model without a cache does per decision."""
    rows: list[dict] = []
    series = [(role, mode, model) for role, (kind, model) in models.items() if kind == "student" for mode in MODES[kind]]
    series += [(role, mode, model) for role, (kind, model) in models.items() if kind == "teacher" for mode in MODES[kind]]
    budgets = {series_name(r, m): Budget(plan.budget_s, plan.warmup + 1) for r, m, _ in series}
    prefill_budgets = {role: Budget(plan.budget_s, 1) for role in models}
    reencode_ms: dict[tuple[str, int], float] = {}
    onnx: dict[str, dict] = {}  # role -> its exported step's session (made once, at the first point)
    with decision_threads():
        for h in plan.history_lens:
            for role, mode, model in series:
                name = series_name(role, mode)
                bar.set_postfix_str(f"{name} H={h}")
                row = _latency_point(role, mode, model, h, plan, device, budgets[name], prefill_budgets[role],
                                     reencode_ms, onnx)
                rows.append({"series": name, "role": role, "mode": mode, "history": h, **row})
                log.info("bench %s history %d: %s", name, h,
                         f"{row['median_ms']:.2f} ms" if row["status"] == "ok" else "skipped, " + row["reason"])
                bar.update(1)
    return rows


def _latency_point(role, mode, model, h, plan, device, budget, prefill_budget, reencode_ms, onnx) -> dict:
    """One (series, history length) point: its timing row, or a skipped row with the reason."""
    d, dtype = model.d_model, input_dtype(model)
    x = torch.randn(1, d, device=device, dtype=dtype)  # the newest token
    calls = plan.warmup + plan.repeats
    if mode == REENCODE:
        reason = budget.skip_reason(h + 1)
        if reason:
            return {"status": "skipped", "reason": reason}
        window = torch.randn(1, h + 1, d, device=device, dtype=dtype)
        timing, _ = time_call(lambda: model(window), warmup=plan.warmup, repeats=plan.repeats,
                              budget_s=plan.budget_s, device=device)
        budget.record(h + 1, timing.median_ms, f"history {h}")
        reencode_ms[(role, h)] = timing.median_ms
        return {"status": "ok", **timing.as_dict()}

    if mode == STEP:
        if not (hasattr(model, "prefill") and hasattr(model, "step")):
            return {"status": "skipped", "reason": f"{role} has no prefill/step (not a StreamingBackbone)"}
        reason = prefill_budget.skip_reason(h) or budget.skip_reason(1)
        if reason:
            return {"status": "skipped", "reason": "prefill of the history: " + reason}
        history = torch.randn(1, h, d, device=device, dtype=dtype)
        if prefill_budget.last is None:  # the first prefill compiles kernels (GPU): not a time to extrapolate
            model.prefill(history)
            sync(device)
        t0 = time.perf_counter()
        _, state = model.prefill(history)
        sync(device)
        prefill_budget.record(h, (time.perf_counter() - t0) * 1e3, f"history {h}")
        size = state_bytes(state)
        decoder = decoder_for(model, 1, state)  # what a policy decides with (core.streaming)
        timing, _ = time_call(lambda: decoder.step(x), warmup=plan.warmup, repeats=plan.repeats,
                              budget_s=plan.budget_s, device=device)
        budget.record(1, timing.median_ms, f"history {h}")
        return {"status": "ok", **timing.as_dict(), "state_bytes": size}

    if mode == ONNX_STEP:
        if role not in onnx:
            onnx[role] = _onnx_step_session(model, device, x)
        return _onnx_step_point(onnx[role], model, h, plan, device, budget, x)

    # KV_STEP
    if not (hasattr(model, "prefill_cache") and hasattr(model, "step_cached")):
        return {"status": "skipped", "reason": f"{role} has no prefill_cache/step_cached"}
    if (role, h) not in reencode_ms:
        return {"status": "skipped", "reason": "prefilling the KV cache costs about one re-encoding, which was over budget"}
    if budget.exhausted:
        return {"status": "skipped", "reason": budget.exhausted}
    history = torch.randn(1, h, d, device=device, dtype=dtype)
    _, cache = model.prefill_cache(history)
    size = state_bytes(cache)
    timing, _ = time_call(lambda: model.step_cached(x, cache), warmup=plan.warmup, repeats=plan.repeats,
                          budget_s=plan.budget_s, device=device)
    budget.record(1, timing.median_ms, f"history {h}")
    return {"status": "ok", **timing.as_dict(), "state_bytes": size, "history_growth_max": calls}


class _AsToken(nn.Module):
    def forward(self, x):
        return x[:, None]  # (b, D) -> (b, 1, D): one token


def _onnx_step_session(model, device, x) -> dict:
    """The student's step exported to ONNX (its state as explicit inputs, :mod:`mamba4net.core.onnx_export`)
    and loaded by onnxruntime on the CPU with ``decision_threads`` threads: ``{"session", "onnx_bytes",
    "session_rss_bytes"}``, or ``{"skipped": reason}``. Made once per model for the whole sweep."""
    import tempfile

    from mamba4net.core.bench.measure import peak_rss_increase
    from mamba4net.core.model import NetModel
    from mamba4net.core.onnx_export import DeploySpec, ExportError, export_onnx, onnx_session
    from mamba4net.core.runtime import decision_thread_count

    if device.type != "cpu" or input_dtype(model) != torch.float32:
        return {"skipped": "onnxruntime is measured for float32 models on the CPU"}
    with tempfile.TemporaryDirectory(prefix="mamba4net-onnx-") as tmp:  # the session keeps the model in memory
        path = Path(tmp) / "step.onnx"
        net = NetModel(_AsToken(), model, nn.Identity())
        spec = DeploySpec(inputs={"x": x}, encoder=net.encoder, head=net.head, output="h", stateful=True)
        try:
            manifest = export_onnx(net, spec, path)
        except (ExportError, ImportError) as exc:
            return {"skipped": f"not exported: {exc}"}
        holder = []
        rss = peak_rss_increase(lambda: holder.append(onnx_session(path, threads=decision_thread_count())))
    return {"session": holder[0], "onnx_bytes": manifest["bytes"], "session_rss_bytes": rss}


def _onnx_step_point(exported: dict, model, h, plan, device, budget, x) -> dict:
    """One step of the exported student in onnxruntime from the state after the history: what a
    device without torch decides with."""
    from mamba4net.core.bench.measure import peak_rss_increase
    from mamba4net.core.onnx_export import flatten_state

    if "skipped" in exported:
        return {"status": "skipped", "reason": exported["skipped"]}
    if budget.exhausted:
        return {"status": "skipped", "reason": budget.exhausted}
    session = exported["session"]
    _, state = model.prefill(torch.randn(1, h, model.d_model, dtype=x.dtype)) if h else (None, model.init_state(1))
    feed = {"x": x.numpy(), **{f"state.{k}": t.numpy() for k, t in flatten_state(state).items()}}
    timing, _ = time_call(lambda: session.run(["h"], feed), warmup=plan.warmup, repeats=plan.repeats,
                          budget_s=plan.budget_s, device=device)
    budget.record(1, timing.median_ms, f"history {h}")
    return {"status": "ok", **timing.as_dict(), "onnx_bytes": exported["onnx_bytes"],
            "session_rss_bytes": exported["session_rss_bytes"],
            "decision_peak_bytes": peak_rss_increase(lambda: session.run(["h"], feed))}
