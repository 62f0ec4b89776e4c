"""``check_method``: the contract checks for a distillation method, on the toy task.

It runs the method's stages end to end on :mod:`mamba4net.testing.toy` with tiny models; stops a
second run right after a checkpoint in the middle of a training stage and a third right after a
stage finished (in-process kills: an exception that nothing catches, after which every model,
context and cache of that run is thrown away, and torch's random state is scrambled), resumes
both, and checks that:

* the resumed runs replay the uninterrupted one: the same weights in every stage's files and the
  same scores for every model;
* ``mamba4net evaluate`` of the finished run, which rebuilds every model from the files the stages
  kept, gives the scores the run reported (a stage that changes a role it does not declare in
  ``writes`` fails here);
* every deployed role is in ``results.json``, the report and ``bench.json``, and every deployed
  student was exported;
* every tap a stage declares exists on that role's model.

Use it in a plugin's tests::

    from mamba4net.testing.methods import check_method

    def test_my_method(m4n_registry, tmp_path):
        m4n_registry.add_plugin(MyMethodPlugin(), name="my_method")
        check_method("my_method", registry=m4n_registry, workdir=tmp_path)
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch

# tiny training sections for the stages a method adds (the toy task learns in a few dozen steps)
TINY_TRAIN = {"steps": 12, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 4}
TINY_BENCH = {"repeats": 1, "warmup": 0, "seq_lens": [16], "history_lens": [4], "memory": False}


class SimulatedKill(BaseException):
    """Raised right after a checkpoint is written: the run stops as if the process had died."""


def method_config(name: str, registry, method_params: dict | None = None, config: dict | None = None) -> dict:
    """A tiny toy-task config for method ``name``, with a tiny ``train`` section for each of its
    training stages (the stage's own default losses kept), merged with ``config``."""
    from mamba4net.core.config import build_method
    from mamba4net.core.yamlio import deep_merge
    from mamba4net.testing.toy import tiny_pipeline_config

    node = {"name": name, **(method_params or {})}
    component = registry.get("methods", name)
    method = build_method(registry, node, component.validate_params({k: v for k, v in node.items() if k != "name"}))
    cfg = tiny_pipeline_config(method=node, benchmark=TINY_BENCH)
    cfg["train"] = {s.name: dict(TINY_TRAIN) for s in method.training_stages}
    return deep_merge(cfg, config or {})


def _ensure_toy(registry) -> None:
    from mamba4net.testing.toy import ToyPlugin

    if "toy" not in registry.kind("tasks"):
        registry.add_plugin(ToyPlugin(), name="toy")


def _finals(run_root: Path, method) -> dict[str, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    out = {}
    for stage in method.stages:
        folder = run_root / "checkpoints" / stage.name
        done = json.loads((folder / "done.json").read_text())
        for role, name in done["writes"].items():
            out[f"{stage.name}/{role}"] = load_file(str(folder / name))
    return out


def _same_scores(want: dict, got: dict, metric: str, when: str) -> None:
    for model, scores in want["models"].items():
        assert model in got["models"], f"{model}: not evaluated {when}"
        a, b = scores[metric], got["models"][model][metric]
        assert abs(a - b) <= 1e-6 * max(1.0, abs(a)), f"{model}: {metric} {b} {when}, {a} in the run"


def check_method(name: str, *, registry=None, method_params: dict | None = None, config: dict | None = None,
                 kill: tuple[str, int] | None = None, workdir: str | Path | None = None) -> dict[str, Any]:
    """Check method ``name`` end to end on the toy task (see the module's docstring); raises
    ``AssertionError`` naming what is wrong. ``kill``: (training stage, checkpoint step) to stop
    the second run at (default: the last training stage, at its first checkpoint). Returns a
    summary: the stages, the roles, the kill point and the results of the uninterrupted run."""
    from mamba4net.core import checkpoint
    from mamba4net.core.config import validate_data
    from mamba4net.core.context import RunContext
    from mamba4net.core.pipeline import evaluate_run, run_pipeline
    from mamba4net.core.runs import RunDir
    from mamba4net.core.taps import expand, tap_points
    from mamba4net.registry import default_registry

    registry = registry or default_registry()
    _ensure_toy(registry)
    loaded = validate_data(method_config(name, registry, method_params, config), registry=registry)
    method = loaded.method
    training = method.training_stages
    assert training, f"method '{name}': no training stage to interrupt"
    stage = kill[0] if kill else training[-1].name
    assert stage in [s.name for s in training], f"method '{name}': '{stage}' is not one of its training stages"
    tp = loaded.train_params(stage)
    step = kill[1] if kill else tp.checkpoint_every
    assert 0 < step < tp.steps and step % tp.checkpoint_every == 0, \
        f"stage '{stage}' writes no checkpoint at step {step} before its end ({tp.steps} steps)"

    boundary = method.stages[max(0, [s.name for s in method.stages].index(stage) - 1)].name
    with tempfile.TemporaryDirectory(prefix="check-method-") as tmp:
        base = Path(workdir) if workdir else Path(tmp)
        full = run_pipeline(loaded, base / "full", registry=registry)

        def save_then_die(original):
            def save(self, s, *args, **kwargs):
                path = original(self, s, *args, **kwargs)
                if self.dir.name == stage and s == step:
                    raise SimulatedKill(f"{stage} step {s}")
                return path
            return save

        def done_then_die(original):
            def mark_done(self, *args, **kwargs):
                original(self, *args, **kwargs)
                if self.dir.name == boundary:
                    raise SimulatedKill(f"after {boundary}")
            return mark_done

        resumed = {}
        for label, name, wrap in (("mid-stage", "save", save_then_die), ("stage-boundary", "mark_done", done_then_die)):
            original = getattr(checkpoint.StageCheckpoints, name)
            setattr(checkpoint.StageCheckpoints, name, wrap(original))
            try:
                run_pipeline(loaded, base / label, registry=registry)
                raise AssertionError(f"the {label} run was not stopped (stage '{stage}' step {step} / '{boundary}')")
            except SimulatedKill:
                pass
            finally:
                setattr(checkpoint.StageCheckpoints, name, original)
            assert not (base / label / "results.json").exists(), f"results were written by the stopped {label} run"
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, ())) ^ 0x5EED)  # nothing may depend on it
            resumed[label] = run_pipeline(loaded, base / label, resume=True, registry=registry)

        a = _finals(full.root, method)
        ra = json.loads((full.root / "results.json").read_text())
        metric = ra["metric"]
        for label, run in resumed.items():
            b = _finals(run.root, method)
            assert a.keys() == b.keys(), f"{label}: other stage files after the resume"
            for key in a:
                assert a[key].keys() == b[key].keys(), f"{key}: other tensors after the {label} resume"
                for t in a[key]:
                    torch.testing.assert_close(
                        b[key][t], a[key][t], rtol=1e-6, atol=1e-7,
                        msg=lambda m, key=key, t=t, label=label: f"{key} tensor {t} differs after the {label} resume: {m}")
            rb = json.loads((run.root / "results.json").read_text())
            _same_scores(ra, rb, metric, f"after the {label} resume")
            rows = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
            keys = [(r["stage"], r["step"], "loss" in r) for r in rows]
            assert len(keys) == len(set(keys)), f"metrics.jsonl repeats steps after the {label} resume"
        # what the stages kept is what the run evaluated
        again = json.loads(evaluate_run(full.root, registry=registry, bench=False).results_path.read_text())
        _same_scores(ra, again, metric, "when evaluate rebuilds the models from the stages' files")

        # deployed roles (those the run produced): results, report, bench, export
        ctx = RunContext(loaded, registry, run=RunDir(full.root), out=RunDir(full.root))
        report = full.report_path.read_text()
        bench = json.loads((full.root / "bench.json").read_text())
        for role in ctx.deployed():
            assert role.name in ra["models"], f"deployed role '{role.name}' is not in results.json"
            assert f"| {role.name} |" in report, f"deployed role '{role.name}' is not in report.md"
            assert role.name in bench["models"], f"deployed role '{role.name}' is not in bench.json"
            if role.kind == "student":
                assert (full.root / "checkpoints" / "export" / f"{role.name}.safetensors").exists(), \
                    f"deployed student '{role.name}' was not exported"

        # taps a stage declares exist on its roles' models
        for s in method.stages:
            for role, patterns in s.taps.items():
                expand(patterns, tap_points(ctx.model(role)), who=f"model of role '{role}' (stage '{s.name}')")
        return {"stages": method.stage_names, "roles": [r.name for r in method.roles], "kill": [stage, step],
                "boundary": boundary, "models": {m: v[metric] for m, v in ra["models"].items()}}
