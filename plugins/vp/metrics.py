"""The VP metric: mean absolute error in degrees with a 360-degree wrap-around.

Same definition as NetLLM (``utils/metrics.py``, ``rotation=True``): per angle the error is
``min(|d|, 360 - |d|)``, averaged over roll, pitch, yaw, every future step and every sample.
We compute it as ``|wrap(d)|`` with ``wrap`` into [-180, 180), which equals ``min(|d|, 360 - |d|)``
for |d| <= 360 and stays correct for any d.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mamba4net.core.stats import mean_interval

from .data import ANGLES, to_absolute, wrap_deg

__all__ = ["MAEAccumulator", "angular_error", "mae_deg", "pred_to_absolute"]


def angular_error(pred_deg: Tensor, true_deg: Tensor) -> Tensor:
    """Elementwise wrapped absolute error in degrees, in [0, 180]."""
    return wrap_deg(pred_deg - true_deg).abs()


def pred_to_absolute(pred: Tensor, last: Tensor) -> Tensor:
    """Normalised delta predictions ``(B, F, 3)`` + last observed angles ``(B, 3)`` -> degrees."""
    return to_absolute(pred, last)


def mae_deg(pred_deg: Tensor, true_deg: Tensor) -> float:
    """MAE in degrees over everything (angles, steps, samples)."""
    return float(angular_error(pred_deg.double(), true_deg.double()).mean())


class MAEAccumulator:
    """Sums wrapped errors batch by batch (float64), per angle; ``result()`` gives the metrics."""

    def __init__(self) -> None:
        self.sum = torch.zeros(3, dtype=torch.float64)
        self.count = 0  # elements per angle (samples x steps)
        self.n_samples = 0
        self.per_sample: list[Tensor] = []  # (B,) each: a sample's MAE over its steps and angles

    def update(self, pred_deg: Tensor, true_deg: Tensor) -> None:
        if pred_deg.shape != true_deg.shape:
            raise ValueError(f"prediction shape {tuple(pred_deg.shape)} != truth shape {tuple(true_deg.shape)}")
        err = angular_error(pred_deg.detach().double().cpu(), true_deg.double().cpu())  # (B, F, 3)
        self.sum += err.reshape(-1, 3).sum(0)
        self.count += err.shape[0] * err.shape[1]
        self.n_samples += err.shape[0]
        self.per_sample.append(err.mean((1, 2)))

    def result(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("no samples were evaluated")
        per_angle = self.sum / self.count
        out = {"mae_deg": float(per_angle.mean())}
        out.update({f"mae_{a}": float(v) for a, v in zip(ANGLES, per_angle)})
        out["n_samples"] = self.n_samples
        out["mae_deg_ci95"] = mean_interval(torch.cat(self.per_sample).tolist())[1]  # over the samples
        return out
