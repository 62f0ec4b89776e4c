"""CWR as data: which teacher tensor fills which student slot, and how each matrix axis maps.

Every mapped slot is one row of a table::

    Entry(student slot, teacher source, row axis, column axis)

and every axis kind is one row of ``AXES``: its size on the teacher side, its size on the student
side, and the rule that builds its index map. An axis map is a matrix ``P (n_student, n_teacher)``
(selection, mean-pooling of heads, repetition of heads, all in one form; stored as a gather), so
a student slot is

    W_S = P_rows @ W_T' @ P_cols^T          W_T' = W_T (copy) or its rank-r truncation (svd)

restricted to the student rows / columns that have a teacher counterpart (the others keep the
student's own initialisation). Shapes are asserted once, in :func:`check_shapes`, from the table.

Geometry rules (best effort where the student's shape differs from the teacher's):

* width (residual stream) and MLP hidden units: the first ``d_S`` coordinates (paper eq. 14);
* heads -> fewer heads/groups: contiguous blocks of heads, inputs mean-pooled (as in GQA
  uptraining, Ainslie et al. 2023), outputs summed; heads -> more heads/groups: each teacher head
  repeated, outputs split (weight 1 / repeats) so the layer output keeps its scale;
* GQA: a query head i reads KV head i // (H / KV): K and V are expanded to the query heads first;
* Mamba: ngroups B/C groups <-> teacher query heads (C <- Q, B <- K); the x channels of a group
  (d_inner / ngroups of them) <- the V channels of its heads, concatenated; out_proj's columns
  <- the matching O columns; d_state < head_dim keeps the first d_state channels;
* student attention head_dim < teacher's: RoPE-aware, student frequency pair p <- teacher pair
  p * hd_T / hd_S (same rotation frequency when hd_S divides hd_T), q scaled to keep the logit scale;
* anything with no teacher counterpart (extra state dims, extra value channels, extra width) keeps
  the student's own initialisation: never zero rows that could not train.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import Tensor

# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherGeometry:
    d_model: int
    num_layers: int
    num_heads: int  # H
    num_kv_heads: int  # KV, divides H
    head_dim: int  # hd
    intermediate: int  # MLP hidden units (0: none found)

    @property
    def rep(self) -> int:
        """Query heads per KV head (GQA): query head i reads KV head i // rep."""
        return self.num_heads // self.num_kv_heads

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class MambaGeometry:
    d_model: int
    d_intermediate: int  # 0: no MLP in the layer
    d_inner: int
    nheads: int
    headdim: int
    ngroups: int
    d_state: int
    d_conv: int

    @property
    def value_dim(self) -> int:
        """x channels per B/C group (the group's "value" width)."""
        return self.d_inner // self.ngroups

    def as_dict(self) -> dict:
        return {"kind": "mamba", **self.__dict__}


@dataclass(frozen=True)
class AttentionGeometry:
    d_model: int
    d_intermediate: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    rope: bool

    def as_dict(self) -> dict:
        return {"kind": "attention", **self.__dict__}


# ---------------------------------------------------------------------------------------------
# Heads and channels
# ---------------------------------------------------------------------------------------------


