"""Compiling this plugin's C sources on first use, and loading them with ctypes.

A source ``<name>.c`` beside this file is compiled by the system's C compiler (``$CC``, which may
carry arguments such as ``ccache gcc``, else ``cc``, ``gcc`` or ``clang`` on the PATH) into ``<cache>/kernels/<name>-<key>.so`` (the cache of
:func:`mamba4net.core.paths.cache_dir`), where the key hashes the source, the compiler, its flags
and the CPU (the code is built for the CPU it runs on, ``-march=native``). Later processes load
the cached library: the compiler runs once per machine and source version, in well under a second.

Where there is no compiler, the cache cannot be written, or the build fails, :func:`load` returns
None and logs why once; the registry then keeps the PyTorch kernels. A cached library that no
longer loads (a truncated file) is rebuilt.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("mamba4net")

HERE = Path(__file__).resolve().parent
FLAGS = ["-O3", "-std=gnu11", "-shared", "-fPIC"]
NATIVE = ["-march=native"]  # dropped, with a second try, where the compiler does not know it


def compiler() -> list[str] | None:
    """The C compiler's command: ``$CC`` (split like a shell word list), else the first of cc,
    gcc, clang on the PATH; None if none is found."""
    env = os.environ.get("CC", "").strip()
    if env:
        words = shlex.split(env)
        if shutil.which(words[0]):
            return [shutil.which(words[0]), *words[1:]]
        log.info("cpu_kernels: $CC=%r is not on the PATH; looking for cc, gcc, clang", env)
    for candidate in ("cc", "gcc", "clang"):
        if shutil.which(candidate):
            return [shutil.which(candidate)]
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


def _compile(cc: list[str], source: Path, target: Path, flags: list[str]) -> str | None:
    """Build ``source`` into ``target`` (atomically: other processes never see half a file);
    None on success, else the compiler's complaint."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so.tmp", dir=target.parent)
        os.close(fd)
    except OSError as exc:
        return f"cannot write {target.parent}: {exc}"
    try:
        done = subprocess.run([*cc, *flags, "-o", tmp, str(source), "-lm"], capture_output=True, text=True, timeout=120)
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
    try:
        folder = cache_dir() / "kernels"
    except OSError as exc:
        log.warning("cpu_kernels: no cache folder for %s (%s); using the PyTorch kernels", name, exc)
        return None
    errors, text, cpu = [], source.read_text(), _cpu_fingerprint()
    for flags in (FLAGS + NATIVE, FLAGS):
        key = hashlib.sha256("\0".join([text, *cc, *flags, cpu]).encode()).hexdigest()
        target = folder / f"{name}-{key[:16]}.so"
        lib, error = _open(target) if target.exists() else (None, "not built")
        if lib is None:  # not built yet, or a cached file that does not load (a truncated write): build
            error = _compile(cc, source, target, flags)
            lib, error = _open(target) if error is None else (None, error)
        if lib is not None:
            return lib
        errors.append(f"{' '.join(flags)}: {error}")
    log.warning("cpu_kernels: could not build %s with %s (%s); using the PyTorch kernels", name, " ".join(cc),
                "; ".join(errors))
    return None


def _open(path: Path) -> tuple[ctypes.CDLL | None, str | None]:
    try:
        return ctypes.CDLL(str(path)), None
    except OSError as exc:
        return None, str(exc)
