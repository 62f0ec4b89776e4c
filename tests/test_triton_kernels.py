"""The Triton kernels of plugins/triton_kernels against their PyTorch ``*_ref`` twins: forward and
backward, odd lengths, fp32 and bf16, explicit tolerances. On a machine with a CUDA device the kernels
are compiled and the cases run on it; elsewhere Triton's interpreter runs them on the CPU
(``TRITON_INTERPRET=1``), with tiny shapes: the interpreter executes every program in numpy.

Triton decides between compiling and interpreting when its modules (and ours) are first imported,
and other test modules import it earlier (through transformers). So the cases below run in a child
pytest process started with ``TRITON_INTERPRET=1`` by ``test_triton_kernels_under_the_interpreter``;
the rest of the suite keeps the PyTorch kernels. With the variable already set (the child, or a
run of the whole suite under the interpreter), or with a CUDA device, they run in-process.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from mamba4net.plugins.hybrid_mamba.ssd import ssd_scan_ref, ssd_step
from mamba4net.plugins.losses.terms import kd_loss_ref
from mamba4net.plugins.triton_kernels.registry import triton_available

INTERPRETING = os.environ.get("TRITON_INTERPRET") == "1"
COMPILED = not INTERPRETING and torch.cuda.is_available() and triton_available("cuda")
DEVICE = "cuda" if COMPILED else "cpu"
needs_triton = pytest.mark.skipif(
    not (INTERPRETING or COMPILED),
    reason="no CUDA device: run under TRITON_INTERPRET=1 by test_triton_kernels_under_the_interpreter",
)

KERNEL_MODULES = ["ssd_scan", "ssd_step", "kd_loss"]

# (atol, rtol) on outputs and gradients. The kernels compute in fp32 like the references; fp32
# differences are summation order only. bf16: inputs are rounded identically for both sides, the
# outputs are rounded to bf16 (8 bits of mantissa, ~0.4% relative).
TOL = {torch.float32: (1e-4, 1e-4), torch.bfloat16: (2e-2, 2e-2)}


@pytest.mark.skipif(INTERPRETING or COMPILED, reason="the cases run in-process (interpreter or CUDA device)")
def test_triton_kernels_under_the_interpreter():
    """Every case of this module, in a child process started with TRITON_INTERPRET=1."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).resolve())],
        cwd=root, env=env, capture_output=True, text=True, timeout=900,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"Triton kernel cases failed under the interpreter:\n{out[-6000:]}"
    assert " passed" in out and "skipped" in out  # the cases ran; only this runner was skipped


@pytest.fixture(scope="module")
def tk():
    """The kernel modules (imported under the interpreter); kernel choices are reset after."""
    from mamba4net.core.kernels import set_kernel_overrides

    package = "mamba4net.plugins.triton_kernels"
    yield {name: importlib.import_module(f"{package}.{name}") for name in KERNEL_MODULES}
    set_kernel_overrides(None)


def _close(actual, expected, dtype, what):
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(
        actual.float(), expected.float(), atol=atol, rtol=rtol, msg=lambda m: f"{what}: {m}"
    )


def _ssd_inputs(b, l, h, p, g, n, dtype, seed, d_shape="h", with_init=True):
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen)

    x = rnd(b, l, h, p).to(dtype)
    dt = F.softplus(rnd(b, l, h) - 1.0)  # positive, ~0.3; float32 like the mixer's
    A = -torch.empty(h).uniform_(0.5, 4.0, generator=gen)
    B = (rnd(b, l, g, n) / n**0.5).to(dtype)
    C = (rnd(b, l, g, n) / n**0.5).to(dtype)
    D = rnd(h) if d_shape == "h" else rnd(h, p)
    s0 = rnd(b, h, p, n) if with_init else None
    return [None if t is None else t.to(DEVICE) for t in (x, dt, A, B, C, D, s0)]


