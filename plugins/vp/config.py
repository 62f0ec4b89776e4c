"""Parameters of the viewport-prediction (VP) task and its components.

Import-light on purpose (pydantic and pathlib only): the plugin module imports these at load time.
Defaults follow NetLLM (``viewport_prediction/config.py``) on Jin2022, see the data README section 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mamba4net.core.paths import default_data_dir

# NetLLM's Jin2022 splits: train/valid/test are the cross product of a video list and a user list;
# videos and users are disjoint between splits.
JIN2022_VIDEOS = {
    "train": [1, 5, 9, 2, 6, 11, 15, 16, 13, 17, 21, 22, 26, 19, 23],
    "valid": [3, 7, 12, 10, 20, 27],
    "test": [4, 8, 14, 18, 24, 25],
}
JIN2022_USERS = {
    "train": [50, 54, 6, 34, 66, 63, 52, 39, 62, 46, 75, 28, 65, 18, 37, 13, 80, 33, 69, 78, 19,
              40, 10, 43, 61, 72, 56, 41, 79, 82, 27, 71, 57, 67, 8, 2, 12, 81, 1, 64, 32, 42],
    "valid": [9, 25, 73, 29, 31, 70, 58, 11, 14, 38, 16, 76, 77, 74, 24, 5, 17, 20, 51, 68, 36],
    "test": [83, 15, 3, 35, 48, 22, 55, 4, 45, 60, 26, 21, 44, 23, 53, 84, 59, 49, 7, 47, 30],
}
SPLITS = ("train", "valid", "test")


def resolve_dataset_dir(data_dir: str | Path | None, dataset: str) -> Path:
    """The folder holding ``video<V>/5Hz/simple_5Hz_user<U>.csv`` for ``dataset``.

    ``data_dir`` may be the shared data root (``<data_dir>/vp/<dataset>``), the VP folder
    (``<data_dir>/<dataset>``) or the dataset folder itself (it holds ``video*`` folders).
    ``None`` means :func:`mamba4net.core.paths.default_data_dir`. Raises ``ValueError`` naming
    every path tried when none exists.
    """
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    candidates = [root / "vp" / dataset, root / dataset]
    for cand in candidates:
        if cand.is_dir():
            return cand
    if root.is_dir() and any(p.is_dir() and p.name.startswith("video") for p in root.iterdir()):
        return root
    tried = ", ".join(str(c) for c in candidates)
    raise ValueError(
        f"VP data folder for dataset '{dataset}' not found: looked for {tried} "
        f"and for video* folders in {root}; set task.data_dir or $MAMBA4NET_DATA"
    )


class VPParams(BaseModel):
    """The ``task: {name: vp, ...}`` node."""

    model_config = ConfigDict(extra="forbid")

    data_dir: str | None = None  # None: default_data_dir(); see resolve_dataset_dir
    dataset: str = "Jin2022"
    his_window: int = Field(10, ge=2)  # samples of history (2 s at 5 Hz)
    fut_window: int = Field(20, ge=1)  # samples to predict (4 s at 5 Hz)
    stride: int = Field(15, ge=1)  # a sample starts every `stride` steps
    trim_start: int = Field(30, ge=0)  # first samples of each trace never used as a start
    trim_end: int = Field(60, ge=0)  # last samples of each trace never used as a start
    frequency: int = Field(5, ge=1)  # the `<f>Hz` subfolder
    train_videos: list[int] = Field(default_factory=lambda: list(JIN2022_VIDEOS["train"]))
    valid_videos: list[int] = Field(default_factory=lambda: list(JIN2022_VIDEOS["valid"]))
    test_videos: list[int] = Field(default_factory=lambda: list(JIN2022_VIDEOS["test"]))
    train_users: list[int] = Field(default_factory=lambda: list(JIN2022_USERS["train"]))
    valid_users: list[int] = Field(default_factory=lambda: list(JIN2022_USERS["valid"]))
    test_users: list[int] = Field(default_factory=lambda: list(JIN2022_USERS["test"]))
    # optional cap per split ({"train": 512, ...}): an evenly spaced, deterministic subset
    max_samples: dict[Literal["train", "valid", "test"], int] | None = None
    loss: Literal["l1", "mse"] = "l1"  # task loss on normalised deltas

    @model_validator(mode="after")
    def _check(self) -> "VPParams":
        for split in SPLITS:
            if not getattr(self, f"{split}_videos") or not getattr(self, f"{split}_users"):
                raise ValueError(f"{split}_videos and {split}_users must not be empty")
        if self.max_samples and any(v < 1 for v in self.max_samples.values()):
            raise ValueError(f"max_samples values must be >= 1, got {self.max_samples}")
        resolve_dataset_dir(self.data_dir, self.dataset)  # raises naming the paths tried
        return self

    @property
    def dataset_dir(self) -> Path:
        return resolve_dataset_dir(self.data_dir, self.dataset)

    def videos(self, split: str) -> list[int]:
        return list(getattr(self, f"{_check_split(split)}_videos"))

    def users(self, split: str) -> list[int]:
        return list(getattr(self, f"{_check_split(split)}_users"))


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
    return split


# ---- components -----------------------------------------------------------------------------


class TrajectoryEncoderParams(BaseModel):
    """``encoders: [{name: vp_trajectory, ...}]``."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(64, ge=1)  # width of the per-step MLP
    absolute: bool = False  # also feed the absolute (normalised) angles of each history step


class RegressionHeadParams(BaseModel):
    """``head: {name: vp_regression, ...}``."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(256, ge=0)  # 0: a single linear layer
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class NoMotionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VelocityParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: int | None = Field(None, ge=2)  # last `window` history samples; None: all of them


class LinearRegressionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    window: int | None = Field(None, ge=2)  # last `window` history samples; None: all of them


class LSTMParams(BaseModel):
    """TRACK-like trajectory-only LSTM seq2seq (see :mod:`.baselines`).

    The defaults fit Jin2022 in about a minute on one busy CPU thread (800 steps of 128 samples).
    Trajectory-only models overfit fast here (valid MAE stops improving after a few hundred
    steps), and absolute angles as extra inputs made the valid MAE worse, hence ``absolute=False``.
    """

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(64, ge=1)
    steps: int = Field(800, ge=1)  # optimiser steps
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    valid_every: int = Field(100, ge=1)  # keep the weights with the best valid MAE
    absolute: bool = False  # also feed absolute (normalised) angles to the encoder
    seed: int = 0
