"""``mamba4net export RUN_DIR``: each deployed student as one ONNX model, for devices.

One call of the exported model is one *decision*: the task's deploy encoder turns the decision's
inputs into ``n`` tokens, the backbone takes ``n`` recurrent steps, the task's head reads the
last hidden state. The task says what a decision is, through its optional method

    task.deploy_spec(model) -> DeploySpec

(inputs and their example values, the encoder and head modules, and whether the recurrent state
carries over from one decision to the next, as in an ABR episode, or starts empty at each, as for a
VP window). For a *stateful* decision every tensor of the backbone's state is an explicit input
(``state.<layer>.<field>``) and output (``new_state.<layer>.<field>``): the caller feeds the
outputs of one decision as the inputs of the next, starting from zeros. The attention layers' KV
caches grow by ``n`` positions per decision along their axis ``past`` (zero at the start).

Written to ``RUN_DIR/deploy/``: ``<role>.onnx`` and ``<role>.json``, the manifest (inputs,
outputs, state tensors with their shapes, the opset, the file's sha256, and the largest
difference from PyTorch measured at export time), which is all a runtime needs
(``examples/deploy/`` decides with numpy and onnxruntime alone).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mamba4net.core.errors import Mamba4netError
from mamba4net.core.io import atomic_write_bytes, sha256_file, write_json
from mamba4net.core.streaming import can_stream

log = logging.getLogger("mamba4net")

OPSET = 17
PARITY_ATOL = 1e-4  # onnxruntime vs PyTorch on the example decision, float32


class ExportError(Mamba4netError):
    """A model that cannot be exported (an op ONNX cannot express, a task without a deploy spec)."""


@dataclass
class DeploySpec:
    """What one decision of a task's deployed model is (see the module docstring).

    ``encoder(*inputs) -> tokens (b, n, D)`` takes the tensors of ``inputs`` in order (batch first);
    ``head(hidden (b, D)) -> output``; ``stateful``: the backbone's state carries over between
    decisions; ``notes``: how to build the inputs, for the manifest; ``constants``: numbers a
    runtime needs to build them (e.g. the return an ABR policy is asked for)."""

    inputs: dict[str, Tensor]
    encoder: nn.Module
    head: nn.Module
    output: str = "output"
    stateful: bool = False
    notes: dict[str, str] = field(default_factory=dict)
    constants: dict[str, float] = field(default_factory=dict)


def flatten_state(state: list[Any]) -> dict[str, Tensor]:
    """A backbone state (a list with one dataclass of tensors per layer) as named tensors."""
    if not isinstance(state, (list, tuple)) or not all(dataclasses.is_dataclass(s) for s in state):
        raise ExportError("the backbone's recurrent state is not a list of per-layer dataclasses of tensors")
    return {f"{i}.{f.name}": getattr(s, f.name) for i, s in enumerate(state) for f in dataclasses.fields(s)}


def _unflatten(template: list[Any], tensors: list[Tensor]) -> list[Any]:
    it = iter(tensors)
    return [type(s)(**{f.name: next(it) for f in dataclasses.fields(s)}) for s in template]


class _Decision(nn.Module):
    """encoder -> n recurrent steps -> head, with the state as explicit tensors when stateful."""

    def __init__(self, model, spec: DeploySpec, template: list[Any]):
        super().__init__()
        self.encoder, self.backbone, self.head = spec.encoder, model.backbone, spec.head
        self.n_inputs, self.stateful, self.template = len(spec.inputs), spec.stateful, template

    def forward(self, *args: Tensor):
        tokens = self.encoder(*args[: self.n_inputs])  # (b, n, D)
        if self.stateful:
            state = _unflatten(self.template, list(args[self.n_inputs:]))
        else:
            state = self.backbone.init_state(tokens.shape[0])
        h = None
        for i in range(tokens.shape[1]):
            h, state = self.backbone.step(tokens[:, i], state)
        out = self.head(h)
        return (out, *flatten_state(state).values()) if self.stateful else out


def _grown_axis(before: Tensor, after: Tensor) -> int | None:
    """The axis along which a state tensor grew over a decision (a KV cache's), or None."""
    return next((d for d, (a, b) in enumerate(zip(before.shape, after.shape)) if a != b), None)


def export_onnx(model, spec: DeploySpec, path: Path) -> dict:
    """Export ``model`` (a NetModel whose backbone has ``init_state``/``step``) for ``spec`` to
    ``path``; check it in onnxruntime against PyTorch; return the manifest."""
    backbone = model.backbone
    if not can_stream(backbone):
        raise ExportError(f"{type(backbone).__name__} has no recurrent step (init_state/step): nothing to export")
    model = model.float().eval()
    inputs = tuple(spec.inputs.values())
    template = backbone.init_state(inputs[0].shape[0])
    state = flatten_state(template) if spec.stateful else {}
    wrapper = _Decision(model, spec, template).eval()
    example = inputs + tuple(state.values())
    with torch.no_grad():
        n_tokens = int(spec.encoder(*inputs).shape[1])
        first = wrapper(*example) if spec.stateful else ()
    # a KV cache grows along one axis over a decision; the others keep their shape
    grows = {k: _grown_axis(t, after) for (k, t), after in zip(state.items(), first[1:])}
    grows = {k: axis for k, axis in grows.items() if axis is not None}
    if spec.stateful:  # trace from a non-empty state, so that no axis is traced at size 0
        example = inputs + tuple(first[1:])
    in_names = list(spec.inputs) + [f"state.{k}" for k in state]
    out_names = [spec.output] + [f"new_state.{k}" for k in state]
    axes: dict[str, dict[int, str]] = {n: {0: "batch"} for n in in_names + out_names}
    for k, axis in grows.items():
        axes[f"state.{k}"][axis] = "past"
        axes[f"new_state.{k}"][axis] = "past_next"
    buffer = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tracer's notes on shapes read as Python ints
            torch.onnx.export(wrapper, example, buffer, input_names=in_names, output_names=out_names,
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    except Exception as exc:  # torch raises several types for an op without an ONNX form
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ExportError(f"{type(backbone).__name__}: cannot be exported to ONNX ({first_line[:300]})") from exc
    trial = path.with_name(f".{path.name}.check")  # checked before it replaces an earlier export
    try:
        atomic_write_bytes(trial, buffer.getvalue())
        with torch.no_grad():
            want = wrapper(*example)
        diff = _parity(trial, in_names, out_names, example, want if isinstance(want, tuple) else (want,))
        os.replace(trial, path)
    finally:
        trial.unlink(missing_ok=True)
    manifest = {
        "format": "mamba4net-deploy/1",
        "onnx": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "opset": OPSET,
        "inputs": {n: {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
                   for n, t in spec.inputs.items()},
        "output": spec.output,
        "tokens_per_decision": n_tokens,
        "stateful": spec.stateful,
        "state": {f"state.{k}": {"shape": [0 if d == grows.get(k) else int(s) for d, s in enumerate(t.shape[1:], 1)],
                                 "dtype": str(t.dtype).replace("torch.", ""), "grows_along": grows.get(k)}
                  for k, t in state.items()},
        "notes": spec.notes,
        "constants": spec.constants,
        "max_abs_diff_vs_torch": diff,
    }
    return manifest


def _parity(path: Path, in_names, out_names, example, want) -> float:
    """The largest difference between onnxruntime's and PyTorch's outputs on ``example``."""
    session = onnx_session(path)
    got = session.run(out_names, {n: t.numpy() for n, t in zip(in_names, example)})
    diff = max(float(np.max(np.abs(g - w.numpy()))) if g.size else 0.0 for g, w in zip(got, want))
    if not diff <= PARITY_ATOL:
        raise ExportError(f"the exported model's outputs in onnxruntime differ from PyTorch's by {diff:.3g} "
                          f"(> {PARITY_ATOL}); nothing was written")
    return diff


def onnx_session(path: Path, threads: int = 1):
    """An onnxruntime CPU session on ``threads`` intra-op threads (1: a decision is small)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_run(run_root: str | Path, registry=None) -> list[Path]:
    """Export every deployed student of a finished run to ``RUN_DIR/deploy/``; the manifests' paths."""
    from mamba4net.core.runs import load_run_config
    from mamba4net.core.context import RunContext
    from mamba4net.core.runtime import apply_runtime
    from mamba4net.registry import default_registry

    registry = registry or default_registry()
    run, loaded = load_run_config(run_root, registry=registry)
    apply_runtime(loaded)
    ctx = RunContext(loaded, registry, run=run, out=run, device=torch.device("cpu"))
    students = ctx.deployed("student")
    if not students:
        raise Mamba4netError(f"{run.root}: the method deploys no student to export")
    ctx.require_finished([s.name for r in students for s in loaded.method.writers(r.name)])
    spec_of = getattr(ctx.task, "deploy_spec", None)
    if not callable(spec_of):
        raise ExportError(f"task '{loaded.cfg.task['name']}' does not say what a deployed decision is "
                          "(no deploy_spec method): nothing to export")
    folder = run.root / "deploy"
    folder.mkdir(exist_ok=True)
    written = []
    for role in students:
        model = ctx.model(role.name)
        manifest = export_onnx(model, spec_of(model), folder / f"{role.name}.onnx")
        manifest.update(role=role.name, task=loaded.cfg.task["name"], run=run.root.name)
        write_json(folder / f"{role.name}.json", manifest)
        log.info("exported %s: %s (%.1f KiB; onnxruntime vs PyTorch max |diff| %.2g)", role.name,
                 folder / manifest["onnx"], manifest["bytes"] / 1024, manifest["max_abs_diff_vs_torch"])
        written.append(folder / f"{role.name}.json")
    return written
