"""The ``image_classification`` task: splits, cross-entropy, accuracy.

Splits: digits is cut (stratified, seeded) into train / valid / test; MNIST and CIFAR-10 keep their
official test set, and a seeded share of the training set is the validation split. Pixels are
scaled to [0, 1] and standardised per channel with the training split's mean and deviation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mamba4net.core.errors import DataError
from mamba4net.core.model import eval_mode
from mamba4net.core.protocols import Batch, ModelOutput

from .config import ImageClassificationParams
from .data import Images, load_cifar10, load_digits_images, load_mnist, split_indices

DEFAULT_PATCH = {"digits": 2, "mnist": 4, "cifar10": 4}


class ImageData:
    """One split as tensors: ``image`` (N, C, H, W) float32 standardised, ``label`` (N,) int64.
    ``shift`` > 0: each batch's images are translated by up to that many pixels (zero fill), drawn
    from torch's global generator (which the trainer seeds for every step)."""

    def __init__(self, x: Tensor, y: Tensor, shift: int = 0):
        self.x, self.y, self.shift = x, y, shift

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, indices: Tensor) -> Batch:
        x = self.x[indices]
        if self.shift:
            x = random_shift(x, self.shift)
        return {"image": x, "label": self.y[indices]}


def random_shift(x: Tensor, shift: int) -> Tensor:
    """Each image (B, C, H, W) moved by (dy, dx) in [-shift, shift]^2, zero-filled."""
    b, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift))  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * shift + 1, (2, b))
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(b)])


class ImageClassificationTask:
    name = "image_classification"
    metric = "accuracy"
    higher_is_better = True
    default_encoder = "patch_embed"
    default_head = "classifier"
    default_baselines = ["logistic_regression"]

    def __init__(self, params: ImageClassificationParams):
        self.params = params
        raw = self._load(params)
        self.n_classes = 10
        _, self.channels, self.height, self.width = raw["train"].x.shape
        self.patch = params.patch or DEFAULT_PATCH[params.dataset]
        if self.height % self.patch or self.width % self.patch:
            raise DataError(f"task.patch: {self.patch} does not divide the {self.height}x{self.width} images")
        train = raw["train"].x.astype(np.float32) / 255.0
        mean = train.mean(axis=(0, 2, 3), keepdims=True)
        std = train.std(axis=(0, 2, 3), keepdims=True) + 1e-6
        self._splits = {}
        for split, images in raw.items():
            x = torch.from_numpy((images.x.astype(np.float32) / 255.0 - mean) / std)
            shift = params.augment_shift if split == "train" else 0
            self._splits[split] = ImageData(x, torch.from_numpy(images.y), shift)

    @staticmethod
    def _load(p: ImageClassificationParams) -> dict[str, Images]:
        if p.dataset == "digits":
            images = load_digits_images()
            valid, test, train = split_indices(len(images.y), (p.valid_fraction, p.valid_fraction), p.split_seed,
                                               images.y)
            out = {"train": images.take(train), "valid": images.take(valid), "test": images.take(test)}
        else:
            if p.data_dir is None:
                raise DataError(f"task.data_dir: dataset '{p.dataset}' is read from a local folder; none given "
                                "(nothing is downloaded)")
            folder = Path(p.data_dir).expanduser()
            if not folder.is_dir():
                raise DataError(f"{folder}: no such folder (task.data_dir of dataset '{p.dataset}')")
            sets = load_mnist(folder) if p.dataset == "mnist" else load_cifar10(folder)
            valid, train = split_indices(len(sets["train"].y), (p.valid_fraction,), p.split_seed, sets["train"].y)
            out = {"train": sets["train"].take(train), "valid": sets["train"].take(valid), "test": sets["test"]}
        if p.max_train is not None:
            out["train"] = out["train"].take(np.arange(min(p.max_train, len(out["train"].y))))
        return out

    @property
    def tokens(self) -> int:
        """Patch tokens per image."""
        return (self.height // self.patch) * (self.width // self.patch)

    def data(self, split: str) -> ImageData:
        return self._splits[split]

    def loss(self, out: ModelOutput, batch: Batch) -> Tensor:
        return F.cross_entropy(out.pred, batch["label"])

    @torch.no_grad()
    def logits(self, predictor: Any, split: str) -> Tensor:
        """``predictor``'s logits (or scores) for every image of a split, in order."""
        data = self.data(split)
        outs = []
        with eval_mode(predictor):
            for start in range(0, len(data), self.params.eval_batch_size):
                batch = data.batch(torch.arange(start, min(len(data), start + self.params.eval_batch_size)))
                if hasattr(predictor, "predict"):
                    outs.append(torch.as_tensor(predictor.predict(batch)))
                else:
                    device = next(iter(predictor.parameters()), torch.empty(0)).device \
                        if hasattr(predictor, "parameters") else torch.device("cpu")
                    outs.append(predictor({k: v.to(device) for k, v in batch.items()}).pred.float().cpu())
        return torch.cat(outs)

    def evaluate(self, predictor: Any, split: str) -> dict[str, float]:
        y = self.data(split).y
        logits = self.logits(predictor, split)
        return {"accuracy": float((logits.argmax(-1) == y).float().mean()),
                "nll": float(F.cross_entropy(logits.float(), y)), "n_samples": len(y)}
