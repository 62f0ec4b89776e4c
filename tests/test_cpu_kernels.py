"""The cpu_kernels plugin: the C SSD scan against the sequential reference (shapes, strides,
initial and final states, threads), the inputs it hands to the chunked PyTorch scan instead, and
the build (cached once per machine; no compiler or a failing one leaves the PyTorch kernels)."""

from __future__ import annotations

import logging

import pytest
import torch

from mamba4net.core.kernels import available_kernels, set_kernel_overrides
from mamba4net.plugins.cpu_kernels import build
from mamba4net.plugins.cpu_kernels.plugin import ssd_scan_c_available
from mamba4net.plugins.cpu_kernels.ssd_scan import library, runs_in_c, ssd_scan_c
from mamba4net.plugins.hybrid_mamba.ssd import ssd_scan_chunked, ssd_scan_ref

needs_c = pytest.mark.skipif(library() is None, reason="no C compiler on this machine: the C scan is not built")


def inputs(b, l, h, p, g, n, seed=0, dtype=torch.float32):
    """Scan inputs with decays from mild to strong (A down to -16, as mamba_ssm initializes it)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, l, h, p, generator=gen, dtype=dtype)
    dt = torch.nn.functional.softplus(torch.randn(b, l, h, generator=gen, dtype=dtype) - 2)
    A = -torch.rand(h, generator=gen, dtype=dtype) * 15 - 1
    B = torch.randn(b, l, g, n, generator=gen, dtype=dtype)
    C = torch.randn(b, l, g, n, generator=gen, dtype=dtype)
    D = torch.randn(h, generator=gen, dtype=dtype)
    s0 = torch.randn(b, h, p, n, generator=gen, dtype=dtype)
    return x, dt, A, B, C, D, s0


def reference(x, dt, A, B, C, D, s0):
    """The sequential reference in float64, returned in float32 like the scans."""
    y, s = ssd_scan_ref(*(t.double() for t in (x, dt, A, B, C)), 4, D=None if D is None else D.double(),
                        initial_states=None if s0 is None else s0.double(), return_final_states=True)
    return y.float(), s.float()


# --- the C kernel against the reference --------------------------------------------------------------


@needs_c
@pytest.mark.parametrize("b, l, h, p, g, n", [
    (1, 1, 1, 16, 1, 1),      # one step, one lane block, one state column
    (2, 37, 4, 32, 2, 5),     # two groups, odd n (the single-accumulator tail), odd length
    (1, 64, 8, 32, 1, 32),    # the VP student's heads
    (2, 19, 3, 48, 1, 8),     # three lane blocks: one pair and a single
    (1, 23, 2, 64, 2, 16),    # two pairs
])
@pytest.mark.parametrize("with_d, with_s0", [(True, True), (False, False)])
def test_c_scan_matches_the_reference(b, l, h, p, g, n, with_d, with_s0):
    x, dt, A, B, C, D, s0 = inputs(b, l, h, p, g, n, seed=l * p + n)
    D, s0 = (D if with_d else None), (s0 if with_s0 else None)
    assert runs_in_c(x, D)
    y, s = ssd_scan_c(x, dt, A, B, C, 4, D=D, initial_states=s0, return_final_states=True)
    y_ref, s_ref = reference(x, dt, A, B, C, D, s0)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(s, s_ref, atol=2e-5, rtol=1e-4)
    assert y.dtype == s.dtype == torch.float32
    torch.testing.assert_close(ssd_scan_c(x, dt, A, B, C, 4, D=D, initial_states=s0), y, atol=0, rtol=0)
    if s0 is not None:
        assert torch.equal(s0, inputs(b, l, h, p, g, n, seed=l * p + n)[-1])  # the caller's state untouched


@needs_c
def test_an_empty_sequence_returns_its_initial_state():
    x, dt, A, B, C, D, s0 = inputs(2, 0, 2, 16, 1, 4)
    y, s = ssd_scan_c(x, dt, A, B, C, 4, D=D, initial_states=s0, return_final_states=True)
    assert y.shape == (2, 0, 2, 16) and torch.equal(s, s0)


@needs_c
def test_a_stream_continues_from_its_final_state():
    """Two halves, the second started from the first's final state, equal the whole."""
    x, dt, A, B, C, D, _ = inputs(2, 30, 4, 32, 2, 8, seed=3)
    y, s = ssd_scan_c(x, dt, A, B, C, 4, D=D, return_final_states=True)
    y1, s1 = ssd_scan_c(x[:, :13], dt[:, :13], A, B[:, :13], C[:, :13], 4, D=D, return_final_states=True)
    y2, s2 = ssd_scan_c(x[:, 13:], dt[:, 13:], A, B[:, 13:], C[:, 13:], 4, D=D, initial_states=s1,
                        return_final_states=True)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(s2, s, atol=1e-6, rtol=1e-5)


