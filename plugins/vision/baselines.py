"""Classic baseline: multinomial logistic regression on the raw (standardised) pixels."""

from __future__ import annotations

import numpy as np
import torch

from .config import LogisticRegressionParams


class PixelLogisticRegression:
    name = "logistic_regression"

    def __init__(self, params: LogisticRegressionParams):
        self.params = params
        self.model = None

    def fit(self, task) -> None:
        from sklearn.linear_model import LogisticRegression

        data = task.data("train")
        self.model = LogisticRegression(C=self.params.C, max_iter=self.params.max_iter)
        self.model.fit(data.x.reshape(len(data), -1).numpy(), data.y.numpy())

    def predict(self, batch) -> torch.Tensor:
        x = batch["image"].reshape(len(batch["image"]), -1).numpy()
        return torch.from_numpy(np.asarray(self.model.predict_log_proba(x), dtype=np.float32))
