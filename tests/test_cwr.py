"""The ``cwr`` and ``random`` initializers, and the initializer property kit itself.

Tiny random teachers and students, derandomized Hypothesis with few examples (the whole file runs
in well under a minute on 2 CPU threads).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, ValidationError

from mamba4net.core.config import validate_data
from mamba4net.core.errors import ConfigError
from mamba4net.core.pipeline import run_pipeline
from mamba4net.plugins.cwr.config import NO_DECAY_A_LOG, CWRParams, RandomInitParams
from mamba4net.plugins.cwr.mapping import (
    AXES, COMMON, MAMBA, ATTENTION, TeacherGeometry, MambaGeometry, head_blocks, layer_map, rope_channels,
)
from mamba4net.plugins.cwr.plugin import build_cwr, build_random
from mamba4net.plugins.cwr.svd import discarded_energy, shrink, truncated_svd
from mamba4net.testing.initializers import (
    GENERIC_PROPERTIES, Geometry, StudentShape, TeacherShape, check_case, check_cwr_eckart_young,
    check_cwr_exact, check_cwr_linear_attention, check_initializer, geometries,
)

FAST = dict(deadline=None, derandomize=True, database=None)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Matrices here are a few dozen wide: threads only add overhead (and contend on a busy box)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- the generic suite: cwr (both strategies), random, and a third-party toy --------------------


def test_generic_properties_cwr_svd():
    check_initializer(build_cwr, params=lambda geo: CWRParams(strategy="svd", rank=geo.rank), max_examples=15)


def test_generic_properties_cwr_svd_no_decay_full_rank():
    params = CWRParams(strategy="svd", rank=None, decay=False, dt=0.2, D=1.0, conv="keep", mlp=False)
    check_initializer(build_cwr, params=params, max_examples=8)


def test_generic_properties_cwr_copy():
    check_initializer(build_cwr, params=CWRParams(strategy="copy", layers="last_k"),
                      geometries=geometries(equal_width=True), max_examples=10)


@pytest.mark.parametrize("seed", [None, 3])
def test_generic_properties_random(seed):
    check_initializer(build_random, params=RandomInitParams(seed=seed), max_examples=6)


class MLPOnlyParams(BaseModel):  # the toy third-party initializer of CONTRIBUTING.md
    model_config = ConfigDict(extra="forbid")
    scale: float = 1.0


def build_mlp_only(params: MLPOnlyParams):
    """Copies the teacher's MLPs (sliced to the student's sizes) into the student's layers."""

    def initialize(teacher, student) -> dict:
        done = []
        for i, layer in enumerate(student.layers):
            if layer.mlp is None:
                continue
            t_mlp = teacher.layers[min(i, len(teacher.layers) - 1)].mlp
            for name in ("gate_proj", "up_proj", "down_proj"):
                w_s = getattr(layer.mlp, name).weight
                w_t = getattr(t_mlp, name).weight
                rows, cols = min(w_s.shape[0], w_t.shape[0]), min(w_s.shape[1], w_t.shape[1])
                w_s[:rows, :cols] = params.scale * w_t[:rows, :cols]
            done.append(i)
        return {"initializer": "mlp_only", "layers": done}

    return initialize


def test_contributing_example_runs():
    check_initializer(build_mlp_only, params=MLPOnlyParams(scale=0.5), max_examples=8)


def test_contributing_example_is_this_one():
    """The block in CONTRIBUTING.md's "Test a plugin" runs as written (and stays in sync)."""
    text = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text()
    block = next(b for b in text.split("```python")[1:] if "build_mlp_only" in b).split("```")[0]
    namespace: dict = {}
    exec(compile(block, "CONTRIBUTING.md", "exec"), namespace)
    namespace["test_mlp_only_initializer"]()


def test_the_suite_catches_a_teacher_writer():
    def build_bad(params):
        def initialize(teacher, student):
            teacher.layers[0].input_layernorm.weight.add_(1.0)  # modifies the teacher
            return {}
        return initialize

    with pytest.raises(AssertionError, match="the teacher"):
        check_case(build_bad, None, Geometry(), properties=["teacher_untouched"])


def test_the_suite_catches_nondeterminism_and_bad_reports():
    def build_noisy(params):
        def initialize(teacher, student):
            for p in student.parameters():
                p.add_(torch.randn(p.shape).to(p.dtype))  # global RNG: differs between runs
            return {"x": float("nan")}
        return initialize

    with pytest.raises(AssertionError, match="two runs"):
        check_case(build_noisy, None, Geometry(), properties=["deterministic"])
    with pytest.raises(ValueError):
        check_case(build_noisy, None, Geometry(), properties=["report_json"])


def test_generic_property_names():
    assert set(GENERIC_PROPERTIES) == {"shapes_dtypes", "finite", "deterministic", "teacher_untouched", "report_json"}


# --- cwr-specific properties ----------------------------------------------------------------


def test_copy_reproduces_the_teacher_exactly():
    check_cwr_exact(build_cwr, CWRParams(strategy="copy"), max_examples=12)