# (b, l, h, p, g, n, chunk): l not a multiple of the chunk; several chunks; l < chunk; ngroups > 1;
# p and n below the 16-wide tiles
SCAN_SHAPES = [
    (2, 21, 4, 3, 2, 5, 8),
    (1, 37, 2, 4, 1, 3, 16),
    (1, 5, 4, 2, 4, 3, 16),
    (1, 40, 2, 16, 1, 16, 16),
]


SCAN_CASES = [(shape, torch.float32) for shape in SCAN_SHAPES] + [
    (SCAN_SHAPES[0], torch.bfloat16), (SCAN_SHAPES[3], torch.bfloat16)
]


@needs_triton
@pytest.mark.parametrize("shape, dtype", SCAN_CASES)
def test_ssd_scan_triton_forward_backward_match_ref(tk, shape, dtype):
    b, l, h, p, g, n, q = shape
    inputs = _ssd_inputs(b, l, h, p, g, n, dtype, seed=l, d_shape="h" if g < 4 else "hp")
    for t in inputs:
        t.requires_grad_(True)
    gen = torch.Generator().manual_seed(99)
    gy = torch.randn(b, l, h, p, generator=gen).to(DEVICE)
    gfin = torch.randn(b, h, p, n, generator=gen).to(DEVICE)
    results = []
    for fn in (tk["ssd_scan"].ssd_scan_triton, ssd_scan_ref):
        x, dt, A, B, C, D, s0 = inputs
        y, fin = fn(x, dt, A, B, C, q, D=D, initial_states=s0, return_final_states=True)
        assert y.dtype == dtype and y.shape == (b, l, h, p) and fin.shape == (b, h, p, n)
        loss = (y.float() * gy).sum() + (fin.float() * gfin).sum()
        results.append([y, fin, *torch.autograd.grad(loss, inputs)])
    names = ["y", "final_states", "dx", "ddt", "dA", "dB", "dC", "dD", "d_initial_states"]
    for name, got, want in zip(names, *results):
        scale = want.float().abs().max().clamp_min(1.0)  # gradients summed over many steps grow
        _close(got / scale, want / scale, dtype, name)


@needs_triton
def test_ssd_scan_triton_without_optional_inputs(tk):
    """No D, no initial state, only y returned: forward and the gradient of x."""
    x, dt, A, B, C, _, _ = _ssd_inputs(1, 19, 2, 4, 1, 4, torch.float32, seed=3, with_init=False)
    x.requires_grad_(True)
    y = tk["ssd_scan"].ssd_scan_triton(x, dt, A, B, C, 16)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    x_ref = x.detach().requires_grad_(True)
    y_ref = ssd_scan_ref(x_ref, dt, A, B, C, 16)
    (gx_ref,) = torch.autograd.grad(y_ref.square().sum(), x_ref)
    _close(y, y_ref, torch.float32, "y")
    _close(gx, gx_ref, torch.float32, "dx")


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("b, h, p, g, n", [(2, 4, 3, 2, 5), (1, 2, 16, 1, 32)])
def test_ssd_step_triton_matches_ref(tk, dtype, b, h, p, g, n):
    gen = torch.Generator().manual_seed(7)
    state = torch.randn(b, h, p, n, generator=gen).to(DEVICE)
    x = torch.randn(b, h, p, generator=gen).to(DEVICE, dtype)
    dt = torch.rand(b, h, generator=gen).to(DEVICE)
    A = (-torch.rand(h, generator=gen) - 0.5).to(DEVICE)
    B = torch.randn(b, g, n, generator=gen).to(DEVICE, dtype)
    C = torch.randn(b, g, n, generator=gen).to(DEVICE, dtype)
    D = torch.randn(h, generator=gen).to(DEVICE)
    before = state.clone()
    y, new = tk["ssd_step"].ssd_step_triton(state, x, dt, A, B, C, D)
    y_ref, new_ref = ssd_step(state, x, dt, A, B, C, D)
    assert torch.equal(state, before), "ssd_step must not write into the caller's state"
    assert y.dtype == dtype and new.dtype == state.dtype
    _close(y, y_ref, dtype, "y")
    _close(new, new_ref, dtype, "state")


