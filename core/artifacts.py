"""Derived data a task builds once and reuses across runs (e.g. an experience pool).

An artifact is two files side by side, neither of them pickle: ``<name>.safetensors`` (the arrays)
and ``<name>.json`` (``{"format": N, "sha256": ..., ...}``, the rest; the checksum is verified on load). :func:`cached` keeps artifacts in a folder
under a hash of the spec that made them, so the same spec is built only once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np
import torch

from mamba4net.core.checkpoint import load_tensors, save_checked
from mamba4net.core.errors import DataError
from mamba4net.core.io import read_json

log = logging.getLogger("mamba4net")
T = TypeVar("T")


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], sidecar: dict[str, Any], fmt: int) -> Path:
    """Write ``path`` (.safetensors) and its .json sidecar ``{"format": fmt, **sidecar}``, each atomically."""
    path = Path(path).with_suffix(".safetensors")
    save_checked(path, {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()},
                 {"format": fmt, **sidecar})
    return path


def load_arrays(path: str | Path, keys: tuple[str, ...], fmt: int, what: str) -> tuple[dict[str, np.ndarray], dict]:
    """(arrays ``keys`` as numpy, the sidecar) of an artifact written by :func:`save_arrays`; an
    unreadable file, another format or a missing array is a one-line DataError naming the file."""
    path = Path(path).with_suffix(".safetensors")
    side = path.with_suffix(".json")
    info = read_json(side, what=f"{what} record")
    if info.get("format") != fmt:
        got = info.get("format")
        raise DataError(f"{side}: {what} format {got!r}, expected {fmt}")
    digest = info.get("sha256")
    if digest is not None and not isinstance(digest, str):
        raise DataError(f"{side}: 'sha256' is not a checksum (damaged?)")
    tensors = load_tensors(path, digest)
    missing = [k for k in keys if k not in tensors]
    if missing:
        raise DataError(f"{path}: {what} lacks {', '.join(missing)}")
    return {k: tensors[k].numpy() for k in keys}, info


def spec_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def cached(folder: Path, name: str, spec: dict[str, Any], *, load: Callable[[Path], T],
           make: Callable[[str], T], describe: Callable[[T], str], what: str) -> T:
    """The artifact ``folder/<name>-<digest of spec>``: loaded when there, else ``make(digest)``
    and saved (the object's ``save(path)``). ``describe`` says what it holds, for the log."""
    digest = spec_digest(spec)
    path = Path(folder) / f"{name}-{digest}.safetensors"
    if path.exists():
        obj = load(path)
        log.info("%s %s (%s)", what, path, describe(obj))
        return obj
    t0 = time.perf_counter()
    obj = make(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    obj.save(path)
    log.info("%s generated: %s (%s, %.1f s)", what, path, describe(obj), time.perf_counter() - t0)
    return obj