def test_svd_at_full_rank_and_equal_width_reproduces_the_teacher_exactly():
    check_cwr_exact(build_cwr, CWRParams(strategy="svd", rank=None, layers="first_k"), max_examples=6)


def test_svd_error_is_the_discarded_singular_values():
    check_cwr_eckart_young(build_cwr, lambda geo: CWRParams(strategy="svd", rank=geo.rank), max_examples=12)


def test_no_decay_mixer_is_causal_linear_attention():
    params = CWRParams(strategy="copy", decay=False, conv="identity", D=0.0, dt=0.5)
    check_cwr_linear_attention(build_cwr, params, max_examples=12)


def test_no_decay_fills():
    geo = Geometry(TeacherShape(), StudentShape(d_model=16, attn_layers=()))
    teacher, student = geo.teacher.build(), geo.student.build()
    report = build_cwr(CWRParams(decay=False, dt=0.25, D=1.0))(teacher, student)
    mixer = student.layers[0].mixer
    assert torch.all(mixer.A_log == NO_DECAY_A_LOG) and torch.all(mixer.D == 1.0)
    dt = torch.nn.functional.softplus(mixer.dt_bias)
    torch.testing.assert_close(dt, torch.full_like(dt, 0.25))
    assert torch.all(mixer.in_proj.weight[-mixer.nheads:] == 0)  # dt rows: constant step
    w = mixer.conv1d.weight.squeeze(1)  # (conv_dim, d_conv): identity tap
    assert torch.all(w[:, -1] == 1) and torch.all(w[:, :-1] == 0) and torch.all(mixer.conv1d.bias == 0)
    assert "decay off" in report["filled"]["A_log"]


# --- the SVD ---------------------------------------------------------------------------------


@settings(max_examples=25, **FAST)
@given(m=st.integers(1, 12), n=st.integers(1, 12), r=st.integers(1, 12), seed=st.integers(0, 999))
def test_truncated_svd_eckart_young(m, n, r, seed):
    w = torch.randn(m, n, generator=torch.Generator().manual_seed(seed))
    w_r, info = truncated_svd(w, r)
    assert info.rank == min(r, m, n)
    assert torch.linalg.matrix_rank(w_r).item() <= info.rank
    s = torch.linalg.svdvals(w.double())
    err2 = (w.double() - w_r).square().sum().item()
    assert err2 == pytest.approx(s[info.rank:].square().sum().item(), rel=1e-9, abs=1e-12)
    assert info.rel_error == pytest.approx(discarded_energy(w, info.rank), rel=1e-9, abs=1e-12)
    # the paper's U_S S_r V_S^T is W_r cut to the student's rows / columns
    a, b = max(1, m // 2), max(1, n - 1)
    torch.testing.assert_close(shrink(w, r, a, b), w_r[:a, :b], rtol=1e-10, atol=1e-10)


def test_truncated_svd_full_rank_is_exact_and_leaves_input():
    w = torch.randn(5, 3)
    before = w.clone()
    w_r, info = truncated_svd(w, None)
    assert torch.equal(w_r.float(), w) and info.rel_error == 0.0 and not info.truncated
    w_r += 1
    assert torch.equal(w, before)


# --- the table and the geometry rules ---------------------------------------------------------


def test_table_axes_known_and_entries_unique():
    for entry in MAMBA + ATTENTION + COMMON:
        assert entry.rows in AXES and (entry.cols is None or entry.cols in AXES)
    assert [e.segment for e in MAMBA if e.segment] == ["C", "B", "x"]
    assert {e.teacher for e in MAMBA} == {"q_proj", "k_proj", "v_proj", "o_proj"}


def test_head_blocks():
    assert head_blocks(4, 4) == [([0], 1.0, 1.0), ([1], 1.0, 1.0), ([2], 1.0, 1.0), ([3], 1.0, 1.0)]
    assert head_blocks(9, 1) == [(list(range(9)), 1 / 9, 1.0)]
    assert head_blocks(3, 2) == [([0], 1.0, 1.0), ([1, 2], 0.5, 1.0)]
    assert head_blocks(2, 4) == [([0], 1.0, 0.5), ([0], 1.0, 0.5), ([1], 1.0, 0.5), ([1], 1.0, 0.5)]


def test_rope_channels_keep_frequencies():
    # hd 8 -> 4: student pairs (0, 1) <- teacher pairs (0, 2), both halves
    assert rope_channels(4, 8) == [0, 2, 4, 6]
    assert rope_channels(8, 8) == list(range(8))
    assert rope_channels(8, 4) == [0, 1, None, None, 2, 3, None, None]


def test_gqa_expansion_and_pooling_into_one_group():
    """SmolLM2-like heads (H=3, KV=1) into one B/C group: C = mean of the Q heads, B = K."""
    t = TeacherGeometry(d_model=6, num_layers=1, num_heads=3, num_kv_heads=1, head_dim=2, intermediate=4)
    s = MambaGeometry(d_model=6, d_intermediate=4, d_inner=6, nheads=3, headdim=2, ngroups=1, d_state=2, d_conv=4)
    c = AXES["ssm_c"].build(t, s).matrix  # (2, 6)
    b = AXES["ssm_b"].build(t, s).matrix  # (2, 2)
    torch.testing.assert_close(c, torch.tensor([[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]], dtype=torch.float64) / 3)
    torch.testing.assert_close(b, torch.eye(2, dtype=torch.float64))
    x = AXES["ssm_x"].build(t, s).matrix  # (6, 2): all three heads read the one KV head
    assert torch.equal(x, torch.eye(2, dtype=torch.float64).repeat(3, 1))


def test_layer_map_rules():
    assert layer_map("evenly", 12, 30) == [0, 3, 5, 8, 11, 13, 16, 18, 21, 24, 26, 29]
    assert layer_map("evenly", 1, 30) == [29]
    assert layer_map("evenly", 4, 2) == [0, 0, 1, 1]
    assert layer_map("last_k", 3, 5) == [2, 3, 4]
    assert layer_map("last_k", 4, 2) == [None, None, 0, 1]
    assert layer_map("first_k", 3, 2) == [0, 1, None]
    assert layer_map([None, 4, 1], 3, 5) == [None, 4, 1]


@settings(max_examples=25, **FAST)
@given(n_s=st.integers(1, 20), n_t=st.integers(1, 40))
def test_evenly_spaced_is_monotone_aligned_and_distinct(n_s, n_t):
    m = layer_map("evenly", n_s, n_t)
    assert len(m) == n_s and all(0 <= j < n_t for j in m)
    assert m == sorted(m) and m[-1] == n_t - 1 and (n_s == 1 or m[0] == 0)
    if n_s <= n_t:
        assert len(set(m)) == n_s


def test_explicit_layer_list_in_the_report():
    geo = Geometry(TeacherShape(num_layers=3), StudentShape(n_layers=3))
    teacher, student = geo.teacher.build(), geo.student.build()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    report = build_cwr(CWRParams(layers=[None, 2, 0]))(teacher, student)
    assert [(r["student"], r["teacher"]) for r in report["layers"]] == [(0, None), (1, 2), (2, 0)]
    assert {"slot": "layers.0", "reason": "no teacher layer (layer rule); student init kept"} in report["skipped"]
    for k, v in student.state_dict().items():
        if k.startswith("layers.0."):
            assert torch.equal(v, before[k]), k
    json.dumps(report)


# --- parameters and errors ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [{"rank": 0}, {"rank": -3}, {"layers": [0, -1]}, {"layers": []},
                                 {"layers": "middle"}, {"strategy": "pca"}, {"dt": 0}, {"conv": "zero"},
                                 {"rnak": 4}])
