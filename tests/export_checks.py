"""`mamba4net export` on a finished tiny run, checked against the run's PyTorch student (used by the
VP and ABR pipeline tests, which have just made such a run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "deploy"))  # the deploy example's numpy/onnxruntime code


def export(run: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "mamba4net.core.cli", "export", str(run)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((run / "deploy" / "student.json").read_text())
    assert manifest["max_abs_diff_vs_torch"] <= 1e-4
    return manifest


def _student(run: Path):
    from mamba4net.core.config import load_config
    from mamba4net.core.context import RunContext
    from mamba4net.core.runs import RunDir
    from mamba4net.registry import default_registry

    registry = default_registry()
    loaded = load_config(run / "config.yaml", registry=registry)
    ctx = RunContext(loaded, registry, run=RunDir(run), out=RunDir(run), device=torch.device("cpu"))
    return ctx.task, ctx.model("student").eval()


def check_vp_export(run: Path) -> None:
    from onnx_decider import Decider

    manifest = export(run)
    assert manifest["stateful"] is False and manifest["state"] == {}
    task, model = _student(run)
    batch = task.data("test").batch(torch.arange(64))
    with torch.no_grad():
        want = model(batch).pred.numpy()  # the parallel forward
    got = Decider(run / "deploy" / "student.json").decide(history=batch["history"].numpy())
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def check_abr_export(run: Path, per_trace_qoe: list[float]) -> None:
    from abr_play import OnnxPolicy, test_env
    from onnx_decider import Decider

    from mamba4net.core.paths import default_data_dir
    from mamba4net.plugins.abr.rollout import rollout

    manifest = export(run)
    assert manifest["stateful"] is True and any(s["grows_along"] == 2 for s in manifest["state"].values())
    episode = rollout(test_env(default_data_dir()), OnnxPolicy(Decider(run / "deploy" / "student.json")))
    # every one of the 100 x 47 decisions equal to the PyTorch student's: the same QoE on every trace
    np.testing.assert_allclose(episode.reward[:, 1:].mean(1), per_trace_qoe, atol=1e-9, rtol=0)
    # and the logits of one stream's episode, decision by decision
    task, model = _student(run)
    policy, onnx = task.as_policy(model), OnnxPolicy(Decider(run / "deploy" / "student.json"))
    seen: list[np.ndarray] = []
    model.head.register_forward_hook(lambda module, args, out: seen.append(out.numpy()))
    env = test_env(default_data_dir(), 1)
    obs, _ = env.reset()
    policy.reset(1)
    onnx.reset(1)
    while not env.done:
        actions = policy.act(obs)
        logits = onnx.decider.decide(rtg=onnx.rtg, state=obs.pensieve_state(onnx.s_len), prev_action=onnx.prev,
                                     timestep=np.full(1, onnx.t, dtype=np.int64))
        np.testing.assert_allclose(logits, seen[-1], atol=1e-4, rtol=0)
        assert np.array_equal(logits.argmax(-1), actions)
        onnx.prev, onnx.t = actions.astype(np.int64), onnx.t + 1
        obs, reward, _, _ = env.step(actions)
        policy.observe(reward)
        onnx.observe(reward)
    assert len(seen) == 47
