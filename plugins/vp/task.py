"""The VP task: Jin2022 splits, the supervised loss, and evaluation in degrees."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mamba4net.core.model import eval_mode

from .config import SPLITS, VPParams
from .data import VPData
from .metrics import MAEAccumulator, pred_to_absolute


class VPTask:
    """Viewport prediction: 2 s of head orientation (roll, pitch, yaw) -> the next 4 s.

    Predictions everywhere are ``(B, fut_window, 3)`` normalised offsets from the last observed
    sample (``batch["target"]``'s space); :meth:`evaluate` turns them into degrees and reports
    the wrapped MAE.
    """

    name = "vp"
    metric = "mae_deg"
    higher_is_better = False
    default_encoder = "vp_trajectory"
    default_head = "vp_regression"
    default_baselines = ["linear_regression", "velocity", "no_motion", "lstm"]

    def __init__(self, params: VPParams | None = None):
        self.params = params if params is not None else VPParams()
        self._data: dict[str, VPData] = {}

    @property
    def his_window(self) -> int:
        return self.params.his_window

    @property
    def fut_window(self) -> int:
        return self.params.fut_window

    def data(self, split: str) -> VPData:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; splits: {', '.join(SPLITS)}")
        if split not in self._data:
            self._data[split] = VPData(self.params, split)
        return self._data[split]

    def loss(self, out: Any, batch: dict[str, Tensor]) -> Tensor:
        pred = _pred_of(out)
        target = batch["target"].to(device=pred.device, dtype=pred.dtype)
        if pred.shape != target.shape:
            raise ValueError(f"VP prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if self.params.loss == "mse":
            return F.mse_loss(pred, target)
        return F.l1_loss(pred, target)

    def deploy_spec(self, model):
        """One deployed prediction, for ``mamba4net export`` (see :mod:`.deploy`)."""
        from .deploy import vp_deploy_spec

        return vp_deploy_spec(self, model)

    def evaluate(self, predictor: Any, split: str = "test", batch_size: int = 512) -> dict[str, float]:
        """``{"mae_deg", "mae_roll", "mae_pitch", "mae_yaw", "n_samples"}`` on ``split``.

        ``predictor``: a baseline (has ``predict(batch) -> Tensor``) or a model callable
        ``batch -> ModelOutput`` (``.pred`` is used). Runs under ``torch.no_grad()``; a module is
        put in eval mode and its mode restored afterwards.
        """
        data = self.data(split)
        predict = predictor.predict if hasattr(predictor, "predict") else predictor
        device = _device_of(predictor)
        acc = MAEAccumulator()
        with torch.no_grad(), eval_mode(predictor):
            for start in range(0, len(data), batch_size):
                batch = data.batch(torch.arange(start, min(start + batch_size, len(data))))
                if device is not None:
                    batch = {k: v.to(device) for k, v in batch.items()}
                pred = _pred_of(predict(batch)).float().cpu()
                acc.update(pred_to_absolute(pred, batch["last"].cpu()), batch["future"].cpu())
        return acc.result()

    def __repr__(self) -> str:
        return f"VPTask(dataset={self.params.dataset!r}, his={self.his_window}, fut={self.fut_window})"


def _pred_of(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out
    pred = getattr(out, "pred", None)
    if isinstance(pred, Tensor):
        return pred
    raise TypeError(f"expected a Tensor or a ModelOutput with .pred, got {type(out).__name__}")


def _device_of(predictor: Any) -> torch.device | None:
    if isinstance(predictor, nn.Module):
        for t in predictor.parameters():
            return t.device
        for t in predictor.buffers():
            return t.device
    dev = getattr(predictor, "device", None)
    return torch.device(dev) if isinstance(dev, (str, torch.device)) else None
