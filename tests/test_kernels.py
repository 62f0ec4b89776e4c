"""The kernel registry (core/kernels.py) and the built-in implementations it chooses between:
priorities and availability by device, overrides, the choice logged once, mamba-ssm never imported,
the ``kd_loss`` and ``causal_conv1d`` ops, and the student giving the same outputs with every
available ``ssd_scan`` implementation. The Triton kernels themselves: tests/test_triton_kernels.py.
"""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from mamba4net.core.errors import ConfigError
from mamba4net.core.kernels import available_kernels, resolve_kernel, set_kernel_overrides
from mamba4net.plugins.hybrid_mamba.config import HybridMambaParams
from mamba4net.plugins.hybrid_mamba.mixer import Mamba2Mixer, causal_depthwise_conv
from mamba4net.plugins.hybrid_mamba.model import HybridMambaBackbone
from mamba4net.plugins.hybrid_mamba.ssd import ssd_scan_chunked, ssd_scan_ref, ssd_step
from mamba4net.plugins.cpu_kernels.plugin import ssd_scan_c_available
from mamba4net.plugins.cpu_kernels.ssd_scan import ssd_scan_c
from mamba4net.plugins.losses.terms import kd_loss, kd_loss_ref
from mamba4net.plugins.triton_kernels import registry as tk_registry

OPS = ["ssd_scan", "ssd_step", "causal_conv1d", "kd_loss"]


