"""Classic VP baselines. Each answers like the head: ``predict(batch) -> (B, F, 3)`` normalised
offsets from the last observed sample (see :mod:`.data`), so one evaluation path scores them all.

* ``no_motion``: the head stays where it was last seen (all-zero offsets). On Jin2022 this simple
  rule is hard to beat (test MAE ~9.8 degrees, below every published number), so it is the
  reference a learned model must clear, beside the published baselines.
* ``velocity``: constant-velocity extrapolation. The velocity is the mean over the history window,
  ``(h[-1] - h[-w]) / (w - 1)``, which is NetLLM's ``VelocityMethod`` (``models/velocity.py``).
* ``linear_regression``: per sample and per angle, an ordinary least-squares line ``a + b*i`` fit to
  the history steps ``i = 0..w-1`` and evaluated at ``i = w .. w+F-1``. NetLLM's ``regression``
  baseline (``models/regression.py``, sklearn ``LinearRegression``) refits autoregressively, one
  step at a time, on the history plus its own previous predictions; every appended point lies on
  the current line (zero residual), so the least-squares fit never changes and the result is the
  same one-shot extrapolation computed here in closed form.
* ``lstm``: a TRACK-like trajectory-only seq2seq (TRACK, Rondon et al. TPAMI'21, without its
  saliency branch; NetLLM's ``models/track.py``): an LSTM encodes the history, an LSTM decoder
  started from the encoder state emits one step at a time, each output a *displacement* added to
  the previous position, which is fed back as the next input.

Both rule-based baselines work in the wrapped relative space (NetLLM's work on raw angles, so a
trajectory crossing the +-180 seam extrapolates wildly there; ours do not).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import Tensor, nn

from .config import LSTMParams
from .data import SCALE, to_absolute
from .metrics import MAEAccumulator

__all__ = ["LSTMBaseline", "LinearRegressionBaseline", "NoMotionBaseline", "TrackLSTM", "VelocityBaseline"]


class _RuleBaseline:
    """Nothing to learn: ``fit`` is a no-op. No ``state_dict`` on purpose: the engine saves the
    weights of baselines that have one."""

    name = "rule"

    def fit(self, task: Any = None, budget: Any = None) -> None:
        return None

    def _window(self, history: Tensor, window: int | None) -> Tensor:
        w = history.shape[1] if window is None else min(window, history.shape[1])
        return history[:, -w:].double()  # (B, w, 3)


class NoMotionBaseline(_RuleBaseline):
    name = "no_motion"

    def __init__(self, fut_window: int = 20):
        self.fut_window = fut_window

    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        h = batch["history"]  # (B, H, 3), relative to the last sample, which is 0
        return h.new_zeros(h.shape[0], self.fut_window, h.shape[2])  # (B, F, 3)


class VelocityBaseline(_RuleBaseline):
    name = "velocity"

    def __init__(self, fut_window: int = 20, window: int | None = None):
        self.fut_window, self.window = fut_window, window

    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        h = self._window(batch["history"], self.window)  # (B, w, 3)
        v = (h[:, -1] - h[:, 0]) / (h.shape[1] - 1)  # (B, 3) mean velocity per step
        k = torch.arange(1, self.fut_window + 1, dtype=h.dtype, device=h.device)  # (F,)
        pred = h[:, -1:, :] + k[None, :, None] * v[:, None, :]  # (B, F, 3)
        return pred.to(batch["history"].dtype)


class LinearRegressionBaseline(_RuleBaseline):
    name = "linear_regression"

    def __init__(self, fut_window: int = 20, window: int | None = None):
        self.fut_window, self.window = fut_window, window

    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        h = self._window(batch["history"], self.window)  # (B, w, 3)
        w = h.shape[1]
        i = torch.arange(w, dtype=h.dtype, device=h.device)  # (w,)
        ic = i - i.mean()
        ym = h.mean(dim=1, keepdim=True)  # (B, 1, 3)
        b = (ic[None, :, None] * (h - ym)).sum(1) / (ic * ic).sum()  # (B, 3) slope per step
        a = ym[:, 0] - b * i.mean()  # (B, 3) intercept at i = 0
        j = torch.arange(w, w + self.fut_window, dtype=h.dtype, device=h.device)  # (F,)
        pred = a[:, None, :] + j[None, :, None] * b[:, None, :]  # (B, F, 3)
        return pred.to(batch["history"].dtype)


class TrackLSTM(nn.Module):
    """Encoder LSTM over the history, autoregressive decoder LSTM cell producing displacements.

    Inputs are divided by ``x_scale`` and displacements multiplied by ``y_scale`` (buffers, set
    from the training data by :meth:`LSTMBaseline.fit`): normalised offsets are ~0.01-0.1, far
    below the range where an LSTM's default initialisation reacts.
    """

    def __init__(self, fut_window: int, hidden: int = 64, absolute: bool = False):
        super().__init__()
        self.fut_window, self.absolute = fut_window, absolute
        n_in = 6 if absolute else 3
        self.encoder = nn.LSTM(n_in, hidden, batch_first=True)
        self.decoder = nn.LSTMCell(3, hidden)
        self.out = nn.Linear(hidden, 3)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("x_scale", torch.ones(n_in))
        self.register_buffer("y_scale", torch.ones(3))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        h = batch["history"]  # (B, H, 3)
        x = torch.cat([h, batch["history_abs"]], dim=-1) if self.absolute else h  # (B, H, 3|6)
        _, (hn, cn) = self.encoder(x / self.x_scale)  # (1, B, hidden) each
        state = (hn[0], cn[0])
        pos = h[:, -1]  # (B, 3) the last observed position (0 in relative space)
        preds = []
        for _ in range(self.fut_window):
            state = self.decoder(pos / self.x_scale[:3], state)  # (B, hidden) x2
            pos = pos + self.out(state[0]) * self.y_scale  # next position = previous + displacement
            preds.append(pos)
        return torch.stack(preds, dim=1)  # (B, F, 3)


@torch.no_grad()
def _set_scales(model: TrackLSTM, train: Any) -> None:
    """Input and displacement scales from the training split (per angle standard deviations)."""
    b = train.batch(torch.arange(len(train)))
    x = torch.cat([b["history"], b["history_abs"]], dim=-1) if model.absolute else b["history"]
    steps = torch.diff(torch.cat([torch.zeros_like(b["target"][:, :1]), b["target"]], dim=1), dim=1)
    model.x_scale.copy_(x.reshape(-1, x.shape[-1]).std(0).clamp_min(1e-4))
    model.y_scale.copy_(steps.reshape(-1, 3).std(0).clamp_min(1e-4))


def _degree_weights(device: torch.device | None = None) -> Tensor:
    """Per-angle weights that turn an L1 on normalised deltas into degrees / 180 (the metric's units)."""
    return torch.tensor(SCALE, device=device) / 180.0


class LSTMBaseline:
    """TRACK-like trajectory-only LSTM, trained on the train split with a step budget.

    Loss: L1 on the normalised deltas weighted by (1, 0.5, 1), i.e. the error in degrees / 180
    (the metric's weighting; an unweighted L1 would count pitch twice). Every ``valid_every``
    steps the valid MAE is measured and the best weights are kept. Seeded; the global RNG is left
    untouched. ``fit_info`` records steps, best valid MAE and wall time after ``fit``.
    """

    name = "lstm"

    def __init__(self, fut_window: int = 20, params: LSTMParams | None = None):
        self.params = params or LSTMParams()
        self.fut_window = fut_window
        self.fit_info: dict[str, Any] = {}
        self.model = self._new_model()

    def _new_model(self) -> TrackLSTM:
        p = self.params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            return TrackLSTM(self.fut_window, p.hidden, p.absolute)

    # -- training --
    def fit(self, task: Any, budget: int | None = None) -> None:
        """Train on ``task.data("train")``, select on ``task.data("valid")``.

        ``budget``: optimiser steps, overriding ``params.steps`` when given.
        """
        p = self.params
        steps = int(budget) if budget is not None else p.steps
        train, valid = task.data("train"), task.data("valid")
        self.model = self._new_model()
        model = self.model.train()
        _set_scales(model, train)
        opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p.lr, total_steps=steps, pct_start=0.1)
        gen = torch.Generator().manual_seed(p.seed)
        weights = _degree_weights()
        n = len(train)
        perm, pos = torch.randperm(n, generator=gen), 0
        best = (float("inf"), 0, copy.deepcopy(model.state_dict()))
        history = []
        t0 = time.perf_counter()
        for step in range(1, steps + 1):
            if pos + p.batch_size > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + p.batch_size]
            pos += p.batch_size
            batch = train.batch(idx)
            pred = model(batch)
            loss = ((pred - batch["target"]).abs() * weights).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % p.valid_every == 0 or step == steps:
                mae = self._mae(valid)
                history.append({"step": step, "train_loss_deg": float(loss.detach()) * 180.0, "valid_mae_deg": mae})
                if mae < best[0]:
                    best = (mae, step, copy.deepcopy(model.state_dict()))
                model.train()
        model.load_state_dict(best[2])
        model.eval()
        self.fit_info = {"steps": steps, "best_step": best[1], "best_valid_mae_deg": best[0],
                         "seconds": time.perf_counter() - t0, "history": history}

    @torch.no_grad()
    def _mae(self, data: Any, batch_size: int = 1024) -> float:
        self.model.eval()
        acc = MAEAccumulator()
        for start in range(0, len(data), batch_size):
            b = data.batch(torch.arange(start, min(start + batch_size, len(data))))
            acc.update(to_absolute(self.model(b), b["last"]), b["future"])
        return acc.result()["mae_deg"]

    # -- inference --
    @torch.no_grad()
    def predict(self, batch: dict[str, Tensor]) -> Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            dev = next(self.model.parameters()).device
            return self.model({k: v.to(dev) for k, v in batch.items()})
        finally:
            self.model.train(was_training)

    def state_dict(self) -> dict[str, Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.model.load_state_dict(state)
        self.model.eval()
