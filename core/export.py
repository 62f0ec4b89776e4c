"""The deployable students: ``checkpoints/export/<role>.safetensors`` (encoder + backbone + head)
and its ``<role>.json`` (sha256), for every deployed student role, written when the method's stages
have finished."""

from __future__ import annotations

from mamba4net.core.checkpoint import save_checked


def export_students(ctx) -> dict[str, dict]:
    """Write each deployed student's weights; returns ``{role: {"file", "bytes"}}`` for results.json."""
    folder = ctx.run.checkpoints / "export"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for role in ctx.deployed("student"):
        path = folder / f"{role.name}.safetensors"
        save_checked(path, ctx.model(role.name).state_dict(), {"role": role.name})
        out[role.name] = {"file": str(path.relative_to(ctx.run.root)), "bytes": path.stat().st_size}
    return out
