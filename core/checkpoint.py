"""Checkpoints: weights and optimizer tensors as safetensors, everything else as JSON.

Layout of one training checkpoint (a folder, renamed into place only once complete)::

    checkpoints/<stage>/step-000120/
        model.safetensors      trainable tensors of the stage's modules
        optimizer.safetensors  AdamW moments, keyed "<param index>.<name>"
        state.json             stage, step, optimizer hyper-parameters, RNG seeds, metrics
    checkpoints/<stage>/latest.json   {"step": 120, "path": "step-000120"}

Under DeepSpeed (``runtime.engine: deepspeed``) a checkpoint is DeepSpeed's sharded format, one
optimizer shard per rank, written by every rank through ``engine.save_checkpoint``::

    checkpoints/<stage>/ds/step-000120/
        mp_rank_00_model_states.pt                  trainable weights (written by rank 0)
        zero_pp_rank_<r>_mp_rank_00_optim_states.pt rank r's share of the AdamW state
        state.json                                  as above, plus format, world_size, zero_stage
    checkpoints/<stage>/latest.json   {"step": 120, "path": "ds/step-000120"}

``latest.json`` moves only once every rank has finished writing, so a run killed mid-save resumes
from the previous checkpoint. The finished stage's ``final.safetensors`` is the same in both cases
(whole fp32 tensors gathered from the ranks). Nothing here unpickles: safetensors for tensors, JSON
for the rest; DeepSpeed's ``.pt`` files are read with ``weights_only=True`` (see core/ds_engine.py).
Only rank 0 writes; the other ranks wait for it where they need its files.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from mamba4net.core import distributed as dist
from mamba4net.core.errors import DataError
from mamba4net.core.io import atomic_write_text, read_json, write_json


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in module.named_parameters() if p.requires_grad}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """safetensors, written to a temp name and renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable checkpoint ({exc})") from None


def load_into(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path, strict: bool = True) -> None:
    """Copy ``tensors`` into the module's parameters/buffers of the same name, checking shapes."""
    own = dict(module.named_parameters()) | dict(module.named_buffers())
    missing = [k for k in tensors if k not in own]
    if missing and strict:
        raise DataError(f"{source}: checkpoint has tensors this model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            if name not in own:
                continue
            if own[name].shape != value.shape:
                raise DataError(
                    f"{source}: tensor '{name}' has shape {tuple(value.shape)}, model expects {tuple(own[name].shape)}"
                )
            own[name].copy_(value)


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able hyper-parameters."""
    sd = opt.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            tensors[f"{idx}.{key}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": sd["param_groups"]}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class StageCheckpoints:
    """The checkpoints of one stage: save (atomically, keeping the last ``keep``), find latest, load."""

    def __init__(self, stage_dir: Path, keep: int = 2):
        self.dir = stage_dir
        self.keep = keep

    def save(self, step: int, model_tensors: dict, opt: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
        name = f"step-{step:06d}"
        tmp = self.dir / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous().cpu() for k, v in model_tensors.items()}, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = optimizer_tensors(opt)
        save_file({k: v.contiguous().cpu() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
        write_json(tmp / "state.json", {**state, "step": step, "optimizer": opt_meta})
        final = self.dir / name
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        atomic_write_text(self.dir / "latest.json", json.dumps({"step": step, "path": name}) + "\n")
        self._prune(self.dir)
        return final

    def save_deepspeed(self, step: int, engine, state: dict[str, Any]) -> Path:
        """DeepSpeed's sharded checkpoint (collective: every rank calls it), then the pointer."""
        root, name = self.dir / "ds", f"step-{step:06d}"
        final = root / name
        if dist.is_main():
            shutil.rmtree(final, ignore_errors=True)  # left by a run killed while writing it
        dist.barrier()
        engine.save_checkpoint(str(root), tag=name, client_state={}, save_latest=False,
                               exclude_frozen_parameters=True)
        dist.barrier()  # every rank's shard is on disk
        if dist.is_main():
            write_json(final / "state.json", {**state, "step": step})
            atomic_write_text(self.dir / "latest.json", json.dumps({"step": step, "path": f"ds/{name}"}) + "\n")
            self._prune(root)
        dist.barrier()
        return final

    def _prune(self, folder: Path) -> None:
        for old in sorted(folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> tuple[int, Path] | None:
        pointer = self.dir / "latest.json"
        if not pointer.exists():
            return None
        try:
            info = json.loads(pointer.read_text())
            path = self.dir / info["path"]
            step = int(info["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{pointer}: corrupt checkpoint pointer ({exc})") from None
        if not (path / "state.json").exists():
            raise DataError(f"{path}: checkpoint folder is incomplete")
        return step, path

    def state(self, path: Path) -> dict[str, Any]:
        """The ``state.json`` of a checkpoint folder."""
        try:
            return json.loads((path / "state.json").read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path / 'state.json'}: corrupt checkpoint state ({exc})") from None

    def load(self, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
        state = self.state(path)
        return load_tensors(path / "model.safetensors"), load_tensors(path / "optimizer.safetensors"), state

    # -- stage completion --------------------------------------------------------------------
    def mark_done(self, files: dict[str, dict[str, torch.Tensor]], info: dict[str, Any]) -> None:
        """The stage's final weights (``{file name: tensors}``, one file per role it wrote) plus a
        ``done.json`` marker written last (by rank 0; the other ranks wait for it)."""
        dist.barrier()  # every rank has looked at done() before it appears
        if dist.is_main():
            self.dir.mkdir(parents=True, exist_ok=True)
            for name, tensors in files.items():
                save_tensors(self.dir / name, tensors)
            write_json(self.dir / "done.json", info)
            for step_dir in self.dir.glob("step-*"):  # only needed to resume an unfinished stage
                shutil.rmtree(step_dir, ignore_errors=True)
            shutil.rmtree(self.dir / "ds", ignore_errors=True)
            (self.dir / "latest.json").unlink(missing_ok=True)
        dist.barrier()

    def done(self) -> dict[str, Any] | None:
        """The stage's ``done.json`` (None while unfinished); one-line error when unreadable."""
        return read_json(self.dir / "done.json", missing_ok=True, what="stage marker")

    def tensors(self, name: str = "final.safetensors") -> dict[str, torch.Tensor]:
        return load_tensors(self.dir / name)
