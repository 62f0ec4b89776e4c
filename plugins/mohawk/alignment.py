"""The layer-wise alignment losses of MOHAWK's first two stages.

Stage 1 (matrix orientation), per paired layer (student layer i <- teacher layer t):

    u = the teacher's hidden state entering layer t       (B, L, D_T)   [a learned D_T -> D_S map if narrower]
    M = student layer i's mixing matrix for u               (B, h, L, L)  (its norm, then its mixer)
    A = teacher layer t's attention probabilities          (B, H, L, L)  -> h heads (pooled or repeated)
    loss_i = mean over (B, h) of ||M - A||_F

built a block of rows at a time (recomputed in the backward pass), so that L x L matrices of long
sequences fit memory: the squared norms of the blocks add up to the full one.

Stage 2 (hidden-state alignment), per paired layer: student layer i alone on the teacher's input
of layer t, against the teacher's output of layer t: mean over tokens of the L2 norm of the error.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def head_map(n_teacher: int, n_student: int) -> list[list[int]]:
    """The teacher heads whose attention matrices (averaged) each student head aligns with: the
    same head when the counts agree; contiguous blocks when the student has fewer; each teacher
    head repeated when it has more."""
    if n_student <= n_teacher:
        return [list(range(j * n_teacher // n_student, (j + 1) * n_teacher // n_student)) for j in range(n_student)]
    return [[j * n_teacher // n_student] for j in range(n_student)]


def pooled_heads(A: Tensor, groups: list[list[int]]) -> Tensor:
    """A (B, H, L, L) -> (B, len(groups), L, L), each student head the mean of its teacher heads."""
    if all(g == [j] for j, g in enumerate(groups)) and len(groups) == A.shape[1]:
        return A
    return torch.stack([A[:, g].mean(1) for g in groups], 1)


def frobenius_blockwise(matrix_rows, target: Tensor, block_rows: int) -> Tensor:
    """||M - A||_F per (B, heads) with M built ``block_rows`` rows at a time by ``matrix_rows(rows)``
    (recomputed in the backward pass), A = ``target`` (B, h, L, L)."""
    length = target.shape[-2]
    squared = torch.zeros(target.shape[:2], device=target.device)

    def block(start: int, stop: int) -> Tensor:
        return (matrix_rows(slice(start, stop)) - target[:, :, start:stop]).pow(2).sum((-1, -2))

    for start in range(0, length, block_rows):
        stop = min(length, start + block_rows)
        squared = squared + checkpoint(block, start, stop, use_reentrant=False)
    return squared.clamp_min(1e-12).sqrt()


class MatrixAlignment(nn.Module):
    """Stage 1's loss for a student backbone with ``layer_matrix`` (hybrid_mamba)."""

    def __init__(self, backbone: nn.Module, pairs: list[tuple[int, int]], heads: list[list[int]],
                 d_teacher: int, block_rows: int):
        super().__init__()
        self.backbone, self.pairs, self.heads, self.block_rows = [backbone], pairs, heads, block_rows
        d_student = int(backbone.d_model)
        self.proj = nn.ModuleDict({str(i): nn.Linear(d_teacher, d_student, bias=False)
                                   for i, _ in pairs}) if d_student != d_teacher else None

    def forward(self, taps: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        backbone = self.backbone[0]
        total = 0.0
        for i, t in self.pairs:
            u = taps[f"block_in.{t}"].detach().float()  # (B, L, D_T)
            if self.proj is not None:
                u = self.proj[str(i)](u)  # (B, L, D_S)
            target = pooled_heads(taps[f"attn_probs.{t}"].detach().float(), self.heads)  # (B, h, L, L)
            total = total + frobenius_blockwise(lambda rows, i=i, u=u: backbone.layer_matrix(i, u, rows),
                                                target, self.block_rows).mean()
        return total, {"matrix_frobenius": float(total.detach())}


class HiddenAlignment(nn.Module):
    """Stage 2's loss for a student backbone with ``run_layer`` (hybrid_mamba)."""

    def __init__(self, backbone: nn.Module, pairs: list[tuple[int, int]], d_teacher: int):
        super().__init__()
        self.backbone, self.pairs = [backbone], pairs
        d_student = int(backbone.d_model)
        narrow = d_student != d_teacher
        self.proj_in = nn.ModuleDict({str(i): nn.Linear(d_teacher, d_student, bias=False) for i, _ in pairs}) if narrow else None
        self.proj_out = nn.ModuleDict({str(i): nn.Linear(d_student, d_teacher, bias=False) for i, _ in pairs}) if narrow else None

    def forward(self, taps: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        backbone = self.backbone[0]
        total = 0.0
        for i, t in self.pairs:
            h_in, h_out = taps[f"block_in.{t}"].detach().float(), taps[f"block_out.{t}"].detach().float()
            x = self.proj_in[str(i)](h_in) if self.proj_in is not None else h_in
            y = backbone.run_layer(i, x)  # (B, L, D_S)
            if self.proj_out is not None:
                y = self.proj_out[str(i)](y)
            total = total + (y - h_out).norm(dim=-1).mean()
        return total, {"hidden_l2": float(total.detach())}
