"""One writer per run folder: ``<run>/.lock``, held with ``flock`` for as long as a command writes.

The kernel drops the lock when its holder exits, however it exits (a SIGKILL included), so a lock
left by a killed process never blocks. The file keeps the holder's pid and command for the message
a second writer gets. Under DeepSpeed only rank 0 takes it (the ranks of one run share the folder).
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from mamba4net.core import distributed as dist
from mamba4net.core.errors import BusyError

try:
    import fcntl
except ImportError:  # not POSIX: no locking (the platform targets Linux)
    fcntl = None

LOCK_NAME = ".lock"
_held: set[Path] = set()  # folders this process holds (a command that calls another nests)


@contextmanager
def run_lock(root: str | Path, action: str) -> Iterator[None]:
    """Hold ``root``'s lock while the block runs; a live holder is a one-line :class:`BusyError`."""
    root = Path(root)
    if fcntl is None or not dist.is_main() or root.resolve() in _held:
        yield
        return
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BusyError(f"{root}: in use by {_holder(path)}; wait for it to end (or stop it)") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "action": action, "since": time.strftime("%H:%M:%S"),
                                 "command": " ".join(sys.argv[:4])}).encode())
        _held.add(root.resolve())
        try:
            yield
        finally:
            _held.discard(root.resolve())
    finally:
        os.close(fd)  # releases the lock


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"process {info['pid']} ({info['action']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
