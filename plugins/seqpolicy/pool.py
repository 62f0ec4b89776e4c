"""Experience pools on disk, without pickle, and cached by the spec that made them.

A pool is a dataclass of numpy arrays plus a few per-episode lists and a ``meta`` dict. On disk it
is ``<name>.safetensors`` (the arrays) and ``<name>.json`` (``format``, the arrays' sha256, the
lists, ``meta``): :func:`mamba4net.core.artifacts.save_arrays` writes both atomically and
:meth:`StoredPool.load` checks everything before a pool is used, any defect a one-line
:class:`~mamba4net.core.errors.DataError` naming the file at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, TypeVar

import numpy as np

from mamba4net.core.artifacts import cached, load_arrays, save_arrays
from mamba4net.core.errors import DataError
from mamba4net.core.paths import cache_dir

P = TypeVar("P", bound="StoredPool")


class StoredPool:
    """Save/load for a pool dataclass. A subclass names its fields:

    * ``ARRAYS``: the numpy fields, in the .safetensors file;
    * ``LISTS``: the per-episode lists (one entry per episode, all the same length), in the sidecar;
    * ``FINITE``: the arrays that must hold finite values;
    * ``FORMAT``: bumped when the layout changes (an old file is then refused, not misread);

    and checks its arrays' shapes against each other in :meth:`check` (raise ``DataError``).
    """

    ARRAYS: ClassVar[tuple[str, ...]] = ()
    LISTS: ClassVar[tuple[str, ...]] = ()
    FINITE: ClassVar[tuple[str, ...]] = ()
    FORMAT: ClassVar[int] = 1
    meta: dict[str, Any]

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.safetensors) and its .json sidecar, each atomically."""
        return save_arrays(path, {k: getattr(self, k) for k in self.ARRAYS},
                           {"meta": self.meta, **{k: getattr(self, k) for k in self.LISTS}}, self.FORMAT)

    @classmethod
    def load(cls: type[P], path: str | Path) -> P:
        arrays, info = load_arrays(path, cls.ARRAYS, cls.FORMAT, "experience pool")
        path = Path(path).with_suffix(".safetensors")
        side = path.with_suffix(".json")
        lists = {k: info.get(k) for k in cls.LISTS}
        missing = [k for k, v in lists.items() if not isinstance(v, list)]
        if missing:
            raise DataError(f"{side}: experience-pool sidecar lacks a list of {missing[0]}")
        if not isinstance(info.get("meta", {}), dict):
            raise DataError(f"{side}: experience-pool sidecar's meta is not a mapping")
        if len({len(v) for v in lists.values()}) > 1:
            raise DataError(f"{side}: experience-pool sidecar lists ({', '.join(cls.LISTS)}) differ in length")
        cls.check(path, arrays, len(lists[cls.LISTS[0]]) if cls.LISTS else 0)
        for k in cls.FINITE:
            if not np.isfinite(arrays[k]).all():
                raise DataError(f"{path}: experience pool holds non-finite values ({k})")
        return cls(**arrays, **lists, meta=info.get("meta", {}))

    @classmethod
    def check(cls, path: Path, arrays: dict[str, np.ndarray], episodes: int) -> None:
        """Raise ``DataError`` if the arrays disagree with each other or with the ``episodes``
        entries of the lists."""


def cached_pool(task: str, pool_dir: str | None, split: str, spec: dict[str, Any], *,
                load: Callable[[Path], P], make: Callable[[str], P], describe: Callable[[P], str]) -> P:
    """The pool of ``split`` with this ``spec``: read from ``pool_dir`` (default: the cache's
    ``<task>/pools``) when one made from the same spec is there, else made and saved, so pools
    are shared across runs."""
    folder = Path(pool_dir).expanduser() if pool_dir else cache_dir() / task / "pools"
    return cached(folder, split, spec, load=load, make=make, describe=describe, what=f"{task}: experience pool")
