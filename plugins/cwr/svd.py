"""Rank-r truncated SVD of one teacher matrix (paper eq. 11-14).

    W (m, n) = U S V^T                         full SVD, singular values s_1 >= s_2 >= ...
    W_r      = U_r S_r V_r^T                   the first r singular triplets (Eckart-Young-Mirsky:
                                               the best rank-r approximation in Frobenius norm,
                                               ||W - W_r||_F^2 = sum_{i > r} s_i^2)
    W_S      = U_S S_r V_S^T                   U_S = the first d_rows rows of U_r, V_S = the first
                                               d_cols rows of V_r  ==  W_r[:d_rows, :d_cols]

The initializer composes W_r with its index maps (``mapping.py``), which slice the sides that
shrink; :func:`shrink` is the paper's form, kept for the tests that show both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SVDInfo:
    rank: int  # the rank kept (the requested rank clipped to min(m, n))
    full_rank: int  # min(m, n)
    rel_error: float  # ||W - W_r||_F / ||W||_F, measured on the reconstruction (0 when nothing is cut)

    @property
    def truncated(self) -> bool:
        return self.rank < self.full_rank


def truncated_svd(weight: Tensor, rank: int | None) -> tuple[Tensor, SVDInfo]:
    """``weight (m, n)`` -> ``(W_r (m, n) in float64, info)``. ``rank=None`` or ``rank >= min(m, n)``
    returns an exact float64 copy (no decomposition). Computed in float64 on the weight's device;
    the input is never modified."""
    if weight.dim() != 2:
        raise ValueError(f"truncated_svd needs a matrix, got shape {tuple(weight.shape)}")
    w = weight.detach().to(torch.float64, copy=True)  # (m, n)
    full = min(w.shape)
    r = full if rank is None else min(int(rank), full)
    if r < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if r == full:
        return w, SVDInfo(rank=r, full_rank=full, rel_error=0.0)
    U, S, Vh = torch.linalg.svd(w, full_matrices=False)  # U (m, k), S (k,), Vh (k, n), k = full
    w_r = (U[:, :r] * S[:r]) @ Vh[:r]  # (m, r) * (r,) @ (r, n) -> (m, n)
    norm = torch.linalg.matrix_norm(w).item()
    err = torch.linalg.matrix_norm(w - w_r).item()
    return w_r, SVDInfo(rank=r, full_rank=full, rel_error=err / norm if norm > 0 else 0.0)


def shrink(weight: Tensor, rank: int | None, d_rows: int, d_cols: int) -> Tensor:
    """The paper's eq. 14 literally: ``U_S S_r V_S^T`` with U_S / V_S the first ``d_rows`` /
    ``d_cols`` rows of U_r / V_r. Equal to ``truncated_svd(weight, rank)[0][:d_rows, :d_cols]``."""
    w = weight.detach().to(torch.float64, copy=True)
    full = min(w.shape)
    r = full if rank is None else min(int(rank), full)
    U, S, Vh = torch.linalg.svd(w, full_matrices=False)
    U_S = U[:d_rows, :r]  # (d_rows, r)
    V_S = Vh[:r, :d_cols].T  # (d_cols, r)
    return (U_S * S[:r]) @ V_S.T  # (d_rows, d_cols)


def discarded_energy(weight: Tensor, rank: int) -> float:
    """``sqrt(sum_{i > rank} s_i^2) / sqrt(sum_i s_i^2)``: the Eckart-Young relative error."""
    s = torch.linalg.svdvals(weight.detach().to(torch.float64))
    total = s.square().sum().item()
    return math.sqrt(s[rank:].square().sum().item() / total) if total > 0 else 0.0
