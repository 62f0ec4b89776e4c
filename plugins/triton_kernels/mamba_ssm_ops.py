"""Adapters from mamba-ssm's (and causal-conv1d's) GPU kernels to this project's op signatures.

Imported only when the kernel registry picks one of them, which it does only on CUDA devices where
``importlib.util.find_spec("mamba_ssm")`` finds the package (see :mod:`.registry`). Nothing here is
imported at module load of any other file; mamba-ssm's absence is the normal case.

Untested in CI (no GPU, and ``import mamba_ssm`` fails on CPU): the adapters only rename arguments
and reshape. ``benchmarks/kernels.py --device cuda`` compares their outputs with the references
(its "max abs diff" column). On an H200 (benchmarks/results/gpu_h200.md) the step matched within
4e-6; the scan's fp32 outputs differed by up to 7e-2, against 6e-5 for this project's Triton scan
(TF32 products inside mamba-ssm's kernels are the likely cause; not verified).
"""

from __future__ import annotations

from torch import Tensor


def ssd_scan_mamba_ssm(x, dt, A, B, C, chunk_size, D=None, initial_states=None, return_final_states=False):
    """``ssd_scan`` on ``mamba_chunk_scan_combined`` (dt already softplus-ed: dt_softplus=False)."""
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined(
        x, dt, A, B, C, chunk_size, D=D, initial_states=initial_states, dt_softplus=False,
        return_final_states=return_final_states,
    )


def ssd_step_mamba_ssm(state: Tensor, x, dt, A, B, C, D=None):
    """``ssd_step`` on ``selective_state_update`` (which updates its state in place, so it gets a
    copy: the op is functional). Multi-head layout: dt (b,h) -> (b,h,p), A (h,) -> (h,p,n) as
    stride-0 views, D (h,) -> (h,p). A zero ``dt_bias`` is passed (dt is already final): mamba-ssm
    2.3.2 reads its strides even when it is None (seen on an H200)."""
    from mamba_ssm.ops.triton.selective_state_update import selective_state_update

    b, h, p = x.shape
    n = state.shape[-1]
    new = state.clone()
    dt_hp = dt[:, :, None].expand(b, h, p)
    A_hpn = A[:, None, None].expand(h, p, n).to(new.dtype)
    D_hp = None if D is None else (D[:, None] if D.dim() == 1 else D).expand(h, p)
    no_bias = dt.new_zeros(h)[:, None].expand(h, p)
    y = selective_state_update(new, x, dt_hp, A_hpn, B, C, D=D_hp, dt_bias=no_bias, dt_softplus=False)
    return y, new


def causal_conv1d_cuda(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``causal_conv1d`` on the causal-conv1d package: x (b, l, c) -> (b, l, c). The input is copied
    to the (b, c, l) layout the kernel is written for (a slice of in_proj's output is not)."""
    from causal_conv1d import causal_conv1d_fn

    return causal_conv1d_fn(x.transpose(1, 2).contiguous(), weight, bias).transpose(1, 2)
