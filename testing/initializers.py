"""Hypothesis strategies and a reusable property suite for student initializers.

Any initializer (``factory(params) -> callable(teacher, student) -> dict``, the hook's contract) can
be run through the generic properties in a few lines::

    from mamba4net.testing.initializers import check_initializer

    def test_my_initializer():
        check_initializer(build_my_init, params=None, max_examples=10)

For every drawn geometry (tiny random Llama teachers with LoRA, tiny hybrid Mamba students) the
generic properties are (names in ``GENERIC_PROPERTIES``, select some with ``properties=``):

* ``shapes_dtypes``: every student tensor keeps its name, shape, dtype and device;
* ``finite``: no NaN or Inf in the student, nor in its forward output on a random input, whose shape
  and dtype are those of the input (``(B, L, d_model)``);
* ``deterministic``: two fresh initializers built from the same params, applied to two copies of
  the same student, give bit-identical students and equal reports;
* ``teacher_untouched``: the teacher's state (every tensor bit for bit, requires_grad flags, the
  train/eval mode) is the same after the call;
* ``report_json``: the report is a dict that ``json.dumps(..., allow_nan=False)`` accepts.

CWR-specific properties (functions taking the factory and params, so a re-implementation of CWR can
be held to the same statements): :func:`check_cwr_exact`, :func:`check_cwr_eckart_young`,
:func:`check_cwr_linear_attention`. Each docstring states precisely what is compared. They read the
layer map from the report (``report["layers"] = [{"student": i, "teacher": j or None}, ...]``) and,
for Eckart-Young, the compressed matrices (``report["svd"]``, ``report["slots"]``) in ``cwr``'s format.

Needs ``hypothesis`` (the ``test`` extra); import it from tests only.

The initializer is called under ``torch.no_grad()``, as the engine's ``init_student`` stage does.
Examples are derandomized (the suite is deterministic) and kept small; raise ``max_examples``
locally when hunting a bug.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GENERIC_PROPERTIES = ("shapes_dtypes", "finite", "deterministic", "teacher_untouched", "report_json")

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}

# ---------------------------------------------------------------------------------------------
# Geometries
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherShape:
    """A tiny random Llama teacher (``hf_causal_lm`` with ``model: random``)."""

    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 4
    hidden_size: int = 16
    intermediate_size: int = 24
    lora: bool = True  # LoRA on q,k,v,o with non-zero B, so the adapters change the weights
    dtype: str = "float32"
    seed: int = 0

    def node(self) -> dict[str, Any]:
        """The teacher's pipeline config node."""
        return {
            "name": "hf_causal_lm",
            "model": "random",
            "random_config": {
                "hidden_size": self.hidden_size, "num_hidden_layers": self.num_layers,
                "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
                "head_dim": self.head_dim, "intermediate_size": self.intermediate_size,
            },
            "lora": {"enabled": self.lora, "r": 2, "alpha": 4},
            "dtype": self.dtype,
            "seed": self.seed,
        }

    def build(self):
        from mamba4net.plugins.hf_teacher.config import HFTeacherParams
        from mamba4net.plugins.hf_teacher.plugin import build_teacher

        teacher = build_teacher(HFTeacherParams(**{k: v for k, v in self.node().items() if k != "name"}))
        if self.lora:  # LoRA B starts at zero: give the adapters a visible effect
            gen = torch.Generator().manual_seed(self.seed + 1)
            with torch.no_grad():
                for name, p in teacher.named_parameters():
                    if "lora_B" in name:
                        p.copy_(0.3 * torch.randn(p.shape, generator=gen))
        return teacher


