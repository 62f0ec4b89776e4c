"""MOHAWK: the block-wise stage-1 loss, head mapping, the method's stages on the toy task
(check_method: exact resume, roles), each stage's loss falling, and config errors before training."""

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mamba4net.core.config import validate_data
from mamba4net.core.errors import ConfigError
from mamba4net.core.pipeline import run_pipeline
from mamba4net.plugins.hybrid_mamba.config import HybridMambaParams
from mamba4net.plugins.hybrid_mamba.model import HybridMambaBackbone
from mamba4net.plugins.mohawk.alignment import frobenius_blockwise, head_map, pooled_heads
from mamba4net.testing.methods import check_method
from mamba4net.testing.toy import tiny_pipeline_config

# the paper's setting on the toy teacher (width 32, 4 heads of 8, 2 KV heads, 2 layers)
SAME_SHAPE = {"name": "hybrid_mamba", "d_model": 32, "n_layers": 2, "attn_layers": [], "expand": 1, "headdim": 8,
              "ngroups": 4, "d_state": 8, "chunk_size": 4, "d_intermediate": 64}
CWR_COPY = {"name": "cwr", "strategy": "copy", "decay": False, "D": 0.0}
TINY = {"steps": 12, "batch_size": 16, "lr": 3e-3, "warmup_steps": 2, "log_every": 2, "checkpoint_every": 4}


@settings(max_examples=20, deadline=None)
@given(length=st.integers(1, 40), block=st.integers(1, 17), heads=st.sampled_from([2, 4]), seed=st.integers(0, 999))
def test_blockwise_frobenius_equals_the_full_one(length, block, heads, seed):
    torch.manual_seed(seed)
    backbone = HybridMambaBackbone(HybridMambaParams(d_model=16, n_layers=1, attn_layers=[], headdim=32 // heads,
                                                     d_state=8, chunk_size=4, d_intermediate=0))
    h = torch.randn(2, length, 16)
    # halved: at length 1 the student's matrix is within 1e-3 of D = 1, which a whole softmax row (1)
    # could match to rounding, where the norm has no gradient and two summation orders disagree
    target = 0.5 * torch.softmax(torch.randn(2, heads, length, length), -1).tril()
    full = (backbone.layer_matrix(0, h) - target).pow(2).sum((-1, -2)).sqrt()
    blocks = frobenius_blockwise(lambda rows: backbone.layer_matrix(0, h, rows), target, block)
    torch.testing.assert_close(blocks, full, rtol=1e-5, atol=1e-6)
    # and the gradients agree (blocks are recomputed in the backward pass)
    g_full = torch.autograd.grad(full.mean(), backbone.layers[0].mixer.in_proj.weight)[0]
    blocks = frobenius_blockwise(lambda rows: backbone.layer_matrix(0, h, rows), target, block)
    g_blocks = torch.autograd.grad(blocks.mean(), backbone.layers[0].mixer.in_proj.weight)[0]
    torch.testing.assert_close(g_blocks, g_full, rtol=1e-4, atol=1e-6)


def test_head_map_pools_or_repeats():
    assert head_map(4, 4) == [[0], [1], [2], [3]]
    assert head_map(9, 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert head_map(2, 4) == [[0], [0], [1], [1]]
    A = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 2)
    assert pooled_heads(A, head_map(4, 2))[0, :, 0, 0].tolist() == [0.5, 2.5]


def _config(**method):
    cfg = tiny_pipeline_config(method={"name": "mohawk", **method}, student=SAME_SHAPE, initializer=CWR_COPY)
    cfg["train"] = {"mohawk_matrix": dict(TINY), "mohawk_hidden": dict(TINY),
                    "mohawk_distill": {**TINY, "losses": [{"name": "task"}, {"name": "mse_to_teacher"}]}}
    if method.get("adapt_teacher"):
        cfg["train"]["adapt_teacher"] = dict(TINY)
    return cfg


def test_each_stage_loss_falls(m4n_registry, tmp_path):
    cfg = _config(adapt_teacher=True)
    cfg["benchmark"] = {"enabled": False}
    run = run_pipeline(validate_data(cfg, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    rows = [json.loads(x) for x in run.metrics_path.read_text().splitlines()]
    for stage in ("mohawk_matrix", "mohawk_hidden", "mohawk_distill"):
        losses = [r["loss"] for r in rows if r["stage"] == stage and "loss" in r]
        assert losses[-1] < losses[0], (stage, losses)
    init = json.loads((run.checkpoints / "mohawk_init" / "done.json").read_text())
    assert init["pairs"] == [[0, 0], [1, 1]] and init["heads"] == [[0], [1], [2], [3]]
    assert "encoder.proj.weight" in init["copied"]  # the adapted teacher's encoder, copied
    # stage 1 trained the mixers only: the MLPs kept the weights the init copied
    from safetensors.torch import load_file

    matrix = load_file(str(run.checkpoints / "mohawk_matrix" / "final.safetensors"))
    assert matrix and all(".mixer." in k for k in matrix)


def test_check_method_mohawk(m4n_registry, tmp_path):
    summary = check_method("mohawk", registry=m4n_registry, workdir=tmp_path, config=_config(),
                           kill=("mohawk_hidden", 8))
    assert summary["stages"] == ["mohawk_init", "mohawk_matrix", "mohawk_hidden", "mohawk_distill"]
    assert summary["boundary"] == "mohawk_matrix"


def test_variants_and_errors_before_training(m4n_registry, tmp_path):
    cfg = _config(stages=["distill"])  # the stage-3-only ablation: the other sections may stay
    cfg["benchmark"] = {"enabled": False}
    run = run_pipeline(validate_data(cfg, registry=m4n_registry), tmp_path / "s3", registry=m4n_registry)
    for stage in ("mohawk_matrix", "mohawk_hidden"):
        done = json.loads((run.checkpoints / stage / "done.json").read_text())
        assert "not in method.stages" in done["skipped"] and done["writes"] == {}
        assert not (run.checkpoints / stage / "final.safetensors").exists()
    results = json.loads(run.results_path.read_text())
    assert results["roles"]["student"]["weights_from"] == "mohawk_distill"
    cfg = _config(layers=[0, 5])
    with pytest.raises(ConfigError, match="method.layers: teacher layer 5 does not exist"):
        run_pipeline(validate_data(cfg, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    assert not (tmp_path / "run" / "checkpoints" / "mohawk_init" / "done.json").exists()
    cfg = _config()
    cfg["train"]["mohawk_matrix"]["trainable"] = ["backbone.layers.*.mixr"]
    with pytest.raises(ConfigError, match=r"train\.mohawk_matrix: pattern 'backbone\.layers\.\*\.mixr' matches no"):
        run_pipeline(validate_data(cfg, registry=m4n_registry), tmp_path / "run2", registry=m4n_registry)
