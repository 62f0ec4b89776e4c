"""``mamba4net bench --against`` (the students against a teacher built with other parameters) and
the FLOP bound beside the measured throughput ratio. Tiny models, seeded; no timing assertions."""

import json

import pytest
import torch
import torch.nn.functional as F
import yaml

from mamba4net.core.bench import command
from mamba4net.core.bench.command import bench_target
from mamba4net.core.bench.flops import backbone_flops, counting_bound_flops, flop_curve, flops_at, sdpa_flops
from mamba4net.core.bench.plan import make_plan
from mamba4net.core.bench.run import measure_all
from mamba4net.core.cli import main
from mamba4net.core.config import load_config, validate_data
from mamba4net.core.context import RunContext
from mamba4net.core.model import build_netmodel
from mamba4net.core.pipeline import run_pipeline
from mamba4net.core.runs import RunDir
from mamba4net.plugins.hybrid_mamba.config import HybridMambaParams
from mamba4net.plugins.hybrid_mamba.model import HybridMambaBackbone

SWEEP = ["--seq-lens", "8,16", "--batch-sizes", "1", "--history-lens", "4", "--repeats", "1", "--no-progress"]
DEEPER = "teacher.random_config.num_hidden_layers=3"  # the tiny teacher has 2 layers


# --- attention counted at half the square when causal ---------------------------------------------

