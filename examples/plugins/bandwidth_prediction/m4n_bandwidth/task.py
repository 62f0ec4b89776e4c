"""The bandwidth task: windows of ``history`` seconds of throughput, the next ``horizon`` seconds
to predict. Metric: mean absolute error in Mbps over every predicted second (lower is better),
beside the fraction of predictions within 20% of the truth."""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mamba4net.api import default_data_dir

from .traces import load_split

SCALE = 5.0  # Mbps: inputs and targets are divided by it
TRACES = ("abr", "traces", "train", "fcc-train")  # the FCC + Norway traces (fcc-train holds every source)


class Windows:
    """``x (N, history, 1)`` and ``y (N, horizon)``, scaled throughput."""

    def __init__(self, traces: list[np.ndarray], history: int, horizon: int, stride: int, limit: int, seed: int):
        xs, ys = [], []
        for tr in traces:
            for s in range(0, len(tr) - history - horizon + 1, stride):
                xs.append(tr[s:s + history])
                ys.append(tr[s + history:s + history + horizon])
        idx = np.arange(len(xs))
        if len(idx) > limit:  # a seeded subset keeps the CPU budget
            idx = np.sort(np.random.default_rng(seed).choice(len(idx), limit, replace=False))
        self.x = torch.tensor(np.array(xs)[idx] / SCALE, dtype=torch.float32)[..., None]
        self.y = torch.tensor(np.array(ys)[idx] / SCALE, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.x)

    def batch(self, indices):
        return {"x": self.x[indices], "y": self.y[indices]}


class BandwidthTask:
    name = "bandwidth"
    metric = "mae_mbps"
    higher_is_better = False
    default_encoder = "bandwidth_encoder"
    default_head = "bandwidth_head"
    default_baselines = ["last_value", "harmonic_mean"]

    def __init__(self, params):
        self.params = params
        root = Path(params.data_dir).expanduser() if params.data_dir else default_data_dir()
        self.folder = root.joinpath(*TRACES)
        self._splits: dict[str, Windows] = {}

    def data(self, split: str) -> Windows:
        if split not in self._splits:
            p = self.params
            traces = load_split(self.folder, split, tuple(p.split_fractions), p.seed)
            limit = p.max_windows.get(split, 10**9)
            self._splits[split] = Windows(traces, p.history, p.horizon, p.stride, limit, p.seed)
        return self._splits[split]

    def loss(self, out, batch):
        return F.mse_loss(out.pred, batch["y"])

    @torch.no_grad()
    def evaluate(self, predictor, split: str) -> dict:
        data = self.data(split)
        preds = []
        for start in range(0, len(data), 512):
            batch = data.batch(torch.arange(start, min(start + 512, len(data))))
            if hasattr(predictor, "predict"):  # a baseline
                preds.append(predictor.predict(batch))
            else:
                was = predictor.training
                predictor.eval()
                preds.append(predictor(batch).pred)
                predictor.train(was)
        pred, true = torch.cat(preds).clamp(min=0) * SCALE, data.y * SCALE
        err = (pred - true).abs()
        return {"mae_mbps": float(err.mean()), "within_20pct": float((err <= 0.2 * true).float().mean()),
                "mae_mbps_1s": float(err[:, 0].mean()), "n_windows": len(data)}
