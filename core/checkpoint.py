"""Checkpoints: weights and optimizer tensors as safetensors, everything else as JSON.

Layout of one training checkpoint (a folder, renamed into place only once complete)::

    checkpoints/<stage>/step-000120/
        model.safetensors      trainable tensors of the stage's modules
        optimizer.safetensors  AdamW moments, keyed "<param index>.<name>"
        state.json             stage, step, optimizer hyper-parameters, RNG seeds, metrics
    checkpoints/<stage>/latest.json   {"step": 120, "path": "step-000120"}

Every tensor file's sha256 is recorded in the JSON written beside it, after it: ``state.json`` for
a checkpoint's files, ``done.json`` for a finished stage's, ``<name>.json`` for a loose file written
by :func:`save_checked` (exports, output caches, fitted baselines, task artifacts). Loading verifies
it: a damaged file is one line naming it, and a resume falls back to the stage's previous good
checkpoint (saying so) when the latest is damaged.

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
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

from mamba4net.core import distributed as dist
from mamba4net.core.errors import DataError, WriteError
from mamba4net.core.io import (atomic_write_bytes, atomic_write_text, read_json, sha256_bytes, sha256_file,
                                write_error, write_json)

log = logging.getLogger("mamba4net")
STEP_DIR = re.compile(r"^step-\d+$")


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in module.named_parameters() if p.requires_grad}


def save_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> str:
    """safetensors, written atomically; returns the file's sha256 (for the JSON that records it)."""
    data = save_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()})
    atomic_write_bytes(Path(path), data)
    return sha256_bytes(data)