@needs_c
def test_strided_views_as_the_mixer_passes_them():
    """x, B and C as views into one (b, l, conv_dim) tensor, as the mixer splits xBC: the same
    result as contiguous copies, to the bit."""
    b, l, h, p, n = 2, 21, 4, 16, 8
    gen = torch.Generator().manual_seed(5)
    xbc = torch.randn(b, l, h * p + 2 * n, generator=gen)
    x, B, C = xbc.split([h * p, n, n], dim=-1)
    x, B, C = x.reshape(b, l, h, p), B.reshape(b, l, 1, n), C.reshape(b, l, 1, n)
    assert not x.is_contiguous()
    dt = torch.rand(b, l, h, generator=gen) * 0.2
    A = -torch.rand(h, generator=gen) * 4
    got = ssd_scan_c(x, dt, A, B, C, 4)
    assert torch.equal(got, ssd_scan_c(x.contiguous(), dt, A, B.contiguous(), C.contiguous(), 4))
    torch.testing.assert_close(got, reference(x, dt, A, B, C, None, None)[0], atol=2e-5, rtol=1e-4)


@needs_c
def test_threads_split_the_rows_without_changing_a_bit():
    x, dt, A, B, C, D, s0 = inputs(3, 17, 5, 32, 1, 8, seed=9)  # 15 rows: uneven ranges
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ssd_scan_c(x, dt, A, B, C, 4, D=D, initial_states=s0, return_final_states=True)
        torch.set_num_threads(4)
        four = ssd_scan_c(x, dt, A, B, C, 4, D=D, initial_states=s0, return_final_states=True)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, four))


# --- what goes to the chunked scan instead ------------------------------------------------------------


@needs_c
def test_training_goes_to_the_chunked_scan_with_its_gradients():
    x, dt, A, B, C, D, s0 = inputs(2, 12, 2, 16, 1, 4, seed=1)
    x.requires_grad_(True)
    assert not runs_in_c(x, D, dt, A, B, C)
    y = ssd_scan_c(x, dt, A, B, C, 4, D=D)
    assert y.grad_fn is not None
    torch.testing.assert_close(y, ssd_scan_chunked(x, dt, A, B, C, 4, D=D), atol=0, rtol=0)
    with torch.no_grad():  # the same call with nothing recording: the C kernel
        assert runs_in_c(x, D, dt, A, B, C)


@pytest.mark.parametrize("case", ["float64", "p=8", "D per channel"])
def test_other_inputs_go_to_the_chunked_scan(case):
    x, dt, A, B, C, D, _ = inputs(1, 9, 2, 16, 1, 4, seed=2, dtype=torch.float64 if case == "float64" else torch.float32)
    if case == "p=8":
        x = x[..., :8]
    if case == "D per channel":
        D = torch.randn(2, 16)
    assert not runs_in_c(x, D)
    torch.testing.assert_close(ssd_scan_c(x, dt, A, B, C, 4, D=D), ssd_scan_chunked(x, dt, A, B, C, 4, D=D),
                               atol=0, rtol=0)


# --- the build -----------------------------------------------------------------------------------------


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """An empty kernel cache and no library loaded yet in this process; restored afterwards."""
    monkeypatch.setenv("MAMBA4NET_CACHE", str(tmp_path))
    build.load.cache_clear()
    set_kernel_overrides(None)  # also forgets the registry's cached choices
    yield tmp_path
    build.load.cache_clear()
    set_kernel_overrides(None)


@needs_c
def test_the_library_is_built_once_per_machine_and_source(fresh_build, monkeypatch):
    assert build.load("ssd_scan") is not None
    [built] = (fresh_build / "kernels").glob("ssd_scan-*.so")
    build.load.cache_clear()
    monkeypatch.setattr(build, "_compile", lambda *a: pytest.fail("compiled again"))
    assert build.load("ssd_scan") is not None  # a new process: the cached file, no compiler run
    assert list((fresh_build / "kernels").iterdir()) == [built]


def test_no_compiler_leaves_the_pytorch_scan(fresh_build, monkeypatch):
    monkeypatch.setattr(build, "compiler", lambda: None)
    assert build.load("ssd_scan") is None
    assert not ssd_scan_c_available("cpu")
    assert available_kernels("ssd_scan", "cpu")[0] == "ssd_scan_torch_chunked"
    x, dt, A, B, C, D, _ = inputs(1, 5, 2, 16, 1, 4)
    assert not runs_in_c(x, D)  # and a direct call still scans, by the chunked path
    torch.testing.assert_close(ssd_scan_c(x, dt, A, B, C, 4, D=D), ssd_scan_chunked(x, dt, A, B, C, 4, D=D))


def test_a_failing_compiler_is_one_warning_and_the_pytorch_scan(fresh_build, monkeypatch, caplog, tmp_path):
    fake = tmp_path / "broken-cc"
    fake.write_text("#!/bin/sh\necho 'broken-cc: cannot compile' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    with caplog.at_level(logging.INFO, logger="mamba4net"):
        assert build.load("ssd_scan") is None
        assert build.load("ssd_scan") is None  # cached: no second attempt, no second warning
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "could not build ssd_scan" in warning and "broken-cc: cannot compile" in warning
    assert not list((fresh_build / "kernels").glob("*.so"))  # nothing half-written left behind
    assert not ssd_scan_c_available("cpu")


def test_only_the_cpu_is_served():
    assert not ssd_scan_c_available("cuda")
