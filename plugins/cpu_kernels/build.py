"""Compiling this plugin's C sources on first use, and loading them with ctypes.

A source ``<name>.c`` beside this file is compiled by the system's C compiler (``$CC``, else
``cc``, ``gcc`` or ``clang`` on the PATH) into ``<cache>/kernels/<name>-<key>.so`` (the cache of
:func:`mamba4net.core.paths.cache_dir`), where the key hashes the source, the compiler, its flags
and the CPU (the code is built for the CPU it runs on, ``-march=native``). Later processes load
the cached library: the compiler runs once per machine and source version, in well under a second.

Where there is no compiler, or the build fails, :func:`load` returns None and logs why once; the
registry then keeps the PyTorch kernels.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("mamba4net")

HERE = Path(__file__).resolve().parent
FLAGS = ["-O3", "-std=gnu11", "-shared", "-fPIC"]
NATIVE = ["-march=native"]  # dropped, with a second try, where the compiler does not know it


def compiler() -> str | None:
    """The C compiler to use: ``$CC``, else the first of cc, gcc, clang on the PATH; None if none."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


def _cpu_fingerprint() -> str:
    """What ``-march=native`` depends on: the architecture and, on Linux, the CPU's feature flags."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def _compile(cc: str, source: Path, target: Path, flags: list[str]) -> str | None:
    """Build ``source`` into ``target`` (atomically: other processes never see half a file);
    None on success, else the compiler's complaint."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, "-o", tmp, str(source), "-lm"], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip()
            return said.splitlines()[-1] if said else f"exit status {done.returncode}"
        os.replace(tmp, target)
        return None
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled library of ``<name>.c`` (built on first use, then cached), or None where it
    cannot be built; the reason is logged once."""
    from mamba4net.core.paths import cache_dir

    source = HERE / f"{name}.c"
    cc = compiler()
    if cc is None:
        log.info("cpu_kernels: no C compiler ($CC, cc, gcc, clang); %s stays on PyTorch kernels", name)
        return None
    errors = []
    for flags in (FLAGS + NATIVE, FLAGS):
        key = hashlib.sha256("\0".join([source.read_text(), cc, *flags, _cpu_fingerprint()]).encode()).hexdigest()
        target = cache_dir() / "kernels" / f"{name}-{key[:16]}.so"
        error = None if target.exists() else _compile(cc, source, target, flags)
        if error is None:
            try:
                return ctypes.CDLL(str(target))
            except OSError as exc:  # e.g. a truncated file from a full disk
                error = str(exc)
        errors.append(f"{' '.join(flags)}: {error}")
    log.warning("cpu_kernels: could not build %s with %s (%s); using the PyTorch kernels", name, cc, "; ".join(errors))
    return None