# (shape, temperature): one row; several leading dims; columns not a multiple of the 16-wide block;
# more columns than one block holds (the online softmax rescales across blocks)
KD_CASES = [((1, 7), 1.0), ((2, 3, 37), 2.0), ((3, 5000), 4.0)]


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape, temperature", KD_CASES)
def test_kd_loss_triton_matches_ref(tk, shape, temperature, dtype):
    gen = torch.Generator().manual_seed(len(shape))
    s = (torch.randn(*shape, generator=gen) * 3).to(DEVICE, dtype).requires_grad_(True)
    t = (torch.randn(*shape, generator=gen) * 3).to(DEVICE, dtype).requires_grad_(True)
    results = []
    # the kernel reads bf16 and computes in fp32: its reference is the fp32 computation on the same
    # (rounded) values, gradients flowing back to the bf16 inputs
    for fn in (tk["kd_loss"].kd_loss_triton, lambda s, t, T: kd_loss_ref(s.float(), t.float(), T)):
        loss = fn(s, t, temperature)
        results.append([loss, *torch.autograd.grad(loss * 1.7, (s, t))])
    for name, got, want in zip(["loss", "d_student", "d_teacher"], *results):
        _close(got, want, dtype, name)
    assert results[0][1].dtype == dtype


@needs_triton
def test_kd_loss_triton_detached_teacher_and_shape_check(tk):
    s = torch.randn(4, 9, device=DEVICE, requires_grad=True)
    t = torch.randn(4, 9, device=DEVICE)
    loss = tk["kd_loss"].kd_loss_triton(s, t, 2.0)
    (gs,) = torch.autograd.grad(loss, s)
    s_ref = s.detach().requires_grad_(True)
    (gs_ref,) = torch.autograd.grad(kd_loss_ref(s_ref, t, 2.0), s_ref)
    _close(gs, gs_ref, torch.float32, "d_student")
    assert torch.allclose(
        tk["kd_loss"].kd_loss_triton(t, t, 3.0), torch.zeros((), device=DEVICE), atol=1e-6
    ), "KL of identical distributions is 0"
    with pytest.raises(ValueError, match="differ in shape"):
        tk["kd_loss"].kd_loss_triton(s, t[:, :5], 2.0)


@needs_triton
def test_registry_picks_triton_under_the_interpreter_or_on_cuda(tk):
    """The Triton kernels rank above the PyTorch ones where they run; on a CUDA device mamba-ssm's
    kernels, where installed, rank above them."""
    from mamba4net.core.kernels import available_kernels, resolve_kernel, set_kernel_overrides
    from mamba4net.plugins.triton_kernels.registry import mamba_ssm_available

    set_kernel_overrides(None)
    first = {"ssd_scan": "ssd_scan_triton", "ssd_step": "ssd_step_triton", "kd_loss": "kd_loss_triton"}
    if mamba_ssm_available(DEVICE):
        first.update(ssd_scan="ssd_scan_mamba_ssm", ssd_step="ssd_step_mamba_ssm")
    for op, name in first.items():
        assert available_kernels(op, DEVICE)[0] == name
        assert f"{op}_triton" in available_kernels(op, DEVICE)
    if not mamba_ssm_available(DEVICE):
        assert resolve_kernel("ssd_scan", DEVICE) is tk["ssd_scan"].ssd_scan_triton
    assert "ssd_scan_mamba_ssm" not in available_kernels("ssd_scan", "cpu")
    set_kernel_overrides(None)


@needs_triton
def test_student_with_the_triton_scan_matches_the_reference(tk):
    """The tiny hybrid student forced onto the Triton scan and step through runtime.kernels gives
    the reference scan's outputs and parameter gradients."""
    from test_kernels import student_outputs_with

    ref = student_outputs_with({"ssd_scan": "ssd_scan_torch_ref"}, DEVICE)
    got = student_outputs_with({"ssd_scan": "ssd_scan_triton", "ssd_step": "ssd_step_triton"}, DEVICE)
    for name, a, b in zip(["forward", "step", "grad"], got, ref):
        _close(a, b, torch.float32, name)
