"""Where things live: the repository root, the shared data folder, the cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_data_dir() -> Path:
    """``$MAMBA4NET_DATA`` if set, else ``../shared/data`` beside the repository root when it
    exists, else the folder ``mamba4net data fetch`` fills (``<cache>/data``) when that exists."""
    env = os.environ.get("MAMBA4NET_DATA")
    if env:
        return Path(env).expanduser()
    shared = (REPO_ROOT.parent / "shared" / "data").resolve()
    if shared.is_dir():
        return shared
    cache = Path(os.environ.get("MAMBA4NET_CACHE", Path.home() / ".cache" / "mamba4net")).expanduser() / "data"
    return cache if cache.is_dir() else shared


def cache_dir() -> Path:
    """``$MAMBA4NET_CACHE`` if set, else ``~/.cache/mamba4net``; created on first use."""
    path = Path(os.environ.get("MAMBA4NET_CACHE", Path.home() / ".cache" / "mamba4net")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
