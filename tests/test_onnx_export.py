"""`mamba4net export`: the decision graph, its explicit state, and its one-line refusals.

The real tasks' exports (a whole ABR episode, VP test windows through onnxruntime) are checked at
the end of ``test_abr_pipeline.py`` and ``test_vp_pipeline.py`` on the runs those tests make."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mamba4net.core.errors import Mamba4netError
from mamba4net.core.model import NetModel
from mamba4net.core.onnx_export import DeploySpec, ExportError, export_onnx, export_run
from mamba4net.plugins.hybrid_mamba.config import HybridMambaParams
from mamba4net.plugins.hybrid_mamba.model import HybridMambaBackbone
from mamba4net.testing.toy import run_tiny_pipeline, toy_registry

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "deploy"))
from onnx_decider import Decider  # noqa: E402


class _Tokens(nn.Module):
    def __init__(self, d_model: int, n: int):
        super().__init__()
        self.proj, self.n = nn.Linear(3, d_model * n), n

    def forward(self, x):
        return self.proj(x).view(x.shape[0], self.n, -1)  # (b, n, D)


def _model(n_tokens: int = 2) -> tuple[NetModel, DeploySpec]:
    torch.manual_seed(0)
    backbone = HybridMambaBackbone(HybridMambaParams(d_model=16, n_layers=3, d_state=8, headdim=8, chunk_size=4,
                                                     d_intermediate=24, attn_heads=2, attn_kv_heads=2))
    model = NetModel(_Tokens(16, n_tokens), backbone, nn.Linear(16, 4)).eval()
    spec = DeploySpec(inputs={"x": torch.randn(1, 3)}, encoder=model.encoder, head=model.head, output="y",
                      stateful=True)
    return model, spec


def _manifest_file(tmp_path: Path, manifest: dict) -> Path:
    import json

    path = tmp_path / "student.json"
    path.write_text(json.dumps(manifest))
    return path


def test_a_stateful_export_carries_its_state_decision_after_decision(tmp_path):
    model, spec = _model(n_tokens=2)
    manifest = export_onnx(model, spec, tmp_path / "student.onnx")
    assert manifest["stateful"] and manifest["tokens_per_decision"] == 2
    grows = {k: v["grows_along"] for k, v in manifest["state"].items()}
    assert grows["state.2.k"] == 2 and grows["state.2.v"] == 2 and grows["state.0.ssm"] is None
    assert manifest["state"]["state.2.k"]["shape"][1] == 0  # the KV cache starts empty
    decider = Decider(_manifest_file(tmp_path, manifest))
    for batch in (1, 3):  # the batch axis is free
        decider.reset(batch)
        state = model.backbone.init_state(batch)
        for _ in range(5):  # from the empty KV cache on
            x = torch.randn(batch, 3)
            tokens = model.encoder(x)
            with torch.no_grad():
                for i in range(2):
                    h, state = model.backbone.step(tokens[:, i], state)
                want = model.head(h).numpy()
            np.testing.assert_allclose(decider.decide(x=x.numpy()), want, atol=1e-5, rtol=0)
        assert decider.state["state.2.k"].shape[2] == 10


def test_a_stateless_export_starts_every_decision_empty(tmp_path):
    model, spec = _model(n_tokens=4)
    spec.stateful = False
    manifest = export_onnx(model, spec, tmp_path / "student.onnx")
    assert manifest["state"] == {}
    decider = Decider(_manifest_file(tmp_path, manifest))
    x = torch.randn(5, 3)
    with torch.no_grad():
        want = model.head(model.backbone(model.encoder(x))[:, -1]).numpy()  # the parallel forward
    for _ in range(2):  # the same answer twice: nothing carried over
        np.testing.assert_allclose(decider.decide(x=x.numpy()), want, atol=1e-5, rtol=0)


def test_an_op_without_an_onnx_form_is_one_line_and_writes_nothing(tmp_path):
    model, spec = _model()

    class Odd(nn.Module):
        def forward(self, h):
            return torch.special.zeta(h.abs() + 2.0, torch.ones_like(h))

    spec.head = Odd()
    with pytest.raises(ExportError, match=r"cannot be exported to ONNX \(.*special_zeta") as err:
        export_onnx(model, spec, tmp_path / "student.onnx")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_a_decider_refuses_a_model_file_that_does_not_match_its_manifest(tmp_path):
    model, spec = _model()
    manifest = export_onnx(model, spec, tmp_path / "student.onnx")
    path = _manifest_file(tmp_path, manifest)
    data = bytearray((tmp_path / "student.onnx").read_bytes())
    data[-1] ^= 1
    (tmp_path / "student.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the manifest"):
        Decider(path)


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    return run_tiny_pipeline(tmp_path_factory.mktemp("toy") / "run")


def test_export_refuses_a_task_without_a_deploy_spec_and_an_unfinished_student(toy_run, tmp_path):
    with pytest.raises(ExportError, match="task 'toy' does not say what a deployed decision is"):
        export_run(toy_run, registry=toy_registry())
    assert not (toy_run / "deploy").exists() or not any((toy_run / "deploy").iterdir())
    unfinished = tmp_path / "run"
    shutil.copytree(toy_run, unfinished)
    (unfinished / "checkpoints" / "distill" / "done.json").unlink()
    with pytest.raises(Mamba4netError, match="stage 'distill' has not finished"):
        export_run(unfinished, registry=toy_registry())
    with pytest.raises(Mamba4netError, match="not a run directory"):
        export_run(tmp_path, registry=toy_registry())
