"""The ``cwr`` initializer: write a hybrid Mamba student's weights from a Transformer teacher's.

    for each student layer i <- teacher layer j (the layer rule):
        for each table entry (mapping.MAMBA or .ATTENTION, then .COMMON):
            W_T  = the teacher tensor (effective weights: LoRA deltas included), float64 copy
            W_T' = W_T (copy) or its rank-r truncation (svd, when the width or MLP width shrinks)
            W_S  = P_rows @ W_T' @ P_cols^T    (the axis maps: slicing, head pooling/repetition)
            student slot <- W_S where both axes have a teacher counterpart
        Mamba slots with no counterpart (z gate, dt, A_log, D, conv): mapping.MAMBA_FILLS
    final norm <- teacher's final norm

The teacher is only read (every tensor is copied before use). Returns a JSON-able report.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from mamba4net.core.errors import ConfigError
from mamba4net.plugins.hf_teacher.model import effective_linear

from .config import NO_DECAY_A_LOG, CWRParams
from .mapping import (
    AXES,
    ATTENTION,
    COMMON,
    FFN,
    FINAL,
    MAMBA,
    MAMBA_FILLS,
    TEACHER_PATHS,
    WIDTH,
    AttentionGeometry,
    AxisMap,
    Entry,
    MambaGeometry,
    TeacherGeometry,
    check_shapes,
    conv_segments,
    in_proj_segments,
    layer_map,
    segment_rows,
)
from .svd import SVDInfo, truncated_svd

# ---------------------------------------------------------------------------------------------
# Reading the teacher (never writing it)
# ---------------------------------------------------------------------------------------------


def teacher_geometry(teacher: nn.Module) -> TeacherGeometry:
    for attr in ("layers", "attention_weights", "num_heads", "num_kv_heads", "head_dim", "d_model"):
        if not hasattr(teacher, attr):
            raise TypeError(f"cwr: the teacher backbone has no '{attr}' (expected hf_causal_lm's HFTeacherBackbone)")
    gate = getattr(getattr(teacher.layers[0], "mlp", None), "gate_proj", None)
    return TeacherGeometry(
        d_model=int(teacher.d_model),
        num_layers=len(teacher.layers),
        num_heads=int(teacher.num_heads),
        num_kv_heads=int(teacher.num_kv_heads),
        head_dim=int(teacher.head_dim),
        intermediate=int(gate.out_features) if gate is not None else 0,
    )


def teacher_sources(teacher: nn.Module, j: int) -> dict[str, Tensor]:
    """Copies of teacher layer ``j``'s tensors keyed ``<source>.weight`` / ``<source>.bias``."""
    out = dict(teacher.attention_weights(j))  # effective q/k/v/o, already detached copies
    layer = teacher.layers[j]
    mlp = getattr(layer, "mlp", None)
    for name in ("gate_proj", "up_proj", "down_proj"):
        proj = getattr(mlp, name, None)
        if proj is not None:
            w, b = effective_linear(proj)
            out[f"{name}.weight"] = w
            if b is not None:
                out[f"{name}.bias"] = b
    for name in ("input_layernorm", "post_attention_layernorm"):
        w = getattr(getattr(layer, name, None), "weight", None)
        if w is not None:
            out[f"{name}.weight"] = w.detach().clone()
    return out


def teacher_final_norm(teacher: nn.Module) -> dict[str, Tensor]:
    base = getattr(teacher, "base_model", teacher)
    w = getattr(getattr(base, "norm", None), "weight", None)
    return {} if w is None else {"norm.weight": w.detach().clone()}


# ---------------------------------------------------------------------------------------------
# Reading the student
# ---------------------------------------------------------------------------------------------


