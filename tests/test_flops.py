"""FLOPs accounting: torch's counter for what it sees, the ops' declared FLOPs for kernels."""

import torch

from mamba4net.core.bench.flops import count_flops
from mamba4net.core.kernels import available_kernels, resolve_kernel
from mamba4net.plugins.hybrid_mamba.mixer import Mamba2Mixer


def test_a_linear_layer_counts_two_flops_per_multiply_add():
    lin = torch.nn.Linear(8, 4)
    got = count_flops(lambda: lin(torch.randn(3, 8)), batch_size=3)
    assert got == {"total": 2 * 3 * 8 * 4, "per_sample": 2 * 8 * 4}


def test_the_ssd_scan_counts_its_declared_flops_whatever_runs_inside():
    b, l, h, p, g, n = 2, 10, 4, 16, 2, 16
    x, dt = torch.randn(b, l, h, p), torch.rand(b, l, h)
    A, B, C = -torch.rand(h), torch.randn(b, l, g, n), torch.randn(b, l, g, n)
    for name in available_kernels("ssd_scan", "cpu"):  # other algorithms (the C scan: no torch ops), the same op
        from mamba4net.core.kernels import set_kernel_overrides

        set_kernel_overrides({"ssd_scan": name})
        try:
            got = count_flops(lambda: resolve_kernel("ssd_scan", "cpu")(x, dt, A, B, C, 4), batch_size=b)
        finally:
            set_kernel_overrides(None)
        assert got["total"] == 4 * b * l * h * p * n, name  # state update + readout, p x n each


def test_a_mixer_is_its_projections_plus_its_scan():
    torch.manual_seed(0)
    d, l, b = 16, 12, 2
    mixer = Mamba2Mixer(d, d_state=8, headdim=8, chunk_size=4)  # d_inner 32, 4 heads, 1 group
    d_in_proj = 2 * 32 + 2 * 8 + 4
    want = 2 * b * l * d * d_in_proj + 2 * b * l * 32 * d + 4 * b * l * 4 * 8 * 8
    with torch.no_grad():
        got = count_flops(lambda: mixer(torch.randn(b, l, d)), batch_size=b)
    assert got["total"] == want


def test_every_scan_and_step_implementation_declares_its_flops(m4n_registry):
    kernels = m4n_registry.kind("kernels")
    for op in ("ssd_scan", "ssd_step"):
        impls = kernels.where(op=op)
        assert impls and all(callable(c.meta.get("flops")) for c in impls), op
