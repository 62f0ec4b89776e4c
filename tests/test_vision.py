"""The vision plugin: digits splits, MNIST (IDX) and CIFAR-10 (binary) loaders on small files the
tests write in the real formats, one-line errors for missing or malformed files, patches, shifts."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mamba4net.core.config import load_config
from mamba4net.core.errors import DataError
from mamba4net.plugins.vision.config import ImageClassificationParams
from mamba4net.plugins.vision.data import read_idx, split_indices
from mamba4net.plugins.vision.encoder import PatchEmbed
from mamba4net.plugins.vision.task import ImageClassificationTask, random_shift

ROOT = Path(__file__).resolve().parents[1]


def _idx(path, array: np.ndarray, magic_type: int = 0x08, gz: bool = False):
    data = bytes([0, 0, magic_type, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def _mnist(folder, gz=False, n_train=20, n_test=6):
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", rng.integers(0, 256, (n, 28, 28)), gz=gz)
        _idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", np.arange(n) % 10, gz=gz)


def test_digits_splits_are_stratified_disjoint_and_complete():
    task = ImageClassificationTask(ImageClassificationParams())
    sizes = {s: len(task.data(s)) for s in ("train", "valid", "test")}
    assert sum(sizes.values()) == 1797 and sizes["valid"] == sizes["test"] == pytest.approx(359, abs=10)
    for split in ("train", "valid", "test"):
        counts = torch.bincount(task.data(split).y, minlength=10)
        assert counts.min() > 0.15 * counts.max()  # every class, in proportion
    batch = task.data("train").batch(torch.arange(4))
    assert batch["image"].shape == (4, 1, 8, 8) and batch["label"].dtype == torch.int64
    assert task.tokens == 16 and task.patch == 2
    # train images are standardised with the training split's statistics
    assert abs(float(task.data("train").x.mean())) < 1e-3


def test_split_indices_partition():
    labels = np.arange(100) % 4
    parts = split_indices(100, (0.2, 0.2), seed=3, labels=labels)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert [len(p) for p in parts] == [20, 20, 60]


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_files(tmp_path, gz):
    _mnist(tmp_path, gz=gz)
    task = ImageClassificationTask(ImageClassificationParams(dataset="mnist", data_dir=str(tmp_path), valid_fraction=0.25))
    assert len(task.data("train")) + len(task.data("valid")) == 20 and len(task.data("test")) == 6
    assert task.data("test").x.shape == (6, 1, 28, 28) and task.tokens == 49
    assert task.data("test").y.tolist() == [0, 1, 2, 3, 4, 5]


def test_mnist_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"MNIST file train-images-idx3-ubyte\[\.gz\] not found"):
        ImageClassificationTask(ImageClassificationParams(dataset="mnist", data_dir=str(tmp_path)))
    _mnist(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-5])  # truncated
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: IDX header declares \(20, 28, 28\)"):
        read_idx(images)
    images.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="train-images-idx3-ubyte: not an IDX file"):
        ImageClassificationTask(ImageClassificationParams(dataset="mnist", data_dir=str(tmp_path)))
    (tmp_path / "bad.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"bad\.gz: cannot be read"):
        read_idx(tmp_path / "bad.gz")
    _mnist(tmp_path)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(5))  # 5 labels for 6 images
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte: 5 labels for 6 images"):
        ImageClassificationTask(ImageClassificationParams(dataset="mnist", data_dir=str(tmp_path)))
    with pytest.raises(DataError, match="task.data_dir: dataset 'mnist' is read from a local folder"):
        ImageClassificationTask(ImageClassificationParams(dataset="mnist"))


def _cifar(folder, per_batch=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = np.concatenate([np.arange(per_batch)[:, None] % 10,
                                  rng.integers(0, 256, (per_batch, 3072))], axis=1).astype(np.uint8)
        (folder / name).write_bytes(records.tobytes())


def test_cifar10_binary_files(tmp_path):
    _cifar(tmp_path / "cifar-10-batches-bin")
    task = ImageClassificationTask(ImageClassificationParams(dataset="cifar10", data_dir=str(tmp_path), valid_fraction=0.2))
    assert len(task.data("train")) + len(task.data("valid")) == 15 and len(task.data("test")) == 3
    assert task.data("test").x.shape == (3, 3, 32, 32) and task.tokens == 64
    # the channels are stored planar: red plane first
    raw = np.frombuffer((tmp_path / "cifar-10-batches-bin" / "test_batch.bin").read_bytes(), np.uint8).reshape(3, 3073)
    first = task.data("test").x[0].numpy()  # standardised: an increasing affine map of the bytes per channel
    for c in range(3):
        plane = raw[0, 1 + 1024 * c : 1 + 1024 * (c + 1)].astype(np.float64)
        assert np.corrcoef(first[c].flatten(), plane)[0, 1] > 0.99999


def test_cifar10_errors_name_the_file(tmp_path):
    _cifar(tmp_path)
    (tmp_path / "data_batch_3.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match=r"data_batch_3\.bin: 100 bytes is not a whole number of CIFAR-10 records"):
        ImageClassificationTask(ImageClassificationParams(dataset="cifar10", data_dir=str(tmp_path)))
    (tmp_path / "test_batch.bin").unlink()
    with pytest.raises(DataError, match=r"CIFAR-10 binary file\(s\) not found: test_batch\.bin"):
        ImageClassificationTask(ImageClassificationParams(dataset="cifar10", data_dir=str(tmp_path)))


def test_patches_in_row_major_order():
    enc = PatchEmbed(channels=1, patch=2, tokens=4, d_model=4, positional=False)
    with torch.no_grad():
        enc.proj.weight.copy_(torch.eye(4))
        enc.proj.bias.zero_()
    image = torch.arange(16.0).view(1, 1, 4, 4)
    tokens = enc({"image": image})  # patch (0,0) = pixels 0,1,4,5; patch (0,1) = 2,3,6,7 ...
    assert tokens[0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]


def test_random_shift_is_seeded_and_keeps_shape():
    x = torch.randn(5, 1, 8, 8)
    torch.manual_seed(0)
    a = random_shift(x, 1)
    torch.manual_seed(0)
    b = random_shift(x, 1)
    assert a.shape == x.shape and torch.equal(a, b)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(5):  # each image is the original moved by at most one pixel, zero-filled
        assert any(torch.equal(a[i], padded[i, :, dy : dy + 8, dx : dx + 8]) for dy in range(3) for dx in range(3))


@pytest.mark.parametrize("name", ["pkd_mnist.yaml", "pkd_cifar10.yaml", "pkd_digits.yaml"])
def test_example_configs_validate(name):
    loaded = load_config(ROOT / "examples" / name)
    assert loaded.method.name == "pkd" and len([r for r in loaded.method.roles if r.kind == "student"]) >= 4