@dataclass(frozen=True)
class StudentShape:
    """A tiny ``hybrid_mamba`` student."""

    d_model: int = 8
    n_layers: int = 3
    attn_layers: tuple[int, ...] = (2,)
    d_state: int = 4
    expand: int = 2
    headdim: int = 4
    ngroups: int = 1
    d_intermediate: int = 16
    attn_heads: int = 2
    attn_kv_heads: int = 1
    attn_head_dim: int = 4
    dtype: str = "float32"
    seed: int = 0

    def node(self) -> dict[str, Any]:
        """The student's pipeline config node."""
        return {
            "name": "hybrid_mamba", "d_model": self.d_model, "n_layers": self.n_layers,
            "attn_layers": list(self.attn_layers), "d_state": self.d_state, "expand": self.expand,
            "headdim": self.headdim, "ngroups": self.ngroups, "d_intermediate": self.d_intermediate,
            "attn_heads": self.attn_heads, "attn_kv_heads": self.attn_kv_heads,
            "attn_head_dim": self.attn_head_dim, "chunk_size": 4,
        }

    def build(self):
        from mamba4net.plugins.hybrid_mamba.config import HybridMambaParams
        from mamba4net.plugins.hybrid_mamba.plugin import build_student

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            student = build_student(HybridMambaParams(**{k: v for k, v in self.node().items() if k != "name"}))
        return student.to(_DTYPES[self.dtype])