def test_sdpa_counts_score_and_value_matmuls_half_when_causal():
    q, k, v = torch.randn(2, 4, 12, 8), torch.randn(2, 2, 12, 8), torch.randn(2, 2, 12, 6)
    full = 2 * (2 * 4) * 12 * 12 * (8 + 6)  # QK^T (e=8) and PV (ev=6), 4 query heads (GQA: 2 K/V heads)
    assert sdpa_flops(q, k, v, causal=False) == full and sdpa_flops(q, k, v, causal=True) == full // 2
    mask = torch.ones(12, 12, dtype=torch.bool).tril()
    for kwargs, want in (({"is_causal": True}, full // 2), ({}, full), ({"attn_mask": mask}, full)):
        with counting_bound_flops() as tally:  # torch's own counter sees no SDPA on CPU
            F.scaled_dot_product_attention(q, k, v, enable_gqa=True, **kwargs)
        assert tally.total == want, kwargs


def test_a_hybrid_student_counts_by_hand():
    """Mamba layers: projections, MLP and the declared scan; the attention layer: projections, MLP
    and causal attention at half the (L x L) square. Elementwise work is not counted."""
    torch.manual_seed(0)
    d, layers, n, p, heads, hd, inter = 16, 3, 8, 8, 2, 8, 32
    student = HybridMambaBackbone(HybridMambaParams(
        d_model=d, n_layers=layers, d_state=n, headdim=p, chunk_size=4, attn_heads=heads, attn_kv_heads=heads,
        attn_layers=[2], d_intermediate=inter)).eval()
    d_inner, nh = 2 * d, 2 * d // p
    d_in_proj = 2 * d_inner + 2 * n + nh

    def by_hand(L):
        mlp = 3 * 2 * L * d * inter
        mamba = 2 * L * d * d_in_proj + 2 * L * d_inner * d + 4 * L * nh * p * n + mlp
        attention = 4 * 2 * L * d * heads * hd + (2 * heads * L * L * (hd + hd)) // 2 + mlp
        return 2 * mamba + attention

    for L in (5, 24, 100):
        assert backbone_flops(student, L) == by_hand(L), L
    curve = flop_curve(student)
    assert curve["exact"] and flops_at(curve, 4096) == by_hand(4096) and flops_at(curve, 512, 3) == 3 * by_hand(512)


# --- the FLOP bound in bench.json and bench.md ------------------------------------------------------

def test_bench_reports_the_flop_bound_of_every_point(tiny_config, m4n_registry, tmp_path):
    tiny_config["benchmark"] = {"seq_lens": [8, 24], "batch_sizes": [1, 2], "history_lens": [4], "repeats": 1}
    loaded = validate_data(tiny_config, registry=m4n_registry)
    ctx = RunContext(loaded, m4n_registry, run=RunDir(tmp_path / "run"), out=RunDir(tmp_path / "out"))
    bench = json.loads(json.dumps(measure_all(ctx, make_plan(loaded.cfg.benchmark), scratch=tmp_path)))
    assert "half for causal" in bench["flop_count"]["convention"]
    assert all(c["exact"] for c in bench["flop_count"]["roles"].values())
    backbones = {r: ctx.model(r).backbone for r in ("teacher", "student")}  # the teacher as measured: LoRA merged
    for row in bench["throughput"]:
        assert row["flops"] == backbone_flops(backbones[row["role"]], row["seq_len"], row["batch_size"])
    by = {(r["role"], r["batch_size"], r["seq_len"]): r for r in bench["throughput"]}
    ratios = bench["ratios"]
    assert len(ratios["flop_bound"]) == len(ratios["throughput"]) == 4
    for x in ratios["throughput"]:
        t, s = by[("teacher", x["batch_size"], x["seq_len"])], by[("student", x["batch_size"], x["seq_len"])]
        assert x["flop_ratio"] == pytest.approx(t["flops"] / s["flops"], rel=1e-4)
        assert x["efficiency"] == pytest.approx(x["student_over_teacher"] / x["flop_ratio"], rel=1e-3)
    from mamba4net.core.bench.run import headline
    from mamba4net.core.bench.tables import throughput_table

    assert set(headline(bench)["ratios"]["throughput_efficiency_by_seq_len"]) == {"8", "24"}
    table = throughput_table(bench)
    assert "FLOP bound student / teacher" in table and "student: of bound" in table and "half for causal" in table


# --- --against ---------------------------------------------------------------------------------------

def _config(tiny_config, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    return path


def test_against_builds_the_overridden_teacher(tiny_config, m4n_registry, tmp_path, capsys):
    cfg = _config(tiny_config, tmp_path)
    out = tmp_path / "against"
    assert main(["bench", str(cfg), "--against", DEEPER, "--out", str(out), *SWEEP]) == 0
    bench = json.loads((out / "bench.json").read_text())
    assert bench["source"]["against"] == [DEEPER] and "--against" in bench["source"]["teacher_weights"]
    assert bench["models"]["teacher"]["describe"]["num_layers"] == 3
    want = build_netmodel(m4n_registry, load_config(cfg, [DEEPER], registry=m4n_registry), "teacher",
                          m4n_registry.get("tasks", "toy").build({}), 0)
    assert bench["models"]["teacher"]["params"] == sum(p.numel() for p in want.parameters())
    assert bench["ratios"]["flop_bound"] and "against" in (out / "bench.md").read_text()
    assert "FLOP bound" in capsys.readouterr().out


@pytest.mark.parametrize("item, message", [
    ("teacher.bogus=1", "teacher.bogus (from --against): unknown key"),
    ("teacher.random_config.num_hidden_layers=x", "(from --against)"),
    ("num_layers=30", "not a key under the teacher's config node"),
    ("student.d_model=8", "not a key under the teacher's config node"),
    ("teacher.num_layers", "expected KEY=VALUE"),
])
def test_a_bad_against_override_is_one_line(tiny_config, m4n_registry, tmp_path, capsys, item, message):
    cfg = _config(tiny_config, tmp_path)
    assert main(["bench", str(cfg), "--against", item, "--out", str(tmp_path / "o"), *SWEEP]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "--against" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.fixture
def finished_run(tiny_config, m4n_registry, tmp_path):
    tiny_config["benchmark"] = {"enabled": False}
    return run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "run", registry=m4n_registry).root


def test_against_on_a_run_keeps_its_students_and_leaves_it_alone(finished_run, m4n_registry, monkeypatch, capsys):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()}
    measured = {}
    real = command.measure_all

    def spy(ctx, plan, **kw):
        measured.update({r: {k: v.clone() for k, v in ctx.model(r).state_dict().items()} for r in plan.roles
                         if r not in kw["models"]}, rebuilt=kw["models"])
        return real(ctx, plan, **kw)

    monkeypatch.setattr(command, "measure_all", spy)
    out, bench = bench_target(finished_run, against=[DEEPER], progress=False, registry=m4n_registry,
                              plan_args={"seq_lens": [8], "batch_sizes": [1], "history_lens": [4], "repeats": 1})
    assert out == finished_run / "bench-against-random_config.num_hidden_layers-3"
    assert (out / "bench.json").exists() and not (finished_run / "bench.json").exists()
    assert {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file()} == before  # results, report
    # the students as the run trained them; the teacher rebuilt (3 layers), not the run's
    trained = RunContext(load_config(finished_run / "config.yaml", registry=m4n_registry), m4n_registry,
                         run=RunDir(finished_run), out=RunDir(finished_run)).model("student").state_dict()
    assert all(torch.equal(measured["student"][k], v) for k, v in trained.items())
    assert list(measured["rebuilt"]) == ["teacher"] and bench["models"]["teacher"]["describe"]["num_layers"] == 3
    # writing the comparison over the run's own bench is refused
    assert main(["bench", str(finished_run), "--against", DEEPER, "--out", str(finished_run), *SWEEP]) == 2
    assert "not the run's own bench" in capsys.readouterr().err