@pytest.fixture(autouse=True)
def _fresh_choices(monkeypatch):
    """Each test starts without overrides, cached choices or the Triton interpreter."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    set_kernel_overrides(None)
    yield
    set_kernel_overrides(None)


# --- selection -----------------------------------------------------------------------------------


# the C scan of the cpu_kernels plugin comes first where this machine can build it (tests/test_cpu_kernels.py)
C_SCAN = ["ssd_scan_c"] if ssd_scan_c_available("cpu") else []


def test_cpu_choices_and_order():
    assert available_kernels("ssd_scan", "cpu") == C_SCAN + ["ssd_scan_torch_chunked", "ssd_scan_torch_ref"]
    assert available_kernels("ssd_step", "cpu") == ["ssd_step_torch"]
    assert available_kernels("causal_conv1d", "cpu") == ["causal_conv1d_torch"]
    assert available_kernels("kd_loss", "cpu") == ["kd_loss_torch"]
    assert resolve_kernel("ssd_scan", "cpu") is (ssd_scan_c if C_SCAN else ssd_scan_chunked)
    assert resolve_kernel("ssd_step", "cpu") is ssd_step
    assert resolve_kernel("causal_conv1d", "cpu") is causal_depthwise_conv
    assert resolve_kernel("kd_loss", "cpu") is kd_loss_ref


@pytest.mark.parametrize("have_mamba_ssm", [False, True])
def test_cuda_priorities_mamba_ssm_then_triton_then_torch(monkeypatch, have_mamba_ssm):
    """Availability is decided by find_spec alone: nothing is imported to decide."""
    installed = {"triton": True, "mamba_ssm": have_mamba_ssm, "causal_conv1d": have_mamba_ssm}
    monkeypatch.setattr(tk_registry, "_installed", lambda name: installed[name])
    first = ["ssd_scan_mamba_ssm"] if have_mamba_ssm else []
    assert available_kernels("ssd_scan", "cuda") == first + [
        "ssd_scan_triton", "ssd_scan_torch_chunked", "ssd_scan_torch_ref"
    ]
    assert available_kernels("ssd_step", "cuda")[0] == (
        "ssd_step_mamba_ssm" if have_mamba_ssm else "ssd_step_triton"
    )
    assert available_kernels("causal_conv1d", "cuda")[0] == (
        "causal_conv1d_cuda" if have_mamba_ssm else "causal_conv1d_torch"
    )
    assert available_kernels("kd_loss", "cuda") == ["kd_loss_triton", "kd_loss_torch"]
    assert "mamba_ssm" not in sys.modules and "causal_conv1d" not in sys.modules


def test_availability_predicates(monkeypatch):
    assert not tk_registry.mamba_ssm_available("cpu")
    assert not tk_registry.triton_available("cpu")  # no interpreter: no Triton on a CPU
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert tk_registry.triton_available("cpu")
    assert not tk_registry.triton_available("mps")
    monkeypatch.setattr(tk_registry, "_installed", lambda name: False)
    assert not tk_registry.triton_available("cuda")
    assert not tk_registry.mamba_ssm_available("cuda")


def test_real_find_spec_does_not_import_mamba_ssm():
    tk_registry.mamba_ssm_available("cuda")
    tk_registry.causal_conv1d_available("cuda")
    assert "mamba_ssm" not in sys.modules


def test_override_picks_a_lower_priority_kernel():
    set_kernel_overrides({"ssd_scan": "ssd_scan_torch_ref"})
    assert resolve_kernel("ssd_scan", "cpu") is ssd_scan_ref
    assert resolve_kernel("ssd_step", "cpu") is ssd_step  # other ops keep their default


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ssd_scan": "ssd_scan_turbo"}, "unknown kernel 'ssd_scan_turbo'"),
        ({"ssd_scan": "kd_loss_torch"}, "unknown kernel 'kd_loss_torch'"),  # wrong op
        ({"ssd_scan": "ssd_scan_triton"}, "'ssd_scan_triton' is not available on cpu"),
        ({"ssd_step": "ssd_step_mamba_ssm"}, "'ssd_step_mamba_ssm' is not available on cpu"),
    ],
)
def test_bad_overrides_are_one_line_config_errors(overrides, message):
    set_kernel_overrides(overrides)
    op = next(iter(overrides))
    with pytest.raises(ConfigError, match=message) as info:
        resolve_kernel(op, "cpu")
    assert "\n" not in str(info.value) and f"runtime.kernels.{op}" in str(info.value)


def test_unknown_op_is_a_config_error():
    with pytest.raises(ConfigError, match="no kernel implements op 'flash_fft'"):
        resolve_kernel("flash_fft", "cpu")


def test_choice_is_logged_once(caplog):
    with caplog.at_level(logging.INFO, logger="mamba4net"):
        for _ in range(3):
            resolve_kernel("ssd_scan", "cpu")
    lines = [r.getMessage() for r in caplog.records if "kernel ssd_scan on cpu" in r.getMessage()]
    chosen = "ssd_scan_c (from plugin cpu_kernels)" if C_SCAN else "ssd_scan_torch_chunked (from plugin hybrid_mamba)"
    assert lines == [f"kernel ssd_scan on cpu: {chosen}"]


# --- ops -----------------------------------------------------------------------------------------


def test_kd_loss_goes_through_the_registry_and_matches_a_direct_computation():
    gen = torch.Generator().manual_seed(0)
    s = torch.randn(3, 4, 11, generator=gen, requires_grad=True)
    t = torch.randn(3, 4, 11, generator=gen)
    T = 2.5
    p_t = torch.softmax(t / T, -1)
    expected = (p_t * (torch.log(p_t) - torch.log_softmax(s / T, -1))).sum(-1).mean() * T * T
    torch.testing.assert_close(kd_loss(s, t, T), expected)
    (g,) = torch.autograd.grad(kd_loss(s, t, T), s)
    # d/ds of T^2 mean KL = T (softmax(s/T) - softmax(t/T)) / rows
    torch.testing.assert_close(g, T * (torch.softmax(s / T, -1) - p_t) / 12, atol=1e-6, rtol=1e-5)
    assert kd_loss(t, t, T).abs() < 1e-6
    with pytest.raises(ValueError, match=r"student logits \(3, 4, 11\) and teacher logits \(3, 4, 10\)"):
        kd_loss(s, t[..., :10], T)


def test_mixer_takes_its_conv_from_the_registry():
    calls = []

    def spy_conv(x, w, b):
        calls.append(tuple(x.shape))
        return causal_depthwise_conv(x, w, b)

    torch.manual_seed(0)
    m = Mamba2Mixer(16, d_state=4, headdim=8, chunk_size=4, kernels={"causal_conv1d": spy_conv})
    x = torch.randn(2, 7, 16)
    y = m(x)
    assert calls == [(2, 7, m.conv_dim)]
    m.kernels = None  # back to the registry: same result
    torch.testing.assert_close(m(x), y)


# --- the student with each implementation ----------------------------------------------------------

TINY = dict(
    d_model=32, n_layers=3, d_state=8, headdim=16, ngroups=2, chunk_size=4,
    attn_heads=4, attn_kv_heads=2, d_intermediate=32,
)


def student_outputs_with(overrides: dict[str, str], device: str = "cpu") -> tuple[torch.Tensor, ...]:
    """A seeded tiny hybrid student run with ``runtime.kernels`` = ``overrides`` on ``device``: the
    parallel output, the step-by-step output and the gradient of every parameter (flattened)."""
    set_kernel_overrides(overrides)
    try:
        torch.manual_seed(0)
        model = HybridMambaBackbone(HybridMambaParams(**TINY)).to(device)
        x = torch.randn(2, 11, 32, generator=torch.Generator().manual_seed(1)).to(device)  # 11: odd length
        y = model(x)
        grads = torch.autograd.grad(y.square().mean(), list(model.parameters()))
        with torch.no_grad():
            state, ys = model.init_state(2), []
            for t in range(x.shape[1]):
                y_t, state = model.step(x[:, t], state)
                ys.append(y_t)
        return y.detach(), torch.stack(ys, 1), torch.cat([g.flatten() for g in grads])
    finally:
        set_kernel_overrides(None)


# the Triton scan (available on CPU only under TRITON_INTERPRET=1) is run by test_triton_kernels.py
CPU_SCANS = [name for name in available_kernels("ssd_scan", "cpu") if "triton" not in name]


@pytest.mark.parametrize("impl", CPU_SCANS)
def test_student_gives_the_same_outputs_with_every_cpu_scan(impl):
    ref = student_outputs_with({"ssd_scan": "ssd_scan_torch_ref"})
    got = student_outputs_with({"ssd_scan": impl})
    for name, a, b in zip(["forward", "step", "grad"], got, ref):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4, msg=lambda m: f"{impl} {name}: {m}")


# --- the CPU chunked scan, cut into slabs ----------------------------------------------------------


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-10), (torch.float32, 2e-5)])
@pytest.mark.parametrize("slab_steps", [4, 10, 12, 64])  # one chunk per slab, rounded down, several, one
def test_chunked_scan_in_slabs_matches_ref(dtype, tol, slab_steps):
    gen = torch.Generator().manual_seed(slab_steps)
    b, l, h, p, g, n, q = 2, 29, 4, 3, 2, 5, 4  # 29: not a multiple of the chunk or of any slab
    x = torch.randn(b, l, h, p, generator=gen, dtype=dtype, requires_grad=True)
    dt = torch.nn.functional.softplus(torch.randn(b, l, h, generator=gen, dtype=dtype) - 1)
    A = -torch.rand(h, generator=gen, dtype=dtype) * 3 - 0.5
    B = torch.randn(b, l, g, n, generator=gen, dtype=dtype, requires_grad=True)
    C = torch.randn(b, l, g, n, generator=gen, dtype=dtype)
    D = torch.randn(h, generator=gen, dtype=dtype)
    s0 = torch.randn(b, h, p, n, generator=gen, dtype=dtype, requires_grad=True)
    got = ssd_scan_chunked(x, dt, A, B, C, q, D=D, initial_states=s0, return_final_states=True,
                           slab_steps=slab_steps)
    want = ssd_scan_ref(x, dt, A, B, C, q, D=D, initial_states=s0, return_final_states=True)
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, atol=tol, rtol=tol)
    grads = [torch.autograd.grad(o[0].square().sum() + o[1].sum(), (x, B, s0)) for o in (got, want)]
    for a, r in zip(*grads):
        torch.testing.assert_close(a, r, atol=tol * 10, rtol=tol * 10)


def test_kernel_benchmark_script_smoke(tmp_path):
    """benchmarks/kernels.py end to end at toy sizes: every CPU implementation timed and checked."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "kernels.py"
    spec = importlib.util.spec_from_file_location("kernels_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--lengths", "40", "--chunks", "16", "--train-max-len", "40", "--kd-shapes", "4x6",
                "--step-batches", "1", "--repeats", "1", "--ref-repeats", "1", "--threads", "1",
                "--out", str(tmp_path)])
    rows = json.loads((tmp_path / "kernels_cpu.json").read_text())["results"]
    scan = {r["impl"] for r in rows if r["op"] == "ssd_scan"}
    assert scan == {*C_SCAN, "ssd_scan_torch_chunked", "ssd_scan_torch_ref", "transformers_mamba2_torch"}
    assert {r["op"] for r in rows} == {"ssd_scan", "ssd_step", "causal_conv1d", "kd_loss"}
    assert all(r["max_abs_diff_vs_ref"] < 1e-3 and r["ms"] > 0 for r in rows)
    assert all(r["gbps"] is None for r in rows)  # bandwidth: GPUs only
    assert "| ssd_scan | L=40 chunk=16 |" in (tmp_path / "kernels_cpu.md").read_text()
