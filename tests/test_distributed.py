"""DeepSpeed-driven training: config, launcher, and 2-process runs against a 1-process PyTorch run.

The end-to-end tests start real ranks (2 CPU processes, gloo) on the toy pipeline. DeepSpeed's
shared-memory op is compiled once (40-50 s) into the project cache and reused afterwards.
"""

import argparse
import json
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from mamba4net.core import distributed as dist
from mamba4net.core.config import deep_merge, validate_data
from mamba4net.core.errors import ConfigError, DataError
from mamba4net.testing.toy import tiny_pipeline_config

# the toy pipeline without the benchmark stage; distillation accumulates 2 micro-batches per step
BASE = {"strategy": {"name": "mamba4net", "benchmark": False}, "train": {"distill": {"grad_accum": 2}}}


def _overrides(**extra):
    return deep_merge(BASE, extra)


# one rank of a toy run; rank 0 can SIGKILL itself right after a DeepSpeed checkpoint is complete
# (having written, with the other ranks, the live fp32 weights of that moment beside the run)
RANK = textwrap.dedent("""
    import json, logging, os, signal, sys
    out, overrides, resume, kill_at = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    logging.basicConfig(level=logging.INFO, filename=f"{out}.rank{os.environ['RANK']}.log")
    from mamba4net.registry.manager import Registry, set_default_registry
    from mamba4net.testing.toy import ToyPlugin, tiny_pipeline_config
    from mamba4net.core.config import validate_data
    from mamba4net.core.pipeline import run_pipeline
    from mamba4net.core import checkpoint

    if ":" in kill_at:
        stage, step = kill_at.split(":")
        original = checkpoint.StageCheckpoints.save_deepspeed
        def save_then_die(self, s, engine, *a, **k):
            path = original(self, s, engine, *a, **k)
            if self.dir.name == stage and s == int(step):
                from safetensors.torch import save_file
                from mamba4net.core.ds_engine import full_state
                live = full_state(engine, engine.module.model, trainable_only=True)  # every rank
                if os.environ["RANK"] == "0":
                    save_file(live, f"{out}.live.safetensors")
                    os.kill(os.getpid(), signal.SIGKILL)
            return path
        checkpoint.StageCheckpoints.save_deepspeed = save_then_die
    reg = Registry(); reg.add_plugin(ToyPlugin(), name="toy"); set_default_registry(reg)
    if kill_at == "nan":  # a loss term that turns NaN at its 7th call
        import torch
        from mamba4net.core.hookspecs import hookimpl
        from mamba4net.core.errors import TrainingError
        class NaNLoss:
            @hookimpl
            def mamba4net_register_losses(self, register):
                def build(params, *, task, d_student, d_teacher):
                    calls = {"n": 0}
                    def term(student, teacher, batch):
                        calls["n"] += 1
                        return student.pred.sum() * 0 + (float("nan") if calls["n"] > 6 else 0.0)
                    return term
                register("nan_after_6", build)
        reg.add_plugin(NaNLoss(), name="nanloss")
        overrides["train"]["adapt_teacher"] = {"losses": [{"name": "task"}, {"name": "nan_after_6"}]}
    try:
        run_pipeline(validate_data(tiny_pipeline_config(**overrides), registry=reg), out, resume=resume, registry=reg)
    except Exception as err:  # the one-line message, for the test to read
        open(f"{out}.rank{os.environ['RANK']}.error", "w").write(f"{type(err).__name__}: {err}")
        raise
""")


def _launch(tmp_path, out, overrides, nproc=2, resume=False, kill_at="-"):
    script = tmp_path / "rank.py"
    script.write_text(RANK)
    cmd = [sys.executable, str(script), str(out), json.dumps(overrides), "1" if resume else "0", kill_at]
    return dist.launch_local(cmd, nproc, timeout_s=400)


def _losses(run_root):
    rows = [json.loads(x) for x in (run_root / "metrics.jsonl").read_text().splitlines()]
    return {(r["stage"], r["step"]): r["loss"] for r in rows if "loss" in r}


def _assert_same_weights(a_root, b_root, atol):
    for stage in ("adapt_teacher", "distill"):
        a = load_file(str(a_root / "checkpoints" / stage / "final.safetensors"))
        b = load_file(str(b_root / "checkpoints" / stage / "final.safetensors"))
        assert a.keys() == b.keys(), stage
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=atol, msg=f"{stage}: {k}")


@pytest.fixture(scope="module")
def torch_run(tmp_path_factory):
    """The reference: one process, plain PyTorch engine, same seed and global batch."""
    from mamba4net.testing.toy import run_tiny_pipeline

    return run_tiny_pipeline(tmp_path_factory.mktemp("torch") / "run", **BASE)


