"""Size and speed of teacher vs student, measured side by side in one process."""

from __future__ import annotations

import statistics
import time

import torch

from mamba4net.core.checkpoint import save_tensors
from mamba4net.core.protocols import count_parameters
from mamba4net.core.runs import write_json
from mamba4net.core.trainer import move


def tensor_bytes(module: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer as stored (what a safetensors export holds, bar its header)."""
    tensors = list(module.state_dict().values())
    return sum(t.numel() * t.element_size() for t in tensors)


@torch.no_grad()
def forward_ms(model: torch.nn.Module, batch: dict, repeats: int, warmup: int = 2) -> float:
    """Median wall time of one forward pass in milliseconds."""
    model.eval()
    for _ in range(warmup):
        model(batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(batch)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def measure_efficiency(ctx) -> dict:
    p = ctx.cfg.benchmark
    data = ctx.task.data(ctx.cfg.evaluate.split)
    batch = move(data.batch(torch.arange(min(p.batch_size, len(data)))), ctx.device)
    out: dict[str, dict] = {}
    for role in ("teacher", "student"):
        model = ctx.model(role)
        with torch.no_grad():
            tokens = model.encoder(batch)  # (B, L, D)
        n_tokens = tokens.shape[0] * tokens.shape[1]
        ms = forward_ms(model, batch, p.repeats)
        out[role] = {
            "params": count_parameters(model),
            "backbone_params": count_parameters(model.backbone),
            "disk_bytes": tensor_bytes(model),
            "forward_ms": round(ms, 3),
            "tokens_per_s": round(n_tokens / (ms / 1e3), 1),
            "batch_size": int(tokens.shape[0]),
            "tokens_per_sample": int(tokens.shape[1]),
        }
    # what adaptation adds to the (shared) LLM weights: LoRA, encoder and head only
    adapted = ctx.checkpoints("adapt_teacher").dir / "final.safetensors"
    if adapted.exists():
        out["teacher"]["adapter_bytes"] = adapted.stat().st_size
    export = ctx.out.root / "checkpoints" / "export"
    export.mkdir(parents=True, exist_ok=True)
    save_tensors(export / "student.safetensors", ctx.model("student").state_dict())
    out["student"]["export_file_bytes"] = (export / "student.safetensors").stat().st_size
    t, s = out["teacher"], out["student"]
    out["ratios"] = {
        "size_student_over_teacher": round(s["disk_bytes"] / t["disk_bytes"], 5),
        "params_student_over_teacher": round(s["params"] / t["params"], 5),
        "throughput_student_over_teacher": round(s["tokens_per_s"] / t["tokens_per_s"], 3),
    }
    out["setup"] = {"device": str(ctx.device), "torch_threads": torch.get_num_threads(), "repeats": p.repeats}
    ctx.results["efficiency"] = out
    if ctx.out.results_path.exists() or ctx.results.get("models"):
        write_json(ctx.out.results_path, ctx.results)
    return out
