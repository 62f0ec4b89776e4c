"""Taps: named intermediate tensors, collected by forward hooks only when asked for."""

import json

import pytest
import torch

from mamba4net.core.config import validate_data
from mamba4net.core.errors import ConfigError
from mamba4net.core.hookspecs import hookimpl
from mamba4net.core.pipeline import run_pipeline
from mamba4net.core.taps import collecting, expand, forward_with_taps, tap_points


def _models(m4n_registry, tiny_config):
    from mamba4net.core.context import RunContext
    from mamba4net.core.runs import RunDir

    ctx = RunContext(validate_data(tiny_config, registry=m4n_registry), m4n_registry, run=RunDir("/nonexistent"),
                     out=RunDir("/nonexistent"))
    batch = ctx.task.data("train").batch(torch.arange(4))
    return ctx.model("teacher").eval(), ctx.model("student").eval(), batch


def test_block_taps_are_the_residual_stream(m4n_registry, tiny_config):
    teacher, student, batch = _models(m4n_registry, tiny_config)
    for model, n in ((teacher, 2), (student, 3)):
        out = forward_with_taps(model, batch, ["block_in.*", "block_out.*"])
        assert sorted(out.taps) == sorted([f"block_in.{i}" for i in range(n)] + [f"block_out.{i}" for i in range(n)])
        torch.testing.assert_close(out.taps["block_in.0"], model.encoder(batch).to(out.taps["block_in.0"].dtype))
        for i in range(n - 1):  # one block's output is the next one's input
            torch.testing.assert_close(out.taps[f"block_out.{i}"], out.taps[f"block_in.{i + 1}"])
        plain = model(batch)
        assert plain.taps == {}  # nothing collected unless asked
        torch.testing.assert_close(out.pred, plain.pred)


def test_teacher_attention_probabilities(m4n_registry, tiny_config):
    teacher, _, batch = _models(m4n_registry, tiny_config)
    config = teacher.backbone.base_model.config
    before = config._attn_implementation
    out = forward_with_taps(teacher, batch, ["attn_probs.1"])
    probs = out.taps["attn_probs.1"]  # (B, H, L, L): 4 query heads (2 KV heads repeated)
    assert probs.shape == (4, 4, 8, 8)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4, 4, 8))
    assert torch.all(probs.triu(1) == 0)  # causal
    assert config._attn_implementation == before  # eager only while tapped
    # the same as softmax(q k^T / sqrt(d)) computed by hand from the layer's input
    layer = teacher.backbone.layers[1]
    h = forward_with_taps(teacher, batch, ["block_in.1"]).taps["block_in.1"]
    attn = layer.self_attn
    x = layer.input_layernorm(h)
    b, l, _ = x.shape
    hd = teacher.backbone.head_dim
    q = attn.q_proj(x).view(b, l, -1, hd).transpose(1, 2)
    k = attn.k_proj(x).view(b, l, -1, hd).transpose(1, 2)
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rotary = teacher.backbone.base_model.rotary_emb
    cos, sin = rotary(x, torch.arange(l)[None])
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scores = (q @ k.transpose(-1, -2)) / hd ** 0.5
    scores = scores.masked_fill(torch.ones(l, l, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(probs, scores.softmax(-1), rtol=1e-5, atol=1e-6)


def test_student_mixer_quantities(m4n_registry, tiny_config):
    _, student, batch = _models(m4n_registry, tiny_config)
    names = [n for n in tap_points(student) if n.startswith("mixer.0.")]
    assert sorted(names) == sorted(f"mixer.0.{q}" for q in ("x", "B", "C", "dt", "A", "matrix"))
    out = forward_with_taps(student, batch, ["mixer.*.dt", "mixer.0.x"])
    assert set(out.taps) == {"mixer.0.dt", "mixer.1.dt", "mixer.0.x"}  # layer 2 is attention
    mixer = student.backbone.layers[0].mixer
    assert out.taps["mixer.0.dt"].shape == (4, 8, mixer.nheads) and torch.all(out.taps["mixer.0.dt"] > 0)


def test_unknown_taps_are_named(m4n_registry, tiny_config):
    teacher, student, batch = _models(m4n_registry, tiny_config)
    with pytest.raises(ConfigError, match=r"tap 'attn_probs\.0': the HybridMambaBackbone has no such tap; it offers: block_in\.0"):
        forward_with_taps(student, batch, ["attn_probs.0"])
    assert expand(["block_out.*"], ["block_in.0", "block_out.0", "block_out.1"]) == ["block_out.0", "block_out.1"]
    with collecting(teacher, ["block_out.0"]) as got:
        pass
    teacher(batch)  # the hooks are gone after the block
    assert got == {}


class _TapLoss:
    """Aligns the student's last block output with the teacher's (widths differ: a fixed slice)."""

    @hookimpl
    def mamba4net_register_losses(self, register):
        def build(params, *, task, d_student, d_teacher):
            def term(student, teacher, batch):
                s = student.taps["block_out.2"]
                t = teacher.taps["block_out.1"][..., : s.shape[-1]]
                return (s - t).pow(2).mean()

            term.needs_taps = {"student": ["block_out.2"], "teacher": ["block_out.1"]}
            return term

        register("tap_align", build)


def test_loss_terms_read_taps_live_and_cached(m4n_registry, tiny_config, tmp_path):
    m4n_registry.add_plugin(_TapLoss(), name="taploss")
    tiny_config["train"]["distill"]["losses"] = [{"name": "task"}, {"name": "tap_align", "weight": 0.5}]
    tiny_config["benchmark"] = {"enabled": False}
    live = run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "live", registry=m4n_registry)
    tiny_config["train"]["distill"]["cache_teacher"] = True
    cached = run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "cached", registry=m4n_registry)
    a, b = (json.loads(r.results_path.read_text())["models"]["student"]["mse"] for r in (live, cached))
    assert a == pytest.approx(b, rel=1e-4)
    rows = [json.loads(x) for x in live.metrics_path.read_text().splitlines()]
    assert any("tap_align" in r for r in rows if r["stage"] == "distill")
    assert not list((cached.checkpoints / "distill").glob("outputs-*.safetensors"))  # deleted when done