def layer_geometry(layer: nn.Module, d_model: int) -> MambaGeometry | AttentionGeometry | None:
    mixer = getattr(layer, "mixer", None)
    mlp = getattr(layer, "mlp", None)
    d_int = int(mlp.gate_proj.out_features) if mlp is not None else 0
    if hasattr(mixer, "in_proj") and hasattr(mixer, "A_log"):
        return MambaGeometry(d_model, d_int, mixer.d_inner, mixer.nheads, mixer.headdim,
                             mixer.ngroups, mixer.d_state, mixer.d_conv)
    if hasattr(mixer, "q_proj") and hasattr(mixer, "o_proj"):
        return AttentionGeometry(d_model, d_int, mixer.n_heads, mixer.n_kv_heads, mixer.head_dim,
                                 getattr(mixer, "rotary", None) is not None)
    return None


def _param(module: nn.Module, path: str) -> nn.Parameter | None:
    try:
        return module.get_parameter(path)
    except AttributeError:
        return None


def _inv_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


# ---------------------------------------------------------------------------------------------
# The initializer
# ---------------------------------------------------------------------------------------------


class CWRInitializer:
    """``CWRInitializer(params)(teacher_backbone, student_backbone) -> report``."""

    def __init__(self, params: CWRParams | None = None):
        self.params = params or CWRParams()

    def __call__(self, teacher: nn.Module, student: nn.Module) -> dict[str, Any]:
        with torch.no_grad():
            return _Run(self.params, teacher, student).run()


