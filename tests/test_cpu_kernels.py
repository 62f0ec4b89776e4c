"""The cpu_kernels plugin: the C SSD scan against the sequential reference (shapes, strides,
initial and final states, threads), the inputs it hands to the chunked PyTorch scan instead, and
the build (cached once per machine; no compiler or a failing one leaves the PyTorch kernels)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

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
    assert runs_in_c(x, dt, A, B, C, D, s0)
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
@pytest.mark.parametrize("layout", ["batch slice", "time-major dt", "transposed groups"])
def test_any_strides_give_the_contiguous_result(layout):
    """Views whose batch, time or group strides are not the contiguous ones: the same bits as
    contiguous copies, and the reference's values."""
    x, dt, A, B, C, D, s0 = inputs(4, 13, 4, 32, 2, 6, seed=11)
    if layout == "batch slice":  # every other sequence: batch strides twice the contiguous ones
        x, dt, B, C, s0 = x[::2], dt[::2], B[::2], C[::2], s0[::2]
    if layout == "time-major dt":  # dt stored (l, b, h): its batch stride is smaller than its time stride
        dt = dt.transpose(0, 1).contiguous().transpose(0, 1)
    if layout == "transposed groups":  # B, C stored (b, l, n, g): groups not adjacent -> copied
        B, C = (t.transpose(2, 3).contiguous().transpose(2, 3) for t in (B, C))
    got = ssd_scan_c(x, dt, A, B, C, 4, D=D, initial_states=s0, return_final_states=True)
    flat = [t.contiguous() for t in (x, dt, A, B, C)]
    want = ssd_scan_c(*flat, 4, D=D, initial_states=s0.contiguous(), return_final_states=True)
    assert all(torch.equal(a, w) for a, w in zip(got, want))
    torch.testing.assert_close(got[0], reference(x, dt, A, B, C, D, s0)[0], atol=2e-5, rtol=1e-4)


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
    threads = torch.get_num_threads()
    for shape in [(3, 17, 5, 32, 1, 8), (1, 9, 1, 16, 1, 4)]:  # 15 rows: uneven ranges; 1 row: 1 thread
        x, dt, A, B, C, D, s0 = inputs(*shape, seed=9)
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
    assert not runs_in_c(x, dt, A, B, C, D)
    y = ssd_scan_c(x, dt, A, B, C, 4, D=D)
    assert y.grad_fn is not None
    torch.testing.assert_close(y, ssd_scan_chunked(x, dt, A, B, C, 4, D=D), atol=0, rtol=0)
    with torch.no_grad():  # the same call with nothing recording: the C kernel
        assert runs_in_c(x, dt, A, B, C, D)
    x.requires_grad_(False)
    s0.requires_grad_(True)  # a state that training reaches through
    assert not runs_in_c(x, dt, A, B, C, D, s0)
    assert ssd_scan_c(x, dt, A, B, C, 4, D=D, initial_states=s0).grad_fn is not None


@pytest.mark.parametrize("case", ["float64", "p=8", "D per channel"])
def test_other_inputs_go_to_the_chunked_scan(case):
    x, dt, A, B, C, D, _ = inputs(1, 9, 2, 16, 1, 4, seed=2, dtype=torch.float64 if case == "float64" else torch.float32)
    if case == "p=8":
        x = x[..., :8]
    if case == "D per channel":
        D = torch.randn(2, 16)
    assert not runs_in_c(x, dt, A, B, C, D)
    torch.testing.assert_close(ssd_scan_c(x, dt, A, B, C, 4, D=D), ssd_scan_chunked(x, dt, A, B, C, 4, D=D),
                               atol=0, rtol=0)


@pytest.mark.parametrize("case", ["A broadcast", "D broadcast", "more groups than heads", "heads not per group",
                                  "short initial state", "dt on the meta device"])
def test_shapes_the_kernel_does_not_check_go_to_the_chunked_scan(case):
    """Inputs the C kernel would index out of bounds: the chunked scan takes them, and gives its
    result or its error (never a crash)."""
    x, dt, A, B, C, D, s0 = inputs(2, 7, 4, 16, 2, 4, seed=4)
    if case == "A broadcast":
        A = A[:1]
    if case == "D broadcast":
        D = D[:1]
    if case == "more groups than heads":
        B, C = torch.randn(2, 7, 8, 4), torch.randn(2, 7, 8, 4)
    if case == "heads not per group":
        B, C = torch.randn(2, 7, 3, 4), torch.randn(2, 7, 3, 4)
    if case == "short initial state":
        s0 = s0[:1]
    if case == "dt on the meta device":
        dt = dt.to("meta")
    assert not runs_in_c(x, dt, A, B, C, D, s0)
    try:
        want = ssd_scan_chunked(x, dt, A, B, C, 4, D=D, initial_states=s0)
    except Exception as exc:  # noqa: BLE001 -- whatever the chunked scan raises, the C scan raises too
        with pytest.raises(type(exc)):
            ssd_scan_c(x, dt, A, B, C, 4, D=D, initial_states=s0)
    else:
        got = ssd_scan_c(x, dt, A, B, C, 4, D=D, initial_states=s0)
        assert got.shape == want.shape and (got.device.type == "meta" or torch.equal(got, want))


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


@needs_c
def test_a_cached_library_that_does_not_load_is_rebuilt(fresh_build):
    """In a new process (this one keeps the library it opened under that name)."""
    assert build.load("ssd_scan") is not None
    [built] = (fresh_build / "kernels").glob("ssd_scan-*.so")
    broken = built.with_suffix(".broken")
    broken.write_bytes(b"truncated")
    os.replace(broken, built)  # a new file: writing into the one this process has mapped would crash it
    code = "from mamba4net.plugins.cpu_kernels import build; assert build.load('ssd_scan') is not None"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "MAMBA4NET_CACHE": str(fresh_build)})
    assert built.read_bytes() != b"truncated"  # built again


@needs_c
def test_cc_may_carry_arguments(fresh_build, monkeypatch):
    cc = build.compiler()[0]
    monkeypatch.setenv("CC", f"env {cc}")
    assert build.compiler() == [shutil.which("env"), cc]
    assert build.load("ssd_scan") is not None


def test_an_unwritable_cache_is_one_warning_and_the_pytorch_scan(fresh_build, monkeypatch, caplog, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MAMBA4NET_CACHE", str(blocker))  # a file where the cache folder should be
    with caplog.at_level(logging.INFO, logger="mamba4net"):
        assert build.load("ssd_scan") is None
    assert any(r.levelno == logging.WARNING and "ssd_scan" in r.getMessage() for r in caplog.records)
    assert not ssd_scan_c_available("cpu")


def test_no_compiler_leaves_the_pytorch_scan(fresh_build, monkeypatch, caplog):
    monkeypatch.setattr(build, "compiler", lambda: None)
    with caplog.at_level(logging.INFO, logger="mamba4net"):
        assert build.load("ssd_scan") is None
    assert any("no C compiler" in r.getMessage() for r in caplog.records)
    assert not ssd_scan_c_available("cpu")
    assert available_kernels("ssd_scan", "cpu")[0] == "ssd_scan_torch_chunked"
    x, dt, A, B, C, D, _ = inputs(1, 5, 2, 16, 1, 4)
    assert not runs_in_c(x, dt, A, B, C, D)  # and a direct call still scans, by the chunked path
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