def load_tensors(path: Path, sha256: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors in ``path``; with ``sha256``, only if the file's bytes still have that checksum.
    Missing, damaged or unreadable: a one-line DataError naming the file."""
    path = Path(path)
    if sha256 is not None:
        why = verify_file(path, sha256)
        if why:
            raise DataError(why)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise DataError(f"{path}: unreadable checkpoint ({str(exc).splitlines()[0]})") from None


def sidecar(path: Path) -> Path:
    return Path(path).with_suffix(".json")


def save_checked(path: Path, tensors: dict[str, torch.Tensor], info: dict[str, Any] | None = None) -> None:
    """``path`` (.safetensors) and its sidecar ``<name>.json`` = ``{**info, "sha256": ...}``, written
    after it (the old sidecar is removed first, so a kill in between leaves no stale checksum)."""
    path = Path(path)
    sidecar(path).unlink(missing_ok=True)
    digest = save_tensors(path, tensors)
    write_json(sidecar(path), {**(info or {}), "sha256": digest})


def recorded_sha256(path: Path, what: str = "file") -> str | None:
    """The sha256 that ``path``'s sidecar records (None: no sidecar, a file from before checksums);
    a sidecar without one is a one-line DataError."""
    info = read_json(sidecar(path), missing_ok=True, what=f"{what} record")
    digest = info.get("sha256") if info else None
    if info is not None and not isinstance(digest, str):
        raise DataError(f"{sidecar(path)}: records no sha256 of {Path(path).name} (damaged?)")
    return digest


def load_checked(path: Path, what: str = "file") -> dict[str, torch.Tensor]:
    """Tensors saved by :func:`save_checked`, verified against the sidecar's sha256 (a file from
    before checksums, without one, loads unverified)."""
    return load_tensors(path, recorded_sha256(path, what))


def verify_file(path: Path, sha256: str) -> str | None:
    """None when ``path`` exists with checksum ``sha256``, else why not (for preflight checks)."""
    try:
        digest = sha256_file(Path(path))
    except OSError as exc:
        return f"{path}: {'missing' if isinstance(exc, FileNotFoundError) else exc.strerror or exc}"
    if digest != sha256:
        return f"{path}: damaged (its sha256 differs from the one recorded when it was written)"
    return None


def _sums(record: dict, where: Path) -> dict[str, str]:
    """The ``{file: sha256}`` table of a record ({} before checksums); a damaged one is named."""
    sums = record.get("sha256") or {}
    if not isinstance(sums, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in sums.items()):
        raise DataError(f"{where}: 'sha256' is not a table of file checksums (damaged?)")
    return sums


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
        final = self.dir / name
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            opt_tensors, opt_meta = optimizer_tensors(opt)
            sums = {"model.safetensors": save_tensors(tmp / "model.safetensors", model_tensors),
                    "optimizer.safetensors": save_tensors(tmp / "optimizer.safetensors", opt_tensors)}
            write_json(tmp / "state.json", {**state, "step": step, "optimizer": opt_meta, "sha256": sums})
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            atomic_write_text(self.dir / "latest.json", json.dumps({"step": step, "path": name}) + "\n")
        except (OSError, WriteError) as exc:  # the previous checkpoint and latest.json are untouched
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, WriteError):
                raise
            raise write_error(final, exc) from None
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
            sums = {f.name: sha256_file(f) for f in sorted(final.iterdir()) if f.is_file()}
            write_json(final / "state.json", {**state, "step": step, "sha256": sums})
            atomic_write_text(self.dir / "latest.json", json.dumps({"step": step, "path": f"ds/{name}"}) + "\n")
            self._prune(root)
        dist.barrier()
        return final

    def _prune(self, folder: Path) -> None:
        steps = [p for p in folder.glob("step-*") if STEP_DIR.match(p.name)]
        for old in sorted(steps, key=lambda p: int(p.name.split("-")[1]))[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> tuple[int, Path] | None:
        """(step, folder) of the checkpoint to resume from: the one ``latest.json`` points to when it
        verifies, else the newest earlier one that does (with a warning). None: no checkpoint yet.
        Checkpoints exist but none verifies: a one-line DataError naming the latest."""
        pointer = self.dir / "latest.json"
        problems = []
        first = None
        if pointer.exists():
            try:
                info = read_json(pointer, what="checkpoint pointer")
                first = self.dir / info["path"]
                int(info["step"])
            except (KeyError, TypeError, ValueError, DataError) as exc:
                problems.append(f"{pointer}: corrupt checkpoint pointer ({exc})")
                first = None
        elif not self._steps():
            return None  # no checkpoint yet (a folder renamed into place before its pointer is used)
        candidates = ([first] if first is not None else []) + [p for p in self._steps() if p != first]
        for path in candidates:
            why = self.check(path)
            if why is None:
                if problems:
                    log.warning("%s; resuming from the previous good checkpoint %s instead", problems[0], path)
                return self.state(path)["step"], path
            problems.append(why)
        raise DataError(f"{problems[0]} (and no earlier checkpoint of stage {self.dir.name} verifies)")

    def _steps(self) -> list[Path]:
        """This stage's checkpoint folders, newest first."""
        found = [p for p in [*self.dir.glob("step-*"), *(self.dir / "ds").glob("step-*")]
                 if p.is_dir() and STEP_DIR.match(p.name)]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]), reverse=True)

    def check(self, path: Path) -> str | None:
        """None when the checkpoint folder is complete and every file matches its recorded sha256."""
        try:
            state = self.state(path)
            int(state["step"])
        except (DataError, KeyError, TypeError, ValueError) as exc:
            return f"{path}: incomplete or damaged checkpoint ({exc})"
        try:
            sums = _sums(state, path / "state.json")
        except DataError as exc:
            return str(exc)
        for name, digest in sums.items():
            why = verify_file(path / name, digest)
            if why:
                return why
        return None

    def state(self, path: Path) -> dict[str, Any]:
        """The ``state.json`` of a checkpoint folder."""
        return read_json(path / "state.json", what="checkpoint state")

    def load(self, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
        state = self.state(path)
        sums = _sums(state, path / "state.json")
        return (load_tensors(path / "model.safetensors", sums.get("model.safetensors")),
                load_tensors(path / "optimizer.safetensors", sums.get("optimizer.safetensors")), state)

    # -- stage completion --------------------------------------------------------------------
    def mark_done(self, files: dict[str, dict[str, torch.Tensor]], info: dict[str, Any]) -> None:
        """The stage's final weights (``{file name: tensors}``, one file per role it wrote) plus a
        ``done.json`` marker written last (by rank 0; the other ranks wait for it)."""
        dist.barrier()  # every rank has looked at done() before it appears
        if dist.is_main():
            self.dir.mkdir(parents=True, exist_ok=True)
            sums = {name: save_tensors(self.dir / name, tensors) for name, tensors in files.items()}
            write_json(self.dir / "done.json", {**info, "sha256": sums})
            for step_dir in self.dir.glob("step-*"):  # only needed to resume an unfinished stage
                shutil.rmtree(step_dir, ignore_errors=True)
            shutil.rmtree(self.dir / "ds", ignore_errors=True)
            (self.dir / "latest.json").unlink(missing_ok=True)
        dist.barrier()

    def done(self) -> dict[str, Any] | None:
        """The stage's ``done.json`` (None while unfinished); one-line error when unreadable."""
        return read_json(self.dir / "done.json", missing_ok=True, what="stage marker")

    def tensors(self, name: str = "final.safetensors") -> dict[str, torch.Tensor]:
        """A finished stage's weights file, verified against the sha256 its done.json records."""
        return load_tensors(self.dir / name, self.checksum(name))

    def checksum(self, name: str) -> str | None:
        """The sha256 done.json records for ``name`` (None for a stage finished before checksums)."""
        return _sums(self.done() or {}, self.dir / "done.json").get(name)
