"""Files the platform writes and reads back: atomic writes, checksums, and JSON with one-line errors.

Every file is written atomically (temp file in the same folder + ``os.replace``), so a run killed at
any instant leaves either the old or the new version of a file, never half of one; a write the disk
refuses (full, read-only) leaves the old version too and is one :class:`WriteError` line. Every JSON
file read back goes through :func:`read_json`, which names a missing or unreadable file in one line.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from mamba4net.core.errors import DataError, WriteError

CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in chunks (weights files can be larger than memory allows twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def write_chunk(f, chunk: memoryview, tmp: str) -> None:
    """One chunk of the temp file ``tmp`` being written (where tests make the disk fail mid-file)."""
    f.write(chunk)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``data`` into ``path`` via a temp file and a rename; any failure leaves ``path`` as it was."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            view = memoryview(data)
            for start in range(0, len(view), CHUNK):
                write_chunk(f, view[start:start + CHUNK], tmp)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


def write_error(path: Path, exc: OSError) -> WriteError:
    """The one line for a write the system refused; says that the previous version is intact."""
    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, "") or str(exc)
    return WriteError(f"{path}: cannot be written ({reason}); the previous version, if any, is unchanged")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_safe(obj: Any) -> Any:
    """``obj`` with NaN as null and infinities clipped, so that the JSON written is standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2) + "\n")


def read_json(path: Path, *, missing_ok: bool = False, what: str = "file") -> Any:
    """The JSON object in ``path``; ``None`` when absent and ``missing_ok``. A missing (otherwise),
    unreadable or non-object file is a :class:`DataError` naming it, in one line."""
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return None
        raise DataError(f"{path}: {what} not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
