"""``keep_best``: a stage ends with the weights of its best validation, also across a resume."""

import json

import pytest
import torch
from torch import nn

from mamba4net.core.config import TrainParams
from mamba4net.core.errors import TrainingError
from mamba4net.core.runs import RunDir
from mamba4net.core.trainer import Trainer


class _Data:
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])

    def __len__(self):
        return len(self.x)

    def batch(self, idx):
        return {"x": self.x[idx], "y": self.y[idx]}


def _trainer(tmp_path, scores, *, steps=6, keep_best=True, higher=False):
    """A linear model trained for ``steps``; validation every 2 steps returns the next of
    ``scores`` and records the weights it saw."""
    torch.manual_seed(0)
    module = nn.ModuleDict({"model": nn.Linear(3, 1)})
    seen = []

    def valid_fn():
        seen.append(module["model"].weight.detach().clone())
        return {"metric": scores[len(seen) - 1]}

    def loss_fn(batch):
        return ((module["model"](batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean(), {}

    params = TrainParams(steps=steps, batch_size=8, lr=0.05, warmup_steps=0, eval_every=2,
                         checkpoint_every=2, keep_best=keep_best)
    trainer = Trainer("distill", module, loss_fn, _Data(), params, RunDir(tmp_path).create(), 0,
                      torch.device("cpu"), valid_fn=valid_fn, progress=False, select=("valid_metric", higher))
    return trainer, module, seen


def test_keeps_the_best_validation_weights(tmp_path):
    trainer, module, seen = _trainer(tmp_path, [3.0, 1.0, 2.0])
    final = trainer.fit()
    assert len(seen) == 3 and final["best_step"] == 4
    assert torch.equal(module["model"].weight, seen[1])  # step 4's weights, not step 6's
    assert not torch.equal(seen[1], seen[2])
    assert json.loads((tmp_path / "checkpoints" / "distill" / "best.json").read_text()) == {"step": 4, "value": 1.0}


def test_higher_is_better_and_off(tmp_path):
    trainer, module, seen = _trainer(tmp_path / "a", [3.0, 1.0, 2.0], higher=True)
    assert trainer.fit()["best_step"] == 2 and torch.equal(module["model"].weight, seen[0])
    trainer, module, seen = _trainer(tmp_path / "b", [3.0, 1.0, 2.0], keep_best=False)
    assert "best_step" not in trainer.fit() and torch.equal(module["model"].weight, seen[-1])  # the last
    assert not (tmp_path / "b" / "checkpoints" / "distill" / "best.json").exists()


def test_resume_remembers_the_best(tmp_path):
    trainer, module, seen = _trainer(tmp_path, [1.0, 5.0, 5.0], steps=4)  # best at step 2
    trainer.fit()
    best_weights = seen[0]
    # a longer stage resumed from the step-4 checkpoint: its one new validation (step 6) is worse
    trainer, module, seen = _trainer(tmp_path, [9.0, 9.0], steps=6)
    assert trainer.fit(resume=True)["best_step"] == 2
    assert torch.equal(module["model"].weight, best_weights)


def test_metric_missing_from_validation(tmp_path):
    trainer, _, _ = _trainer(tmp_path, [1.0])
    trainer.select = ("valid_qoe", True)
    with pytest.raises(TrainingError, match="valid_qoe"):
        trainer.fit()