@dataclass(frozen=True)
class Geometry:
    teacher: TeacherShape = field(default_factory=TeacherShape)
    student: StudentShape = field(default_factory=StudentShape)
    rank: int = 4  # an SVD rank for initializers that take one (use it through ``params=callable``)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def teacher_shapes(draw, max_layers: int = 3, max_heads: int = 4, head_dims: Iterable[int] = (2, 4, 8),
                   square: bool | None = None, dtypes: Iterable[str] = ("float32",)) -> TeacherShape:
    """Teachers with H in 1..max_heads, KV dividing H, an even head_dim, width H * head_dim
    (``square=True``), another multiple of H from 2 to 32 (``False``; Llama needs H | width, the
    head_dim is then explicit) or either (``None``)."""
    heads = draw(st.integers(1, max_heads))
    hd = draw(st.sampled_from(tuple(head_dims)))
    sq = draw(st.booleans()) if square is None else square
    hidden = heads * hd if sq else heads * draw(st.integers(max(1, -(-2 // heads)), 32 // heads))
    return TeacherShape(
        num_layers=draw(st.integers(1, max_layers)),
        num_heads=heads,
        num_kv_heads=draw(st.sampled_from(_divisors(heads))),
        head_dim=hd,
        hidden_size=hidden,
        intermediate_size=draw(st.integers(2, 24)),
        lora=draw(st.booleans()),
        dtype=draw(st.sampled_from(tuple(dtypes))),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def student_shapes(draw, d_model: int | st.SearchStrategy[int] = st.integers(2, 16), max_layers: int = 4,
                   dtypes: Iterable[str] = ("float32",)) -> StudentShape:
    """Valid ``hybrid_mamba`` students: headdim divides d_inner, ngroups divides nheads, any set
    of attention layers (GQA, even head size for RoPE), MLP or none."""
    d = d_model if isinstance(d_model, int) else draw(d_model)
    expand = draw(st.sampled_from((1, 2)))
    d_inner = expand * d
    headdim = draw(st.sampled_from([h for h in _divisors(d_inner) if h <= 16]))
    nheads = d_inner // headdim
    n_layers = draw(st.integers(1, max_layers))
    attn = tuple(i for i in range(n_layers) if draw(st.booleans()))
    heads = draw(st.integers(1, 4))
    return StudentShape(
        d_model=d,
        n_layers=n_layers,
        attn_layers=attn,
        d_state=draw(st.integers(1, 12)),
        expand=expand,
        headdim=headdim,
        ngroups=draw(st.sampled_from(_divisors(nheads))),
        d_intermediate=draw(st.sampled_from((0, 4, 8, 16, 24, 32))),
        attn_heads=heads,
        attn_kv_heads=draw(st.sampled_from(_divisors(heads))),
        attn_head_dim=draw(st.sampled_from((2, 4, 8))),
        dtype=draw(st.sampled_from(tuple(dtypes))),
        seed=draw(st.integers(0, 2**16)),
    )


@st.composite
def geometries(draw, equal_width: bool = False, strictly_narrower: bool = False,
               teacher_dtypes: Iterable[str] = ("float32", "bfloat16"),
               student_dtypes: Iterable[str] = ("float32", "float64", "bfloat16")) -> Geometry:
    """Any teacher and a student with d_S <= d_T (``equal_width``: d_S = d_T; ``strictly_narrower``:
    d_S < d_T), a rank 1..min(d_T, 16), mixed dtypes."""
    t = draw(teacher_shapes(dtypes=teacher_dtypes))
    if strictly_narrower and t.hidden_size < 2:
        t = replace(t, hidden_size=2 * t.hidden_size + 2)
    if equal_width:
        d = t.hidden_size
    else:
        d = draw(st.integers(1, t.hidden_size - 1 if strictly_narrower else t.hidden_size))
    s = draw(student_shapes(d_model=d, dtypes=student_dtypes))
    return Geometry(t, s, draw(st.integers(1, min(t.hidden_size, 16))))


_geometries = geometries  # the functions below take a ``geometries=`` argument


@st.composite
def matched_geometries(draw) -> Geometry:
    """Students shaped like the teacher, where CWR is exact: d_S = d_T = H * head_dim, expand 1,
    ngroups = H (one B/C group per query head), d_state = head_dim (so d_inner / ngroups = head_dim
    value channels per group), headdim dividing head_dim, attention layers with the teacher's
    heads / KV heads / head_dim, the teacher's MLP width. float32 everywhere."""
    t = draw(teacher_shapes(square=True))
    hd = t.head_dim
    n_layers = draw(st.integers(1, 4))
    return Geometry(t, StudentShape(
        d_model=t.hidden_size, n_layers=n_layers,
        attn_layers=tuple(i for i in range(n_layers) if draw(st.booleans())),
        d_state=hd, expand=1, headdim=draw(st.sampled_from(_divisors(hd))), ngroups=t.num_heads,
        d_intermediate=t.intermediate_size, attn_heads=t.num_heads, attn_kv_heads=t.num_kv_heads,
        attn_head_dim=hd, seed=draw(st.integers(0, 2**16)),
    ), rank=t.hidden_size)


def _settings(max_examples: int):
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _params(params: Any, geo: Geometry) -> Any:
    return params(geo) if callable(params) and not isinstance(params, type) else params


def run_initializer(factory: Callable, params: Any, teacher, student) -> dict:
    """Build a fresh initializer and apply it the way the engine does (under no_grad)."""
    init = factory(params)
    with torch.no_grad():
        return init(teacher, student)


# ---------------------------------------------------------------------------------------------
# The generic suite
# ---------------------------------------------------------------------------------------------


def _teacher_snapshot(teacher) -> dict[str, Any]:
    return {
        "state": {k: v.detach().clone() for k, v in teacher.state_dict(keep_vars=False).items()},
        "grad": {k: p.requires_grad for k, p in teacher.named_parameters()},
        "training": [m.training for m in teacher.modules()],
    }


def _same_state(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), f"{what}: tensor names differ: {sorted(set(a) ^ set(b))}"
    for k in a:
        assert torch.equal(a[k], b[k]), f"{what}: {k} differs"


def check_case(factory: Callable, params: Any, geo: Geometry,
               properties: Iterable[str] = GENERIC_PROPERTIES) -> dict:
    """The generic properties on one geometry; returns the first report."""
    props = set(properties)
    unknown = props - set(GENERIC_PROPERTIES)
    assert not unknown, f"unknown properties {sorted(unknown)}; known: {GENERIC_PROPERTIES}"
    params = _params(params, geo)
    teacher, student = geo.teacher.build(), geo.student.build()
    before = _teacher_snapshot(teacher)
    meta = {k: (v.shape, v.dtype, v.device) for k, v in student.state_dict().items()}
    s1, s2 = copy.deepcopy(student), copy.deepcopy(student)
    report = run_initializer(factory, params, teacher, s1)

    if "report_json" in props:
        assert isinstance(report, dict), f"the report must be a dict, got {type(report).__name__}"
        json.dumps(report, allow_nan=False)
    if "shapes_dtypes" in props:
        after = {k: (v.shape, v.dtype, v.device) for k, v in s1.state_dict().items()}
        assert after.keys() == meta.keys(), f"student tensors changed: {sorted(set(after) ^ set(meta))}"
        for k in meta:
            assert after[k] == meta[k], f"{k}: {meta[k]} became {after[k]}"
    if "finite" in props:
        for k, v in s1.state_dict().items():
            assert torch.isfinite(v).all(), f"{k} has NaN/Inf after initialisation"
        x = torch.randn(2, 5, geo.student.d_model, generator=torch.Generator().manual_seed(0))
        x = x.to(_DTYPES[geo.student.dtype])
        with torch.no_grad():
            y = s1(x)
        assert y.shape == x.shape and y.dtype == x.dtype, f"forward: {tuple(y.shape)} {y.dtype}"
        assert torch.isfinite(y).all(), "the initialised student's output has NaN/Inf"
    if "deterministic" in props:
        report2 = run_initializer(factory, params, teacher, s2)
        _same_state(s1.state_dict(), s2.state_dict(), "two runs")
        assert json.dumps(report, sort_keys=True, default=str) == json.dumps(report2, sort_keys=True, default=str), \
            "two runs gave different reports"
    if "teacher_untouched" in props:
        now = _teacher_snapshot(teacher)
        _same_state(before["state"], now["state"], "the teacher")
        assert before["grad"] == now["grad"], "the teacher's requires_grad flags changed"
        assert before["training"] == now["training"], "the teacher's train/eval mode changed"
    return report


def check_initializer(factory: Callable, params: Any = None, *, geometries: st.SearchStrategy | None = None,
                      max_examples: int = 15, properties: Iterable[str] = GENERIC_PROPERTIES) -> None:
    """Run the generic properties over drawn geometries (default: :func:`geometries`, any
    d_S <= d_T, mixed dtypes). ``params``: what ``factory`` receives -- a params model, None, or a
    callable ``(Geometry) -> params`` (e.g. to use the drawn rank)."""
    strategy = geometries if geometries is not None else _geometries()
    props = tuple(properties)

    @_settings(max_examples)
    @given(geo=strategy)
    def _run(geo):
        check_case(factory, params, geo, props)

    _run()


# ---------------------------------------------------------------------------------------------
# CWR-specific properties
# ---------------------------------------------------------------------------------------------


def _teacher_linear(teacher, j: int, name: str) -> torch.Tensor:
    """The effective (LoRA-included) weight of teacher layer j's ``name`` (``q_proj``, ``gate_proj``...)."""
    if name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        return teacher.attention_weights(j)[f"{name}.weight"]
    from mamba4net.plugins.hf_teacher.model import effective_linear

    return effective_linear(getattr(teacher.layers[j].mlp, name))[0]


def _teacher_key(key: str) -> tuple[int, str]:
    """``layers.{j}.self_attn.q_proj.weight`` -> ``(j, "q_proj")``."""
    parts = key.split(".")
    return int(parts[1]), parts[-2]


def _expand_kv(w: torch.Tensor, kv: int, rep: int) -> torch.Tensor:
    """(KV*hd, D) -> (KV*rep*hd, D): each KV head's rows repeated for its rep query heads."""
    return w.view(kv, -1, w.shape[-1]).repeat_interleave(rep, dim=0).reshape(-1, w.shape[-1])


def check_cwr_exact(factory: Callable, params: Any, *, geometries: st.SearchStrategy | None = None,
                    max_examples: int = 10) -> None:
    """Exact reproduction at equal width and full rank (``strategy: copy``, or ``svd`` with a rank
    >= every dimension) on :func:`matched_geometries`. For every student layer i mapped from teacher
    layer j (the report's ``layers``), with the teacher's effective weights Wq, Wk, Wv, Wo and
    GQA expansion E(W) (each KV head's rows repeated H/KV times), bit for bit:

    * Mamba layer: in_proj rows C == Wq, B == E(Wk), x == E(Wv); out_proj == Wo;
    * attention layer: q_proj == Wq, k_proj == Wk, v_proj == Wv, o_proj == Wo;
    * norm1 == input_layernorm, norm2 == post_attention_layernorm, mlp.{gate,up,down}_proj == the
      teacher's, norm_f == the teacher's final norm.
    """

    @_settings(max_examples)
    @given(geo=geometries if geometries is not None else matched_geometries())
    def _run(geo):
        teacher, student = geo.teacher.build(), geo.student.build()
        report = run_initializer(factory, _params(params, geo), teacher, student)
        t = geo.teacher
        H, KV, hd = t.num_heads, t.num_kv_heads, t.head_dim
        for row in report["layers"]:
            i, j = row["student"], row["teacher"]
            if j is None:
                continue
            layer = student.layers[i]
            W = {n: _teacher_linear(teacher, j, n).float()
                 for n in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
            tl = teacher.layers[j]
            got: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            if hasattr(layer.mixer, "in_proj"):
                d_inner, gn = layer.mixer.d_inner, layer.mixer.ngroups * layer.mixer.d_state
                z, x, B, C, _ = layer.mixer.in_proj.weight.split([d_inner, d_inner, gn, gn, layer.mixer.nheads])
                got |= {"C": (C, W["q_proj"]), "B": (B, _expand_kv(W["k_proj"], KV, H // KV)),
                        "x": (x, _expand_kv(W["v_proj"], KV, H // KV)),
                        "out_proj": (layer.mixer.out_proj.weight, W["o_proj"])}
            else:
                got |= {n: (getattr(layer.mixer, n).weight, W[n]) for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
            got |= {"norm1": (layer.norm1.weight, tl.input_layernorm.weight),
                    "norm2": (layer.norm2.weight, tl.post_attention_layernorm.weight)}
            got |= {n: (getattr(layer.mlp, n).weight, W[n]) for n in ("gate_proj", "up_proj", "down_proj")}
            for name, (s, w) in got.items():
                assert torch.equal(s, w.to(s.dtype)), f"student layer {i} {name} != teacher layer {j} (hd={hd})"
        assert torch.equal(student.norm_f.weight, teacher.base_model.norm.weight.float()), "norm_f != teacher norm"

    _run()


def check_cwr_eckart_young(factory: Callable, params: Any, *, geometries: st.SearchStrategy | None = None,
                           max_examples: int = 10, tol: float = 1e-5) -> None:
    """The svd strategy on students narrower than the teacher (default: :func:`geometries` with
    ``strictly_narrower=True``, float32), rank r = the drawn rank unless ``params`` says otherwise.
    For every teacher matrix W the report lists under ``svd`` (rank r, relative error e):

    * Eckart-Young-Mirsky: e^2 == sum_{i > r} s_i(W)^2 / sum_i s_i(W)^2, the s_i computed here
      (``torch.linalg.svdvals``, float64) independently of the initializer, to ``tol``;
    * on the compressed side: each student MLP matrix filled from W equals the first rows / columns
      of W_r = U_r S_r V_r^T computed here (the paper's U_S S_r V_S^T), to 1e-5 relative; every other
      slot filled from W (in_proj's B/C/x segments, out_proj, attention q/k/v/o) has rank <= r.
    """
    strategy = geometries if geometries is not None else _geometries(
        strictly_narrower=True, teacher_dtypes=("float32",), student_dtypes=("float32",))

    @_settings(max_examples)
    @given(geo=strategy)
    def _run(geo):
        teacher, student = geo.teacher.build(), geo.student.build()
        report = run_initializer(factory, _params(params, geo), teacher, student)
        assert report["svd"] or geo.student.d_model == geo.teacher.hidden_size, "svd: no matrix was compressed"
        for key, info in report["svd"].items():
            w = _teacher_linear(teacher, *_teacher_key(key)).double()
            s = torch.linalg.svdvals(w)
            r = info["rank"]
            expected = math.sqrt(s[r:].square().sum().item() / s.square().sum().item())
            assert abs(info["rel_error"] - expected) <= tol, f"{key}: reported {info['rel_error']} vs {expected}"
        for slot in report["slots"]:
            if not slot["compressed"]:
                continue
            r = slot["rank"]
            name, _, seg = slot["student"].partition("[")
            param = student.get_parameter(name).detach().double()
            if seg:  # a row segment of the fused in_proj: [z | x | B | C | dt]
                mixer = student.get_submodule(name.rsplit(".", 2)[0])
                d_inner, gn = mixer.d_inner, mixer.ngroups * mixer.d_state
                param = dict(zip(("z", "x", "B", "C", "dt"),
                                 param.split([d_inner, d_inner, gn, gn, mixer.nheads])))[seg.rstrip("]")]
            if ".mlp." in name:  # width and MLP width both sliced from the front: W_r[:rows, :cols]
                w = _teacher_linear(teacher, *_teacher_key(slot["teacher"])).double()
                U, S, Vh = torch.linalg.svd(w, full_matrices=False)
                w_r = (U[:, :r] * S[:r]) @ Vh[:r]  # (m, r) (r,) (r, n) -> (m, n)
                rows, cols = min(param.shape[0], w.shape[0]), min(param.shape[1], w.shape[1])
                want = w_r[:rows, :cols]
                err = (param[:rows, :cols] - want).abs().max().item()
                tol_abs = 1e-5 * (want.abs().max().item() + 1e-12) + 1e-6
                assert err <= tol_abs, f"{slot['student']} != W_r sliced ({err})"
            elif slot["mapped_fraction"] == 1.0:
                rank = torch.linalg.matrix_rank(param, rtol=1e-4).item()  # float32 rounding is noise
                assert rank <= r, f"{slot['student']}: rank {rank} > {r}"

    _run()


def check_cwr_linear_attention(factory: Callable, params: Any, *, geometries: st.SearchStrategy | None = None,
                               max_examples: int = 10, seq_len: int = 7) -> None:
    """With the SSM decay disabled the initialised Mamba mixer is causal linear attention.

    ``params`` must select: no decay (A ~ 0), identity conv, D = 0 and a constant step dt = c (for
    ``cwr``: ``{strategy: copy, decay: false, conv: identity, D: 0, dt: c}``); geometries default to
    :func:`matched_geometries`. For every Mamba layer i mapped from teacher layer j and a random
    input u (2, seq_len, d) to the mixer, compare

    * the mixer's SSD scan output y (b, l, nheads, headdim), captured at the scan, i.e. after
      in_proj, the conv and its SiLU, before the gate, the gated norm and out_proj (not compared), viewed
      as (b, l, H, head_dim) -- group h holds teacher head h;
    * with y_ref[t, h] = c * sum_{s <= t} (phi(q_t^h) . phi(k_s^g)) phi(v_s^g), g = h // (H/KV),
      phi = SiLU, q = u Wq^T, k = u Wk^T, v = u Wv^T computed here from the teacher's effective
      weights (float64): causal linear attention with feature map SiLU,

    to rtol 1e-4 (atol 1e-4 times the largest |y_ref|).
    """
    from mamba4net.plugins.hybrid_mamba.ssd import ssd_scan_ref

    @_settings(max_examples)
    @given(geo=geometries if geometries is not None else matched_geometries())
    def _run(geo):
        p = _params(params, geo)
        dt = p["dt"] if isinstance(p, dict) else p.dt  # the constant step c
        teacher, student = geo.teacher.build(), geo.student.build()
        report = run_initializer(factory, p, teacher, student)
        t = geo.teacher
        H, KV, hd = t.num_heads, t.num_kv_heads, t.head_dim
        checked = 0
        for row in report["layers"]:
            i, j = row["student"], row["teacher"]
            mixer = student.layers[i].mixer
            if j is None or not hasattr(mixer, "in_proj"):
                continue
            captured = {}

            def scan(*args, **kwargs):
                captured["y"] = ssd_scan_ref(*args, **kwargs)
                return captured["y"]

            u = torch.randn(2, seq_len, t.hidden_size, generator=torch.Generator().manual_seed(i))
            with torch.no_grad():
                mixer(u, ssd_scan=scan)
            y = captured["y"].double().reshape(2, seq_len, H, hd)  # (b, l, h*p) grouped per teacher head

            w = teacher.attention_weights(j)
            ud = u.double()
            q = F.silu(ud @ w["q_proj.weight"].double().T).view(2, seq_len, H, hd)
            k = F.silu(ud @ w["k_proj.weight"].double().T).view(2, seq_len, KV, hd).repeat_interleave(H // KV, 2)
            v = F.silu(ud @ w["v_proj.weight"].double().T).view(2, seq_len, KV, hd).repeat_interleave(H // KV, 2)
            scores = torch.einsum("bthd,bshd->bhts", q, k)  # (b, H, t, s)
            causal = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
            y_ref = dt * torch.einsum("bhts,bshd->bthd", scores.masked_fill(~causal, 0.0), v)
            scale = y_ref.abs().max().item()
            torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4 * scale + 1e-7)
            checked += 1
        assert checked or all(r["teacher"] is None or r["mixer"] != "mamba" for r in report["layers"])

    _run()
