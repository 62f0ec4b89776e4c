"""Image data sets, read from the files a user has (never downloaded, never unpickled).

* digits: ``sklearn.datasets.load_digits`` (1797 images, 8x8, values 0..16), shipped with scikit-learn;
* MNIST: the four IDX files (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
  ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``; ``.gz`` or not, ``-idx`` or ``.idx``);
* CIFAR-10, binary version: ``data_batch_1.bin`` .. ``data_batch_5.bin`` and ``test_batch.bin``
  (each record: 1 label byte, then 1024 red, 1024 green, 1024 blue bytes, row-major 32x32), in the
  folder or its ``cifar-10-batches-bin/`` subfolder.

A missing or malformed file is a :class:`~mamba4net.core.errors.DataError` naming it, in one line.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mamba4net.core.errors import DataError

IDX_TYPES = {0x08: np.uint8}  # the only element type MNIST uses
CIFAR_RECORD = 1 + 3 * 32 * 32


@dataclass
class Images:
    """``x`` (N, C, H, W) uint8 or float, ``y`` (N,) int64 class labels."""

    x: np.ndarray
    y: np.ndarray

    def take(self, idx: np.ndarray) -> "Images":
        return Images(self.x[idx], self.y[idx])


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format) as an array of its declared shape."""
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    kind, ndim = data[2], data[3]
    if kind not in IDX_TYPES or ndim == 0:
        raise DataError(f"{path}: unsupported IDX element type 0x{kind:02x} or dimension count {ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    size = int(np.prod(shape))
    if len(data) - header != size:
        raise DataError(f"{path}: IDX header declares {shape} ({size} values), the file holds {len(data) - header}")
    return np.frombuffer(data, dtype=IDX_TYPES[kind], offset=header).reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    names = [stem, stem.replace("-idx", ".idx")]
    for name in names + [n + ".gz" for n in names]:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder}: MNIST file {stem}[.gz] not found")


def load_mnist(folder: Path) -> dict[str, Images]:
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x_path, y_path = _find(folder, f"{prefix}-images-idx3-ubyte"), _find(folder, f"{prefix}-labels-idx1-ubyte")
        x, y = read_idx(x_path), read_idx(y_path)
        if x.ndim != 3 or y.ndim != 1:
            raise DataError(f"{x_path}: expected images (N, rows, cols) and labels (N,), got {x.shape} and {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{y_path}: {len(y)} labels for {len(x)} images in {x_path.name}")
        if y.max(initial=0) > 9:
            raise DataError(f"{y_path}: labels outside 0..9")
        out[split] = Images(x[:, None], y.astype(np.int64))  # (N, 1, rows, cols)
    return out


def read_cifar_batch(path: Path) -> Images:
    data = _read_bytes(path)
    if not data or len(data) % CIFAR_RECORD:
        raise DataError(f"{path}: {len(data)} bytes is not a whole number of CIFAR-10 records ({CIFAR_RECORD} bytes)")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
    y = records[:, 0].astype(np.int64)
    if y.max() > 9:
        raise DataError(f"{path}: labels outside 0..9 (not the CIFAR-10 binary version?)")
    return Images(records[:, 1:].reshape(-1, 3, 32, 32), y)


def load_cifar10(folder: Path) -> dict[str, Images]:
    if (folder / "cifar-10-batches-bin").is_dir():
        folder = folder / "cifar-10-batches-bin"
    files = [folder / f"data_batch_{i}.bin" for i in range(1, 6)]
    missing = [f.name for f in files + [folder / "test_batch.bin"] if not f.is_file()]
    if missing:
        raise DataError(f"{folder}: CIFAR-10 binary file(s) not found: {', '.join(missing)}")
    batches = [read_cifar_batch(f) for f in files]
    train = Images(np.concatenate([b.x for b in batches]), np.concatenate([b.y for b in batches]))
    return {"train": train, "test": read_cifar_batch(folder / "test_batch.bin")}


def load_digits_images() -> Images:
    from sklearn.datasets import load_digits

    d = load_digits()
    return Images((d.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None], d.target.astype(np.int64))


def split_indices(n: int, fractions: tuple[float, ...], seed: int, labels: np.ndarray | None = None) -> list[np.ndarray]:
    """Disjoint index sets of the given fractions (the last gets the rest), stratified by label."""
    rng = np.random.default_rng(seed)
    groups = [np.arange(n)] if labels is None else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for group in groups:
        order = rng.permutation(group)
        cuts = np.cumsum([round(f * len(group)) for f in fractions])
        for i, chunk in enumerate(np.split(order, cuts)):
            parts[i].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]