class _Run:
    """One initialisation: caches (SVDs, axis maps) live as long as the call."""

    def __init__(self, params: CWRParams, teacher: nn.Module, student: nn.Module):
        if not hasattr(student, "layers"):
            raise TypeError("cwr: the student backbone has no 'layers' (expected hybrid_mamba)")
        self.p, self.teacher, self.student = params, teacher, student
        self.t = teacher_geometry(teacher)
        self.d_s = int(student.d_model)
        self._svd: dict[tuple[str, bool], tuple[Tensor, SVDInfo]] = {}
        self._axes: dict[tuple[str, Any], AxisMap] = {}
        self.notes: list[str] = []
        self.slots: list[dict[str, Any]] = []
        self.svd_report: dict[str, dict[str, Any]] = {}
        self.skipped: list[dict[str, str]] = []

    # --- helpers ---------------------------------------------------------------------------
    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def _skip(self, slot: str, reason: str) -> None:
        self.skipped.append({"slot": slot, "reason": reason})

    def _axis(self, kind: str, geo) -> AxisMap:
        key = (kind, geo)
        if key not in self._axes:
            self._axes[key] = AXES[kind].build(self.t, geo)
            self._note(self._axes[key].note)
        return self._axes[key]

    def _compressed(self, entry: Entry, geo) -> bool:
        """svd: compress a matrix when a side that touches the width or the MLP width shrinks."""
        if self.p.strategy != "svd" or entry.cols is None:
            return False
        return any(AXES[a].student(geo) < AXES[a].teacher(self.t) for a in (entry.rows, entry.cols)
                   if a in (WIDTH, FFN))

    def _source(self, key: str, weight: Tensor, compress: bool) -> tuple[Tensor, SVDInfo | None]:
        """The teacher matrix as float64, truncated to rank r when compressing (cached)."""
        if not compress:
            return weight.to(torch.float64, copy=True), None
        if (key, compress) not in self._svd:
            self._svd[(key, compress)] = truncated_svd(weight, self.p.rank)
            w_r, info = self._svd[(key, compress)]
            self.svd_report[key] = {"rank": info.rank, "full_rank": info.full_rank,
                                    "rel_error": round(info.rel_error, 6)}
        return self._svd[(key, compress)]

    def _layer_map(self) -> list[int | None]:
        n_s, n_t = len(self.student.layers), self.t.num_layers
        rule = self.p.layers
        if isinstance(rule, list):
            if len(rule) != n_s:
                raise ConfigError(f"initializer.layers: {len(rule)} entries for a {n_s}-layer student "
                                  "(one teacher index or null per student layer)")
            bad = [j for j in rule if j is not None and j >= n_t]
            if bad:
                raise ConfigError(f"initializer.layers: teacher layers {bad} out of range for a "
                                  f"{n_t}-layer teacher (valid: 0..{n_t - 1})")
        return layer_map(rule, n_s, n_t)

    # --- writing one slot ------------------------------------------------------------------
    def _apply(self, entry: Entry, module: nn.Module, prefix: str, sources: dict[str, Tensor],
               t_prefix: str, geo) -> None:
        slot = f"{prefix}{entry.student}" + (f"[{entry.segment}]" if entry.segment else "")
        param = _param(module, entry.student)
        if param is None:
            self._skip(slot, f"the student has no {entry.student.rsplit('.', 1)[0]}")
            return
        src = sources.get(f"{entry.teacher}.weight")
        if src is None:
            self._skip(slot, f"the teacher has no {entry.teacher}")
            return
        rows = segment_rows(entry, geo)
        target = param if rows is None else param[rows[0]: rows[1]]
        check_shapes(entry, self.t, geo, src.shape, target.shape)

        t_key = f"{t_prefix}{TEACHER_PATHS[entry.teacher]}.weight"
        compress = self._compressed(entry, geo)
        w, info = self._source(t_key, src, compress)
        p_rows = self._axis(entry.rows, geo)
        if entry.cols is None:  # a vector (norm weight)
            new = p_rows.rows(w)  # (n_t,) -> (n_s,)
            mask = p_rows.mapped
        else:
            p_cols = self._axis(entry.cols, geo)
            new = p_cols.rows(p_rows.rows(w).T).T  # (rows_t, cols_t) -> (rows_s, cols_t) -> (rows_s, cols_s)
            mask = p_rows.mapped[:, None] & p_cols.mapped[None, :]
        mask = mask.to(target.device)
        target.copy_(torch.where(mask, new.to(device=target.device, dtype=target.dtype), target))
        self._bias(entry, module, rows, sources, p_rows, slot)
        self.slots.append({
            "student": slot, "teacher": t_key, "compressed": compress,
            "rank": info.rank if info else None,
            "rel_error": round(info.rel_error, 6) if info else 0.0,
            "mapped_fraction": round(mask.float().mean().item(), 4),
        })

    def _bias(self, entry: Entry, module: nn.Module, rows, sources, p_rows: AxisMap, slot: str) -> None:
        """A student bias on the mapped rows: the teacher's bias mapped the same way, else 0."""
        if entry.cols is None:
            return
        t_bias = sources.get(f"{entry.teacher}.bias")
        bias = _param(module, entry.student.removesuffix(".weight") + ".bias")
        if bias is None:
            if t_bias is not None:
                self._note(f"teacher {entry.teacher} bias dropped (the student slot has none)")
            return
        target = bias if rows is None else bias[rows[0]: rows[1]]
        new = p_rows.rows(t_bias.double()) if t_bias is not None else torch.zeros(len(target))
        mask = p_rows.mapped.to(target.device)
        target.copy_(torch.where(mask, new.to(device=target.device, dtype=target.dtype), target))

    # --- Mamba slots without a teacher counterpart -------------------------------------------
    def _fill_mamba(self, layer: nn.Module, geo: MambaGeometry) -> None:
        p, mixer = self.p, layer.mixer
        seg = in_proj_segments(geo)
        for path, segment, rule in MAMBA_FILLS:
            param = _param(layer, path)
            if param is None or rule == "keep":
                continue
            target = param if segment is None else param[seg[segment][0]: seg[segment][1]]
            if rule == "dt_rows" and p.dt is not None:
                target.zero_()
                bias = _param(layer, "mixer.in_proj.bias")
                if bias is not None:
                    bias[seg["dt"][0]: seg["dt"][1]].zero_()
            elif rule == "dt_bias" and p.dt is not None:
                target.fill_(_inv_softplus(p.dt))
            elif rule == "a_log" and not p.decay:
                target.fill_(NO_DECAY_A_LOG)
            elif rule == "d_skip":
                target.fill_(p.D)
            elif rule == "conv" and p.conv == "identity":
                target.zero_()
                target[..., -1] = 1.0  # (conv_dim, 1, d_conv): the last tap reads step t itself
            elif rule == "conv_bias" and p.conv == "identity":
                target.zero_()
        lo, hi = getattr(mixer, "dt_limit", (0.0, math.inf))
        if p.dt is not None and not lo <= p.dt <= hi:
            self._note(f"dt={p.dt} is clamped to the student's dt_limit {tuple(mixer.dt_limit)}")
        assert set(conv_segments(geo)) == {"x", "B", "C"}  # the conv runs over xBC, identity on all

    def _filled(self) -> dict[str, Any]:
        p = self.p
        return {
            "z (gate)": "student init (silu(0) would silence the mixer)",
            "dt": "student init" if p.dt is None
            else f"constant {p.dt}: in_proj dt rows 0, dt_bias = softplus^-1({p.dt})",
            "A_log": "student init (decay on)" if p.decay else f"{NO_DECAY_A_LOG} (decay off: A ~ -1e-13)",
            "D": p.D,
            "conv1d": "identity tap (last tap 1, others and bias 0)" if p.conv == "identity" else "student init",
            "norm (gated RMSNorm)": "student init",
        }

    # --- the whole student -------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        p, t, student = self.p, self.t, self.student
        if p.strategy == "copy" and self.d_s != t.d_model:
            raise ConfigError(f"initializer.strategy: 'copy' needs the student's width ({self.d_s}) to equal "
                              f"the teacher's ({t.d_model}); use strategy: svd for a narrower student")
        groups = {"mixer"} | ({"mlp"} if p.mlp else set()) | ({"norm"} if p.norms else set())
        mapping = self._layer_map()
        layers, geometries = [], {}
        for i, (layer, j) in enumerate(zip(student.layers, mapping)):
            geo = layer_geometry(layer, self.d_s)
            kind = geo.as_dict()["kind"] if geo is not None else None
            layers.append({"student": i, "teacher": j, "mixer": kind})
            if geo is not None:
                geometries.setdefault(kind, geo.as_dict())
            if j is None:
                self._skip(f"layers.{i}", "no teacher layer (layer rule); student init kept")
                continue
            if geo is None:
                self._skip(f"layers.{i}.mixer", f"unknown mixer {type(getattr(layer, 'mixer', None)).__name__}")
                continue
            sources = teacher_sources(self.teacher, j)
            table = (MAMBA if isinstance(geo, MambaGeometry) else ATTENTION) + COMMON
            for entry in table:
                if entry.group in groups:
                    self._apply(entry, layer, f"layers.{i}.", sources, f"layers.{j}.", geo)
            if isinstance(geo, MambaGeometry):
                self._fill_mamba(layer, geo)
        if "norm" in groups:
            final = teacher_final_norm(self.teacher)
            geo = next((g for g in (layer_geometry(x, self.d_s) for x in student.layers) if g is not None), None)
            for entry in FINAL:
                if geo is not None:
                    self._apply(entry, student, "", final, "", geo)
        if p.strategy == "svd" and not self.svd_report:
            self._note("svd: no side shrinks (the student is as wide as the teacher): weights copied as they are")
        return {
            "initializer": "cwr",
            "strategy": p.strategy,
            "rank": p.rank if p.strategy == "svd" else None,
            "teacher": t.as_dict(),
            "student": {"d_model": self.d_s, "n_layers": len(student.layers), "mixers": geometries},
            "layer_rule": p.layers,
            "layers": layers,
            "geometry": list(self.notes),
            "filled": self._filled() if "mamba" in geometries else {},
            "svd": self.svd_report,
            "slots": self.slots,
            "skipped": self.skipped,
        }


def build_cwr(params: CWRParams) -> CWRInitializer:
    """``factory(params) -> callable(teacher, student) -> report``."""
    return CWRInitializer(params)