def test_bad_params_are_validation_errors(bad):
    with pytest.raises(ValidationError):
        CWRParams(**bad)


@pytest.mark.parametrize("layers, match", [([0, 1, 7], "out of range for a 2-layer teacher"),
                                           ([0, 1], "2 entries for a 3-layer student")])
def test_explicit_list_checked_against_the_models(layers, match):
    geo = Geometry()
    with pytest.raises(ConfigError, match=match):
        build_cwr(CWRParams(layers=layers))(geo.teacher.build(), geo.student.build())


def test_copy_needs_equal_widths():
    geo = Geometry()  # student width 8, teacher 16
    with pytest.raises(ConfigError, match="use strategy: svd"):
        build_cwr(CWRParams(strategy="copy"))(geo.teacher.build(), geo.student.build())


def test_bad_params_in_a_pipeline_config(tiny_config, m4n_registry):
    tiny_config["initializer"] = {"name": "cwr", "strategy": "svd", "rank": 0}
    with pytest.raises(ConfigError, match="initializer.rank"):
        validate_data(tiny_config, registry=m4n_registry)
    tiny_config["initializer"] = {"name": "cwr", "layers": [0, -1, 1]}
    with pytest.raises(ConfigError, match="initializer.layers"):
        validate_data(tiny_config, registry=m4n_registry)


# --- through the engine ---------------------------------------------------------------------


def test_registered(m4n_registry):
    kind = m4n_registry.kind("initializers")
    assert "cwr" in kind and "random" in kind
    assert kind.get("cwr").params is CWRParams


def test_tiny_pipeline_with_cwr(tmp_path, tiny_config, m4n_registry):
    tiny_config["initializer"] = {"name": "cwr", "strategy": "svd", "rank": 8}
    tiny_config["train"]["adapt_teacher"]["steps"] = 4
    tiny_config["train"]["distill"]["steps"] = 4
    run = run_pipeline(validate_data(tiny_config, registry=m4n_registry), tmp_path / "run", registry=m4n_registry)
    done = json.loads((run.checkpoints / "init_student" / "done.json").read_text())
    report = done["report"]
    assert done["initializer"] == "cwr" and report["strategy"] == "svd" and report["rank"] == 8
    assert [r["teacher"] for r in report["layers"]] == [0, 1, 1]  # 3 student layers, 2 teacher layers
    assert report["svd"] and all(0 <= v["rel_error"] < 1 for v in report["svd"].values())
    assert json.loads(run.results_path.read_text())["models"]["student"]["mse"] >= 0
