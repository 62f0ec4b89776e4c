"""Getting the data: ``mamba4net data list | verify [DIR] | fetch [--tasks a,b] [--to DIR] [--mirror URL]``.

A task plugin ships a manifest of its data folder (``mamba4net_register_datasets``): every file's
path relative to ``<data>/<folder>/``, size and sha256, and its pinned upstream source (a URL
template, a commit and a path prefix per sub-folder). Files converted by the platform's authors
(``derived``) exist upstream in another form only, so a mirror of the folder provides them.

``fetch`` downloads what is missing or altered into ``DIR/<folder>/``: each file goes to
``<name>.part`` (a later run resumes it with an HTTP range request), its checksum is verified, and
only then is it renamed over the old one, so a good file is never replaced by a bad one.
"""

from __future__ import annotations

import http.client
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from mamba4net.core.errors import ConfigError, DataError
from mamba4net.core.io import read_json, sha256_file
from mamba4net.core.progress import progress_bar

log = logging.getLogger("mamba4net")
TIMEOUT_S = 30
MAX_REQUESTS = 8  # per file and run


@dataclass(frozen=True)
class DataFile:
    path: str  # relative to <data>/<folder>/
    size: int
    sha256: str
    source: str | None  # the pinned upstream URL; None for a derived file


@dataclass
class Manifest:
    name: str
    folder: str
    files: list[DataFile]
    derived_note: dict[str, str]

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)


def read_manifest(path: str | Path) -> Manifest:
    """A manifest file as written by ``scripts/make_data_manifests.py``."""
    raw = read_json(Path(path), what="data manifest")
    try:
        up, origins = raw["upstream"], raw.get("origins", {})
        files = []
        for rel, size, digest in raw["files"]:
            prefix = next((p for p in origins if rel.startswith(p)), None)
            source = (up["url"].format(commit=up["commit"], path=origins[prefix] + rel[len(prefix):])
                      if prefix is not None else None)
            files.append(DataFile(rel, int(size), str(digest), source))
        return Manifest(raw["dataset"], raw["folder"], files, dict(raw.get("derived", {})))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed data manifest ({exc!r})") from None


def manifests(registry, names: Iterable[str] | None = None) -> list[Manifest]:
    """The registered datasets (``names``: those only; an unknown one is a one-line error)."""
    kind = registry.kind("datasets")
    wanted = list(names) if names else kind.names()
    for name in wanted:
        if name not in kind:
            raise ConfigError(kind.unknown_message(name))
    return [kind.get(n).build(None) for n in wanted]


def check_file(root: Path, m: Manifest, f: DataFile) -> str | None:
    """None when ``root/<folder>/<path>`` is there with the recorded size and checksum, else why not."""
    path = root / m.folder / f.path
    if not path.is_file():
        return "missing"
    if path.stat().st_size != f.size:
        return f"size {path.stat().st_size} bytes, expected {f.size}"
    if sha256_file(path) != f.sha256:
        return "altered (sha256 differs)"
    return None


def verify(root: Path, ms: list[Manifest], progress: bool = True) -> dict[str, dict[str, str]]:
    """{dataset: {relative path: problem}} for every file that is missing or altered."""
    out: dict[str, dict[str, str]] = {}
    bar = progress_bar(total=sum(len(m.files) for m in ms), desc="verify", enabled=progress)
    for m in ms:
        for f in m.files:
            why = check_file(root, m, f)
            if why:
                out.setdefault(m.name, {})[f.path] = why
            bar.update(1)
    bar.close()
    return out


def _download(url: str, part: Path) -> bool:
    """``url`` into ``part``, continuing a partial download when the server honours ranges.
    False when the connection ended before the announced length (the part is kept to resume)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as resp:
            content_range = resp.headers.get("Content-Range", "")
            append = have > 0 and resp.status == 206 and content_range.startswith(f"bytes {have}-")
            announced = resp.headers.get("Content-Length")
            got = 0
            with open(part, "ab" if append else "wb") as out:
                try:
                    for chunk in iter(lambda: resp.read(1 << 16), b""):
                        out.write(chunk)
                        got += len(chunk)
                except http.client.IncompleteRead as exc:
                    out.write(exc.partial)
                    return False
            return announced is None or got >= int(announced)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing past what we have: the part is whole
            return True
        raise


def fetch(to: Path, ms: list[Manifest], mirror: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Download what is missing or altered under ``to``; returns counts and the files that failed."""
    todo = [(m, f) for m in ms for f in m.files if check_file(to, m, f)]
    failed: dict[str, str] = {}
    done = 0
    bar = progress_bar(total=sum(f.size for _, f in todo), desc="fetch", unit="B", enabled=progress)
    for m, f in todo:
        target = to / m.folder / f.path
        url = f"{mirror.rstrip('/')}/{m.folder}/{f.path}" if mirror else f.source
        name = f"{m.folder}/{f.path}"
        if url is None:
            failed[name] = "derived file: only a mirror of the data folder has it (--mirror URL)"
            continue
        part = target.with_name(target.name + ".part")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if part.exists() and part.stat().st_size >= f.size and sha256_file(part) != f.sha256:
                part.unlink()  # a full-size leftover that is wrong: start afresh
            got, whole = (part.stat().st_size if part.exists() else 0), True
            for _ in range(MAX_REQUESTS):  # a server may send a range in several pieces
                if got >= f.size and part.exists():
                    break
                whole = _download(url, part)
                before, got = got, part.stat().st_size
                if not whole or got <= before:
                    break
            if got < f.size and not whole:  # cut off: keep the part for the next run
                failed[name] = f"{url}: {got} of {f.size} bytes so far (run again to resume)"
                continue
            if got != f.size or sha256_file(part) != f.sha256:
                part.unlink()  # never kept, never renamed over a good file
                failed[name] = f"downloaded file does not match the manifest ({url})"
                continue
            os.replace(part, target)
            done += 1
            bar.update(f.size)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            failed[name] = f"{url}: {reason} (run again to resume)"
    bar.close()
    return {"fetched": done, "already_good": sum(len(m.files) for m in ms) - len(todo), "failed": failed}