# -- config -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("runtime, message", [
    ({"zero_stage": 3}, r"runtime: .*zero_stage only apply to engine: deepspeed \(engine is torch\)"),
    ({"engine": "deepspeed", "zero_stage": 4}, r"runtime\.zero_stage.*less than or equal to 3"),
    ({"engine": "deepspeed", "zero_stage": 0, "offload": "cpu"}, r"offload needs zero_stage 1, 2 or 3"),
    ({"engine": "deepspeed", "precision": "fp8"}, r"runtime\.precision"),
    ({"engine": "deepspeed", "deepspeed_config": "/nonexistent/ds.json"}, r"DeepSpeed config file not found: /nonexistent/ds\.json"),
])
def test_runtime_options_are_validated(m4n_registry, runtime, message):
    with pytest.raises(ConfigError, match=message) as err:
        validate_data(tiny_pipeline_config(runtime=runtime), registry=m4n_registry)
    assert "\n" not in str(err.value)


def test_user_deepspeed_json(tmp_path, m4n_registry):
    from mamba4net.core.ds_engine import build_config

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON"):
        validate_data(tiny_pipeline_config(runtime={"engine": "deepspeed", "deepspeed_config": str(bad)}),
                      registry=m4n_registry)
    owned = tmp_path / "owned.json"
    owned.write_text(json.dumps({"optimizer": {"type": "Adam"}, "gradient_clipping": 2.0}))
    with pytest.raises(ConfigError, match=r"sets gradient_clipping, optimizer, which come from train\.<stage>"):
        validate_data(tiny_pipeline_config(runtime={"engine": "deepspeed", "deepspeed_config": str(owned)}),
                      registry=m4n_registry)
    good = tmp_path / "ds.json"
    good.write_text(json.dumps({"zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0}}))
    loaded = validate_data(tiny_pipeline_config(runtime={"engine": "deepspeed", "deepspeed_config": str(good)},
                                                train={"distill": {"grad_accum": 3}}), registry=m4n_registry)
    cfg, distill = loaded.cfg, loaded.train_params("distill")
    ds = build_config(distill, cfg.runtime, world=4, device=torch.device("cpu"))
    assert ds["train_micro_batch_size_per_gpu"] == 4 and ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == 48 and ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"] == {"stage": 3, "stage3_param_persistence_threshold": 0}  # JSON wins
    assert "optimizer" not in ds and ds["zero_allow_untested_optimizer"] is True
    with pytest.raises(ConfigError, match=r"batch_size 16 can't be split evenly over 3 processes"):
        build_config(distill, cfg.runtime, world=3, device=torch.device("cpu"))
    fp16 = cfg.runtime.model_copy(update={"precision": "fp16"})
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        build_config(distill, fp16, world=1, device=torch.device("cpu"))


def test_checkpoint_loads_never_unpickle_arbitrary_classes(tmp_path):
    from mamba4net.core.ds_engine import safe_load

    ok = tmp_path / "ok.pt"
    torch.save({"module": {"w": torch.ones(2)}, "global_steps": 3}, ok)
    assert safe_load(str(ok))["global_steps"] == 3
    evil = tmp_path / "evil.pt"
    torch.save({"payload": argparse.Namespace(a=1)}, evil)  # any class outside the allow-list
    with pytest.raises(DataError, match=r"evil\.pt: unreadable DeepSpeed checkpoint \(Unsupported global: GLOBAL argparse\.Namespace"):
        safe_load(str(evil))
    torn = tmp_path / "torn.pt"
    torn.write_bytes(ok.read_bytes()[:40])
    with pytest.raises(DataError, match=r"torn\.pt: unreadable DeepSpeed checkpoint"):
        safe_load(str(torn))


# -- launcher -----------------------------------------------------------------------------------------
def test_nproc_launches_ranks_of_the_same_run(tmp_path, m4n_registry, monkeypatch, capsys):
    import yaml

    from mamba4net.core import cli

    calls = []
    monkeypatch.setattr(dist, "launch_local", lambda cmd, nproc: calls.append((cmd, nproc)) or 0)
    monkeypatch.delenv("RANK", raising=False)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_pipeline_config(runtime={"engine": "deepspeed"})))
    assert cli.main(["run", str(cfg), "--nproc", "2", "--set", "seed=3", "--out", str(tmp_path / "r")]) == 0
    (cmd, nproc), = calls
    assert nproc == 2 and cmd[:3] == [sys.executable, "-m", "mamba4net.core.cli"]
    assert cmd[3:] == ["run", str(cfg), "--set", "seed=3", "--out", str(tmp_path / "r")]
    # without --out, the launcher picks the run folder once, for every rank
    assert cli.main(["run", str(cfg), "--nproc", "2", "--resume", "--out", str(tmp_path / "r")]) == 0
    assert calls[-1][0][-2:] == [str(tmp_path / "r"), "--resume"]
    cfg.write_text(yaml.safe_dump(tiny_pipeline_config()))
    assert cli.main(["run", str(cfg), "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("--nproc 2: several processes need runtime.engine: deepspeed (add --set runtime.engine=deepspeed)")
    assert "\n" not in err


def test_a_failing_rank_stops_the_others():
    code = "import os, sys, time; time.sleep(120) if os.environ['RANK'] == '0' else sys.exit(3)"
    assert dist.launch_local([sys.executable, "-c", code], 2, timeout_s=60) == 3
    assert dist.launch_local([sys.executable, "-c", "import time; time.sleep(30)"], 2, timeout_s=1) == 124


# -- 2 processes against 1 -------------------------------------------------------------------------------
def test_two_ranks_zero2_match_one_torch_process(tmp_path, torch_run):
    out = tmp_path / "ds"
    assert _launch(tmp_path, out, _overrides(runtime={"engine": "deepspeed", "zero_stage": 2})) == 0
    _assert_same_weights(torch_run, out, atol=1e-5)
    ref, got = _losses(torch_run), _losses(out)
    assert ref.keys() == got.keys()  # rank 0 alone logged, once per step
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-5), key
    a = json.loads((torch_run / "results.json").read_text())["models"]
    b = json.loads((out / "results.json").read_text())["models"]
    assert b["student"]["mse"] == pytest.approx(a["student"]["mse"], rel=1e-4)
    assert b["teacher"]["mse"] == pytest.approx(a["teacher"]["mse"], rel=1e-4)


def test_zero3_sharded_teacher_killed_then_resumed(tmp_path, torch_run):
    out = tmp_path / "ds3"
    over = _overrides(runtime={"engine": "deepspeed", "zero_stage": 3, "shard_teacher": True},
                      train={"distill": {"cache_teacher": True}})
    assert _launch(tmp_path, out, over, kill_at="distill:8") == 128 + 9  # rank 0 SIGKILLed
    stage = out / "checkpoints" / "distill"
    assert json.loads((stage / "latest.json").read_text()) == {"step": 8, "path": "ds/step-000008"}
    assert sorted(p.name for p in (stage / "ds" / "step-000008").glob("zero_pp_rank_*_optim_states.pt")) == [
        "zero_pp_rank_0_mp_rank_00_optim_states.pt", "zero_pp_rank_1_mp_rank_00_optim_states.pt"]
    assert not (out / "results.json").exists()
    # offline consolidation of the sharded checkpoint = the weights the ranks held at that step
    from mamba4net.core.ds_engine import consolidate

    merged, live = consolidate(stage / "ds" / "step-000008"), load_file(str(tmp_path / "ds3.live.safetensors"))
    assert live and set(live) <= set(merged)
    for k in live:
        assert torch.equal(merged[k], live[k]), k
    # the frozen teacher was sharded: each rank held part of it
    held = [line for line in (tmp_path / "ds3.rank0.log").read_text().splitlines() if "sharded with ZeRO-3" in line]
    n_held, n_full = (int(w) for w in held[0].split("holds ")[1].split(" parameters")[0].split(" of its "))
    assert 0 < n_held < n_full
    assert _launch(tmp_path, out, over, resume=True) == 0
    assert "resumed from" in (tmp_path / "ds3.rank0.log").read_text()
    assert (out / "results.json").exists() and not (stage / "ds").exists()
    _assert_same_weights(torch_run, out, atol=1e-5)
    ref, got = _losses(torch_run), _losses(out)
    assert ref.keys() == got.keys()  # the replayed steps were not logged twice
    for key in ref:
        assert got[key] == pytest.approx(ref[key], rel=1e-5), key


def test_nan_loss_stops_a_deepspeed_run(tmp_path):
    out = tmp_path / "nan"
    assert _launch(tmp_path, out, _overrides(runtime={"engine": "deepspeed", "zero_stage": 1}), nproc=1,
                   kill_at="nan") == 1
    message = (tmp_path / "nan.rank0.error").read_text()
    assert message.startswith("TrainingError: stage adapt_teacher step 7: loss is nan ")
    assert message.endswith("last checkpoint " + str(out / "checkpoints" / "adapt_teacher" / "ds" / "step-000004")
                            + " (resume with --resume after fixing the cause)")


def test_one_rank_zero0_matches_torch(tmp_path, torch_run):
    """ZeRO stage 0 (DeepSpeed's plain data parallelism): its own grad-norm path."""
    out = tmp_path / "z0"
    assert _launch(tmp_path, out, _overrides(runtime={"engine": "deepspeed", "zero_stage": 0}), nproc=1) == 0
    _assert_same_weights(torch_run, out, atol=1e-5)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (torch_run / "metrics.jsonl").read_text().splitlines()]
    norms = [(r["stage"], r["step"], r["grad_norm"]) for r in rows if "grad_norm" in r]
    assert len(norms) == len([r for r in ref if "grad_norm" in r])
    for (stage, step, g), r in zip(norms, [r for r in ref if "grad_norm" in r]):
        assert (stage, step) == (r["stage"], r["step"]) and g == pytest.approx(r["grad_norm"], rel=1e-5)
