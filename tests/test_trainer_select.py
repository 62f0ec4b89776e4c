"""``keep_best``: a stage ends with the weights of its best validation, also across a resume."""

import json

import pytest
import torch
from torch import nn

from mamba4net.core.config import TrainParams
from mamba4net.core.errors import DataError, TrainingError
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
    info = json.loads((tmp_path / "checkpoints" / "distill" / "best.json").read_text())
    assert info["step"] == 4 and info["value"] == 1.0 and info["previous"]["step"] == 2
    assert final["best_value"] == 1.0
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "distill").glob("best-*")) == [
        "best-2.json", "best-2.safetensors", "best-4.json", "best-4.safetensors"]  # weights + checksum


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
    # a longer stage resumed from its only checkpoint (step 2; step 4 was the end): the validations
    # it replays (steps 4, 6) are worse, so step 2 stays the best
    trainer, module, seen = _trainer(tmp_path, [9.0, 9.0], steps=6)
    assert trainer.fit(resume=True)["best_step"] == 2
    assert torch.equal(module["model"].weight, best_weights)


def test_resume_forgets_a_best_after_the_checkpoint(tmp_path):
    # best at step 2, then a better one at step 4, after the last checkpoint (step 2) of the stage
    trainer, module, seen = _trainer(tmp_path, [2.0, 1.0, 5.0], steps=6)
    trainer.fit()
    ckpt = tmp_path / "checkpoints" / "distill"
    # as if killed right after step 4's validation, before its checkpoint: resume from step 2
    (ckpt / "latest.json").write_text(json.dumps({"step": 2, "path": "step-000002"}) + "\n")
    trainer, module, seen = _trainer(tmp_path, [3.0, 3.0], steps=6)
    final = trainer.fit(resume=True)
    assert final["best_step"] == 2 and final["best_value"] == 2.0  # step 4's record was the previous run's


def test_corrupt_best_record_is_one_line(tmp_path):
    trainer, _, _ = _trainer(tmp_path, [1.0, 2.0, 3.0])
    trainer.fit()
    (tmp_path / "checkpoints" / "distill" / "best.json").write_text("{not json")
    trainer, _, _ = _trainer(tmp_path, [1.0, 2.0, 3.0], steps=8)
    with pytest.raises(DataError, match=r"best\.json: not valid JSON"):
        trainer.fit(resume=True)


def test_metric_missing_from_validation(tmp_path):
    trainer, _, _ = _trainer(tmp_path, [1.0])
    trainer.select = ("valid_qoe", True)
    with pytest.raises(TrainingError, match="valid_qoe"):
        trainer.fit()
