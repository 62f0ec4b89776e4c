"""The stages of MOHAWK, written against the public stage context only.

    adapt_teacher   (optional) LoRA-adapt the teacher on the task, as Mamba4Net does
    mohawk_init     the configured initializer (CWR: Q->C, K->B, V->x, O->out_proj, MLPs and norms
                    copied) maps the teacher into the student; the encoder and head are copied
    mohawk_matrix   stage 1: mixer matrices toward the teacher's attention matrices
    mohawk_hidden   stage 2: each block toward the teacher's block, on the teacher's inputs
    mohawk_distill  stage 3: end to end, the stage's loss terms (KD at temperature 1 by default)

torch is imported inside the functions: the method is built when a config is validated.
"""

from __future__ import annotations

import time
from typing import Callable

from mamba4net.core.errors import ConfigError

from mamba4net.plugins.mamba4net.stages import adapt_teacher, distill_from

from .config import MohawkParams

__all__ = ["adapt_teacher", "init", "matrix", "hidden", "distill"]


def pairs_and_heads(params: MohawkParams, teacher, student) -> tuple[list[tuple[int, int]], list[list[int]]]:
    """(student layer, teacher layer) for every Mamba layer of the student that has a teacher
    layer, and the teacher heads each student head aligns with; config errors for what cannot be
    mapped (before any training)."""
    from mamba4net.plugins.cwr.mapping import layer_map

    from .alignment import head_map

    s_bb, t_bb = student.backbone, teacher.backbone
    for need in ("layer_matrix", "run_layer", "mamba_layers"):
        if not hasattr(s_bb, need):
            raise ConfigError(f"student: mohawk needs a student with Mamba-2 layers it can run one at a time "
                              f"(hybrid_mamba); {type(s_bb).__name__} has no {need}")
    n_teacher = getattr(t_bb, "num_layers", None)
    if n_teacher is None or not hasattr(t_bb, "num_heads"):
        raise ConfigError(f"teacher: mohawk needs a Transformer teacher with per-head attention "
                          f"(hf_causal_lm); {type(t_bb).__name__} has none")
    rule = params.layers
    if isinstance(rule, list):
        if len(rule) != len(s_bb.layers):
            raise ConfigError(f"method.layers: {len(rule)} entries for a student of {len(s_bb.layers)} layers")
        bad = [t for t in rule if t is not None and t >= n_teacher]
        if bad:
            raise ConfigError(f"method.layers: teacher layer {bad[0]} does not exist (the teacher has {n_teacher})")
    mapping = layer_map(rule, len(s_bb.layers), n_teacher)
    pairs = [(i, mapping[i]) for i in s_bb.mamba_layers() if mapping[i] is not None]
    nheads = {s_bb.layers[i].mixer.nheads for i, _ in pairs}
    if len(nheads) > 1:
        raise ConfigError(f"student: its Mamba layers have different head counts {sorted(nheads)}")
    heads = head_map(t_bb.num_heads, nheads.pop()) if pairs else []
    return pairs, heads


def init(params: MohawkParams):
    def run(ctx) -> dict:
        import torch

        teacher, student = ctx.model("teacher"), ctx.model("student")
        pairs, heads = pairs_and_heads(params, teacher, student)
        initialize = ctx.build("initializer")
        t0 = time.perf_counter()
        with torch.no_grad():
            report = initialize(teacher.backbone, student.backbone)
            copied = []
            for part in ("encoder", "head"):  # embeddings (and the networking head) copied where shapes allow
                mine, theirs = getattr(student, part).state_dict(), getattr(teacher, part).state_dict()
                same = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
                getattr(student, part).load_state_dict(same, strict=False)
                copied += [f"{part}.{k}" for k in same]
        return {"initializer": ctx.config.initializer["name"], "seconds": time.perf_counter() - t0,
                "pairs": pairs, "heads": heads, "copied": copied, "report": report}

    return run


def _left_out(params: MohawkParams, stage: str) -> dict | None:
    return None if stage in params.stages else {"skipped": f"not in method.stages {params.stages}"}


def _align(params: MohawkParams, stage: str, tap: str, make_loss) -> Callable:
    """A layer-wise stage: the student's paired layers trained toward the teacher's, with
    ``make_loss(ctx, student, teacher, pairs, heads)`` reading the teacher's ``block_in`` and ``tap``."""

    def run(ctx) -> dict | None:
        if _left_out(params, stage):
            return _left_out(params, stage)
        teacher, student = ctx.frozen("teacher"), ctx.model("student")
        pairs, heads = pairs_and_heads(params, teacher, student)
        ctx.train_only("student", ctx.params.trainable)
        loss = make_loss(ctx, student, teacher, pairs, heads)
        taps = [f"block_in.{t}" for _, t in pairs] + [f"{tap}.{t}" for _, t in pairs]

        def loss_fn(batch):
            return loss(ctx.outputs("teacher", teacher, batch, taps=taps).taps)

        ctx.fit({"model": student, "objective": loss}, loss_fn)

    return run


def matrix(params: MohawkParams) -> Callable:
    def loss(ctx, student, teacher, pairs, heads):
        from .alignment import MatrixAlignment

        return MatrixAlignment(student.backbone, pairs, heads, int(teacher.d_model), ctx.params.block_rows)

    return _align(params, "matrix", "attn_probs", loss)


def hidden(params: MohawkParams) -> Callable:
    def loss(ctx, student, teacher, pairs, heads):
        from .alignment import HiddenAlignment

        return HiddenAlignment(student.backbone, pairs, int(teacher.d_model))

    return _align(params, "hidden", "block_out", loss)


def distill(params: MohawkParams):
    def run(ctx) -> dict | None:
        return _left_out(params, "distill") or _distill(ctx)

    return run


def _distill(ctx) -> None:
    ctx.train_only("student", ctx.params.trainable)
    distill_from(ctx, "student", "teacher")
