"""Parameters of the vision plugin's components (import-light: pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ImageClassificationParams(BaseModel):
    """``dataset``: ``digits`` (scikit-learn's 1797 8x8 images, shipped with it), ``mnist`` (IDX files,
    gz or not) or ``cifar10`` (the binary version) read from ``data_dir``."""

    model_config = ConfigDict(extra="forbid")
    dataset: Literal["digits", "mnist", "cifar10"] = "digits"
    data_dir: str | None = Field(None, description="folder of the MNIST / CIFAR-10 files (not used by digits)")
    patch: int | None = Field(None, gt=0, description="patch side in pixels; None: 2 (digits), 4 (mnist, cifar10)")
    valid_fraction: float = Field(0.2, gt=0, lt=1, description="digits: share of the images kept for valid (and "
                                  "as much again for test); mnist/cifar10: share of the training set for valid")
    max_train: int | None = Field(None, gt=0, description="use only the first N training images (quick runs)")
    split_seed: int = Field(0, description="seed of the train/valid(/test) split")
    augment_shift: int = Field(0, ge=0, description="training batches only: shift each image by up to this many "
                               "pixels (seeded by the trainer's step; leave 0 where a stage caches a model's outputs "
                               "over the training split, which would then be computed on other shifts)")
    eval_batch_size: int = Field(1024, gt=0)


class PatchEmbedParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    positional: bool = Field(True, description="a learned position embedding per patch")


class ClassifierHeadParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pool: Literal["mean", "last"] = Field("mean", description="mean over the patch tokens, or the last token")


class ViTParams(BaseModel):
    """A pre-norm Transformer encoder over the patch tokens (bidirectional attention)."""

    model_config = ConfigDict(extra="forbid")
    d_model: int = Field(128, gt=0)
    n_layers: int = Field(4, gt=0)
    n_heads: int = Field(4, gt=0)
    mlp_ratio: float = Field(2.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _heads_divide(self) -> "ViTParams":
        if self.d_model % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}")
        return self


class LogisticRegressionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    C: float = Field(1.0, gt=0, description="inverse regularisation strength")
    max_iter: int = Field(500, gt=0)