def head_blocks(n_src: int, n_dst: int) -> list[tuple[list[int], float, float]]:
    """For each destination head: ``(source heads, input weight, output weight)``.

    ``n_dst <= n_src``: contiguous blocks of source heads (sizes differ by at most one), inputs
    mean-pooled (weight 1/len), outputs summed (weight 1). ``n_dst > n_src``: head j repeats source
    head ``j * n_src // n_dst`` (weight 1); its output is split among its r repeats (weight 1/r)."""
    if n_dst <= n_src:
        out = []
        for j in range(n_dst):
            heads = list(range(j * n_src // n_dst, (j + 1) * n_src // n_dst))
            out.append((heads, 1.0 / len(heads), 1.0))
        return out
    src = [j * n_src // n_dst for j in range(n_dst)]
    return [([i], 1.0, 1.0 / src.count(i)) for i in src]


def rope_channels(hd_s: int, hd_t: int) -> list[int | None]:
    """Student channel -> teacher channel for q/k under rotate-half RoPE: channel c is pair
    ``c mod hd/2`` of half ``c // (hd/2)``; student pair p <- teacher pair ``p * hd_t // hd_s`` when
    the student is narrower (same frequency theta^(-2p/hd) when hd_s divides hd_t), pair p when it
    is wider (pairs beyond the teacher's: no counterpart). Odd sizes: the first channels."""
    if hd_s % 2 or hd_t % 2:
        return plain_channels(hd_s, hd_t)
    hs, ht = hd_s // 2, hd_t // 2
    pairs = [p * ht // hs if hs <= ht else (p if p < ht else None) for p in range(hs)]
    return [None if pairs[c % hs] is None else (c // hs) * ht + pairs[c % hs] for c in range(hd_s)]


def plain_channels(n_s: int, n_t: int) -> list[int | None]:
    """The first min(n_s, n_t) channels; the rest have no counterpart."""
    return [c if c < n_t else None for c in range(n_s)]


def q_scale(hd_s: int, hd_t: int) -> float:
    """Factor on q so that a logit over the kept channels, scaled by 1/sqrt(hd_s), keeps the size
    of the teacher's (scaled by 1/sqrt(hd_t)): exact for hd_s > hd_t, on average for hd_s < hd_t."""
    return math.sqrt(hd_t / hd_s) if hd_s < hd_t else math.sqrt(hd_s / hd_t)


# ---------------------------------------------------------------------------------------------
# Axis maps
# ---------------------------------------------------------------------------------------------

Pairs = list[list[tuple[int, float]]]  # per student index: (teacher index, weight) pairs


@dataclass
class AxisMap:
    """Student index s <- sum_k weight[s, k] * teacher index ``index[s, k]`` (k up to the most
    teacher indices one student index pools; padding has weight 0); ``mapped (n_s,)``: which
    student indices have a teacher counterpart; ``note``: the rule applied, for the report.

    Kept as a gather (not a dense (n_s, n_t) matrix): at Llama-7B size a dense float64 map of the
    MLP axis alone would take about 1 GB. A pure selection is a gather times 1.0: exact."""

    index: Tensor  # (n_s, k) long
    weight: Tensor  # (n_s, k) float64
    mapped: Tensor  # (n_s,) bool
    n_t: int
    note: str

    @classmethod
    def from_pairs(cls, pairs: Pairs, n_t: int, note: str) -> "AxisMap":
        merged = []
        for row in pairs:  # pooled heads that share a KV head add up
            acc: dict[int, float] = {}
            for t, w in row:
                acc[t] = acc.get(t, 0.0) + w
            merged.append(sorted(acc.items()))
        k = max(1, max((len(r) for r in merged), default=1))
        index = torch.zeros(len(pairs), k, dtype=torch.long)
        weight = torch.zeros(len(pairs), k, dtype=torch.float64)
        for s, row in enumerate(merged):
            for c, (t, w) in enumerate(row):
                index[s, c], weight[s, c] = t, w
        return cls(index, weight, torch.tensor([bool(r) for r in merged], dtype=torch.bool), n_t, note)

    def rows(self, w: Tensor) -> Tensor:
        """``w (n_t, ...) -> (n_s, ...)``: this map applied along dim 0."""
        idx, wt = self.index.to(w.device), self.weight.to(device=w.device, dtype=w.dtype)
        picked = w[idx]  # (n_s, k, ...)
        return (picked * wt.view(*wt.shape, *([1] * (w.dim() - 1)))).sum(1)

    @property
    def matrix(self) -> Tensor:
        """The map as a dense ``(n_s, n_t)`` matrix (tests, small shapes)."""
        m = torch.zeros(len(self.index), self.n_t, dtype=torch.float64)
        return m.scatter_add_(1, self.index, self.weight)


def _prefix(n_s: int, n_t: int, what: str) -> AxisMap:
    pairs = [[(i, 1.0)] if i < n_t else [] for i in range(n_s)]
    note = f"{what}: {n_t} -> {n_s}" + (
        "" if n_s == n_t else f" (first {min(n_s, n_t)} kept" + ("" if n_s < n_t else ", rest student init") + ")"
    )
    return AxisMap.from_pairs(pairs, n_t, note)


def _width(t: TeacherGeometry, s) -> AxisMap:
    return _prefix(s.d_model, t.d_model, "width")


def _ffn(t: TeacherGeometry, s) -> AxisMap:
    return _prefix(s.d_intermediate, t.intermediate, "mlp hidden")


def _heads_note(n_t: int, n_s: int, what: str) -> str:
    if n_t == n_s:
        return f"{what}: {n_t} -> {n_s} one to one"
    if n_s < n_t:
        return f"{what}: {n_t} -> {n_s} (blocks of teacher heads mean-pooled)"
    return f"{what}: {n_t} -> {n_s} (teacher heads repeated, outputs split)"


def _ssm_qk(t: TeacherGeometry, s: MambaGeometry, kv: bool) -> AxisMap:
    """B or C rows (ngroups * d_state) <- K (KV*hd) or Q (H*hd) rows: group k <- the teacher query
    heads of block k, K read through the GQA map, the first d_state channels of each head."""
    hd, n = t.head_dim, s.d_state
    chans = plain_channels(n, hd)
    pairs: Pairs = []
    for heads, w_in, _ in head_blocks(t.num_heads, s.ngroups):
        for ch in chans:
            src = [(i // t.rep if kv else i) * hd + ch for i in heads] if ch is not None else []
            pairs.append([(idx, w_in) for idx in src])
    name = "B <- K" if kv else "C <- Q"
    note = _heads_note(t.num_heads, s.ngroups, f"{name} query heads -> B/C groups")
    if n != hd:
        note += f"; d_state {n} vs head_dim {hd}: first {min(n, hd)} channels" + (
            "" if n < hd else ", rest student init"
        )
    if kv and t.rep > 1:
        note += f"; K expanded from {t.num_kv_heads} KV heads (GQA)"
    return AxisMap.from_pairs(pairs, (t.num_kv_heads if kv else t.num_heads) * hd, note)


def _ssm_value_channels(t: TeacherGeometry, s: MambaGeometry) -> list[list[tuple[int, int, float]]]:
    """Per x channel (d_inner of them): [(query head, channel, output weight)], grouped by B/C
    group: the channels of the group's teacher heads, concatenated, cut to d_inner / ngroups."""
    out = []
    for heads, _, w_out in head_blocks(t.num_heads, s.ngroups):
        cand = [(i, c, w_out) for i in heads for c in range(t.head_dim)]
        out.extend([[cand[v]] if v < len(cand) else [] for v in range(s.value_dim)])
    return out


def _ssm_x(t: TeacherGeometry, s: MambaGeometry) -> AxisMap:
    pairs = [[((i // t.rep) * t.head_dim + c, 1.0) for i, c, _ in ch] for ch in _ssm_value_channels(t, s)]
    per_group = len(head_blocks(t.num_heads, s.ngroups)[0][0]) * t.head_dim
    note = f"x <- V: {s.value_dim} channels per group from {per_group} teacher V channels"
    if s.value_dim != per_group:
        note += " (cut)" if s.value_dim < per_group else " (rest student init)"
    if t.rep > 1:
        note += f"; V expanded from {t.num_kv_heads} KV heads (GQA)"
    return AxisMap.from_pairs(pairs, t.num_kv_heads * t.head_dim, note)


def _ssm_o(t: TeacherGeometry, s: MambaGeometry) -> AxisMap:
    pairs = [[(i * t.head_dim + c, w) for i, c, w in ch] for ch in _ssm_value_channels(t, s)]
    return AxisMap.from_pairs(pairs, t.num_heads * t.head_dim, "out_proj <- O: the columns of the x channels' heads")


def _att(t: TeacherGeometry, s: AttentionGeometry, which: str) -> AxisMap:
    """Student attention rows (q, k, v) or o columns <- the teacher's, head blocks + channel map."""
    query = which in ("q", "o")
    n_t, n_s = (t.num_heads, s.n_heads) if query else (t.num_kv_heads, s.n_kv_heads)
    chans = rope_channels(s.head_dim, t.head_dim) if which in ("q", "k") else plain_channels(s.head_dim, t.head_dim)
    scale = q_scale(s.head_dim, t.head_dim) if which == "q" else 1.0
    pairs: Pairs = []
    for heads, w_in, w_out in head_blocks(n_t, n_s):
        w = w_out if which == "o" else w_in * scale
        for ch in chans:
            pairs.append([] if ch is None else [(i * t.head_dim + ch, w) for i in heads])
    note = _heads_note(n_t, n_s, f"attention {which} heads")
    if which == "o" and n_s < n_t:
        note = note.replace("mean-pooled", "summed")
    if s.head_dim != t.head_dim:
        note += f"; head_dim {t.head_dim} -> {s.head_dim}" + (
            " (RoPE frequency pairs matched, q rescaled)" if which in ("q", "k") else ""
        )
    return AxisMap.from_pairs(pairs, n_t * t.head_dim, note)


@dataclass(frozen=True)
class Axis:
    teacher: Callable[[TeacherGeometry], int]  # size on the teacher side
    student: Callable[[object], int]  # size on the student side (layer geometry)
    build: Callable[[TeacherGeometry, object], AxisMap]


WIDTH, FFN = "width", "ffn"
SSM_C, SSM_B, SSM_X, SSM_O = "ssm_c", "ssm_b", "ssm_x", "ssm_o"
ATT_Q, ATT_K, ATT_V, ATT_O = "att_q", "att_k", "att_v", "att_o"

def _q_size(t: TeacherGeometry) -> int:
    return t.num_heads * t.head_dim  # q rows, o columns


def _kv_size(t: TeacherGeometry) -> int:
    return t.num_kv_heads * t.head_dim  # k and v rows


def _bc_size(s: MambaGeometry) -> int:
    return s.ngroups * s.d_state  # in_proj's B (or C) rows


def _attn_q_size(s: AttentionGeometry) -> int:
    return s.n_heads * s.head_dim


def _attn_kv_size(s: AttentionGeometry) -> int:
    return s.n_kv_heads * s.head_dim


#: axis kind -> (teacher size, student size, map rule)
AXES: dict[str, Axis] = {
    WIDTH: Axis(lambda t: t.d_model, lambda s: s.d_model, _width),
    FFN: Axis(lambda t: t.intermediate, lambda s: s.d_intermediate, _ffn),
    SSM_C: Axis(_q_size, _bc_size, lambda t, s: _ssm_qk(t, s, kv=False)),
    SSM_B: Axis(_kv_size, _bc_size, lambda t, s: _ssm_qk(t, s, kv=True)),
    SSM_X: Axis(_kv_size, lambda s: s.d_inner, _ssm_x),
    SSM_O: Axis(_q_size, lambda s: s.d_inner, _ssm_o),
    ATT_Q: Axis(_q_size, _attn_q_size, lambda t, s: _att(t, s, "q")),
    ATT_K: Axis(_kv_size, _attn_kv_size, lambda t, s: _att(t, s, "k")),
    ATT_V: Axis(_kv_size, _attn_kv_size, lambda t, s: _att(t, s, "v")),
    ATT_O: Axis(_q_size, _attn_q_size, lambda t, s: _att(t, s, "o")),
}

# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    student: str  # parameter path inside the student layer (or the backbone, for FINAL)
    segment: str | None  # row segment of a fused parameter (in_proj: z | x | B | C | dt)
    teacher: str  # source key (see initializer.teacher_sources)
    rows: str  # axis kind of dim 0
    cols: str | None  # axis kind of dim 1; None for vectors
    group: str  # "mixer" | "mlp" | "norm": what a parameter switches off


MAMBA: tuple[Entry, ...] = (
    Entry("mixer.in_proj.weight", "C", "q_proj", SSM_C, WIDTH, "mixer"),
    Entry("mixer.in_proj.weight", "B", "k_proj", SSM_B, WIDTH, "mixer"),
    Entry("mixer.in_proj.weight", "x", "v_proj", SSM_X, WIDTH, "mixer"),
    Entry("mixer.out_proj.weight", None, "o_proj", WIDTH, SSM_O, "mixer"),
)
ATTENTION: tuple[Entry, ...] = (
    Entry("mixer.q_proj.weight", None, "q_proj", ATT_Q, WIDTH, "mixer"),
    Entry("mixer.k_proj.weight", None, "k_proj", ATT_K, WIDTH, "mixer"),
    Entry("mixer.v_proj.weight", None, "v_proj", ATT_V, WIDTH, "mixer"),
    Entry("mixer.o_proj.weight", None, "o_proj", WIDTH, ATT_O, "mixer"),
)
COMMON: tuple[Entry, ...] = (  # every mapped layer, Mamba or attention
    Entry("norm1.weight", None, "input_layernorm", WIDTH, None, "norm"),
    Entry("norm2.weight", None, "post_attention_layernorm", WIDTH, None, "norm"),
    Entry("mlp.gate_proj.weight", None, "gate_proj", FFN, WIDTH, "mlp"),
    Entry("mlp.up_proj.weight", None, "up_proj", FFN, WIDTH, "mlp"),
    Entry("mlp.down_proj.weight", None, "down_proj", WIDTH, FFN, "mlp"),
)
FINAL: tuple[Entry, ...] = (Entry("norm_f.weight", None, "norm", WIDTH, None, "norm"),)

#: Where each teacher source lives in a Llama-family decoder layer (for the report's names).
TEACHER_PATHS: dict[str, str] = {
    "q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj", "v_proj": "self_attn.v_proj",
    "o_proj": "self_attn.o_proj", "gate_proj": "mlp.gate_proj", "up_proj": "mlp.up_proj",
    "down_proj": "mlp.down_proj", "input_layernorm": "input_layernorm",
    "post_attention_layernorm": "post_attention_layernorm", "norm": "norm",
}

#: Mamba slots the teacher has no counterpart for, and what fills them (see CWRParams).
#: keep: the student's own init; dt: zero rows if ``dt`` is set; conv: identity tap or keep.
MAMBA_FILLS: tuple[tuple[str, str | None, str], ...] = (
    ("mixer.in_proj.weight", "z", "keep"),  # the gate: silu(z) must not start at 0 (dead output)
    ("mixer.in_proj.weight", "dt", "dt_rows"),
    ("mixer.dt_bias", None, "dt_bias"),
    ("mixer.A_log", None, "a_log"),
    ("mixer.D", None, "d_skip"),
    ("mixer.conv1d.weight", None, "conv"),
    ("mixer.conv1d.bias", None, "conv_bias"),
    ("mixer.norm.weight", None, "keep"),
)


def in_proj_segments(s: MambaGeometry) -> dict[str, tuple[int, int]]:
    """Row ranges of mamba_ssm's fused in_proj: [z | x | B | C | dt]."""
    sizes = (("z", s.d_inner), ("x", s.d_inner), ("B", s.ngroups * s.d_state),
             ("C", s.ngroups * s.d_state), ("dt", s.nheads))
    out, start = {}, 0
    for name, size in sizes:
        out[name] = (start, start + size)
        start += size
    return out


def conv_segments(s: MambaGeometry) -> dict[str, tuple[int, int]]:
    """Channel ranges of the depthwise conv over xBC: [x | B | C]."""
    seg = in_proj_segments(s)
    off = seg["x"][0]
    return {k: (a - off, b - off) for k, (a, b) in seg.items() if k in ("x", "B", "C")}


def segment_rows(entry: Entry, s) -> tuple[int, int] | None:
    if entry.segment is None:
        return None
    return in_proj_segments(s)[entry.segment]


def check_shapes(entry: Entry, t: TeacherGeometry, s, teacher_shape: Sequence[int],
                 student_shape: Sequence[int]) -> None:
    """The one place shapes are asserted: the teacher tensor and the student slot (after its
    segment is cut) must have the sizes the table's axes say, for these geometries."""
    axes = (entry.rows,) if entry.cols is None else (entry.rows, entry.cols)
    want_t = tuple(AXES[a].teacher(t) for a in axes)
    want_s = tuple(AXES[a].student(s) for a in axes)
    where = f"{entry.teacher} -> {entry.student}" + (f"[{entry.segment}]" if entry.segment else "")
    assert tuple(teacher_shape) == want_t, f"{where}: teacher shape {tuple(teacher_shape)} != {want_t} expected"
    assert tuple(student_shape) == want_s, f"{where}: student shape {tuple(student_shape)} != {want_s} expected"


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def layer_map(rule: str | list, n_student: int, n_teacher: int) -> list[int | None]:
    """Teacher layer of each student layer (None: no teacher layer, keep the student's init).

    * ``evenly``: ``round(i * (n_t - 1) / (n_s - 1))``, first and last aligned (a single student
      layer takes the last teacher layer); distinct when n_s <= n_t, repeated otherwise;
    * ``last_k``: the last n_s teacher layers in order (student layers beyond the teacher's count,
      at the input end, get none); ``first_k``: the first n_s (those at the output end get none);
    * a list: taken as it is (its length and range are checked by the initializer).
    """
    if isinstance(rule, list):
        return list(rule)
    if rule == "evenly":
        if n_student == 1:
            return [n_teacher - 1]
        d = n_student - 1
        return [(i * (n_teacher - 1) + d // 2) // d for i in range(n_student)]
    if rule == "last_k":
        off = n_teacher - n_student
        return [i + off if i + off >= 0 else None for i in range(n_student)]
    if rule == "first_k":
        return [i if i < n_teacher else None for i in range(n_student)]
    raise ValueError(f"unknown layer rule {rule!r}")
