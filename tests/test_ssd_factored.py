"""The chunked SSD scan's two forms: the factored one (one matmul per chunk shared by a group's
heads) and the masked one it hands heads with strong decay to. Both against the step-by-step
reference: odd lengths, chunk sizes, groups, initial states, D of both shapes, gradients, and heads
of both kinds in one call. Tiny shapes, seeded, explicit tolerances."""

from __future__ import annotations

import pytest
import torch

from mamba4net.plugins.hybrid_mamba import ssd
from mamba4net.plugins.hybrid_mamba.ssd import ssd_scan_chunked, ssd_scan_ref

TOL = {torch.float64: 1e-10, torch.float32: 3e-5}


def _inputs(b, l, h, p, g, n, dtype, *, seed=0, decay=(0.5, 4.0), dt_shift=-1.0, D_shape="h"):
    """Scan inputs; ``decay``: the range of -A per head, ``dt`` ~ softplus(N(dt_shift, 1))."""
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    x = rnd(b, l, h, p)
    dt = torch.nn.functional.softplus(rnd(b, l, h) + dt_shift)
    A = -torch.linspace(*decay, h, dtype=torch.float64)  # weakest to strongest decay
    B, C = rnd(b, l, g, n) / n**0.5, rnd(b, l, g, n) / n**0.5
    D = rnd(h) if D_shape == "h" else rnd(h, p)
    s0 = rnd(b, h, p, n)
    return [t.to(dtype) for t in (x, dt, A, B, C, D, s0)]


def _strong_heads(x, dt, A, B, C, chunk_size):
    """The heads the factored form hands to the masked one, for one slab of the whole sequence."""
    q = max(chunk_size, min(ssd.FACTORED_CHUNK, x.shape[1]))
    return ssd._ssd_scan_factored(x, dt, A, B, C, q, None, None)[2]


def _check(inputs, chunk_size, dtype, **kw):
    x, dt, A, B, C, D, s0 = inputs
    y, final = ssd_scan_chunked(x, dt, A, B, C, chunk_size, D=D, initial_states=s0, return_final_states=True, **kw)
    y_ref, final_ref = ssd_scan_ref(x, dt, A, B, C, chunk_size, D=D, initial_states=s0, return_final_states=True)
    assert y.dtype == x.dtype and y.shape == x.shape and final.shape == s0.shape
    torch.testing.assert_close(y, y_ref, atol=TOL[dtype], rtol=TOL[dtype])
    torch.testing.assert_close(final, final_ref, atol=TOL[dtype], rtol=TOL[dtype])


# (b, l, h, p, g, n, chunk): odd lengths, a length below the chunk, several chunks and groups
SHAPES = [(2, 37, 4, 3, 2, 5, 4), (1, 101, 6, 2, 3, 4, 16), (2, 5, 4, 2, 1, 3, 8), (1, 130, 8, 4, 1, 6, 32)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_factored_form_alone_matches_the_reference(shape, dtype, monkeypatch):
    """Weak decays: every head takes the factored form (the masked one is never called)."""
    b, l, h, p, g, n, q = shape
    inputs = _inputs(b, l, h, p, g, n, dtype, decay=(0.05, 0.5), dt_shift=-2.0)
    assert not _strong_heads(*inputs[:5], q).any()
    monkeypatch.setattr(ssd, "_ssd_scan_slab", lambda *a, **k: pytest.fail("masked form called"))
    _check(inputs, q, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
def test_strong_decay_heads_take_the_masked_form(shape, dtype, monkeypatch):
    """Decays from weak to far beyond DECAY_LIMIT per chunk across the heads of one call: the
    strong heads (only those) go to the masked form, and the whole output matches the reference."""
    b, l, h, p, g, n, q = shape
    inputs = _inputs(b, l, h, p, g, n, dtype, decay=(0.05, 80.0), dt_shift=0.5)
    strong = _strong_heads(*inputs[:5], q)
    if l > 1:
        assert strong.any() and not strong.all()
    handed = []
    masked = ssd._ssd_scan_slab

    def spy(x, *args):
        handed.append(x.shape[2])
        return masked(x, *args)

    monkeypatch.setattr(ssd, "_ssd_scan_slab", spy)
    _check(inputs, q, dtype)
    assert handed == ([int(strong.sum())] if strong.any() else [])


@pytest.mark.parametrize("slab_steps", [1, 40, 64, 1000])
def test_slabs_and_per_channel_D(slab_steps):
    inputs = _inputs(2, 150, 4, 3, 2, 5, torch.float64, seed=3, decay=(0.1, 30.0), D_shape="hp")
    _check(inputs, 8, torch.float64, slab_steps=slab_steps)


def test_no_D_no_initial_state_and_bfloat16():
    x, dt, A, B, C, _, _ = _inputs(1, 45, 4, 4, 2, 4, torch.float32, seed=5, decay=(0.1, 40.0))
    y = ssd_scan_chunked(x, dt, A, B, C, 8)
    torch.testing.assert_close(y, ssd_scan_ref(x, dt, A, B, C, 8), atol=3e-5, rtol=3e-5)
    xb, Bb, Cb = x.bfloat16(), B.bfloat16(), C.bfloat16()
    yb = ssd_scan_chunked(xb, dt, A, Bb, Cb, 8)
    assert yb.dtype == torch.bfloat16
    torch.testing.assert_close(yb, ssd_scan_ref(xb, dt, A, Bb, Cb, 8), atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("decay", [(0.05, 0.5), (0.05, 80.0)])  # factored only; both forms
def test_gradients_match_the_reference(decay):
    inputs = _inputs(2, 43, 4, 3, 2, 5, torch.float64, seed=7, decay=decay, dt_shift=0.5 if decay[1] > 1 else -2.0)
    grads = []
    for fn in (ssd_scan_chunked, ssd_scan_ref):
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        x, dt, A, B, C, D, s0 = leaves
        y, final = fn(x, dt, A, B, C, 8, D=D, initial_states=s0, return_final_states=True)
        gen = torch.Generator().manual_seed(11)
        ((y * torch.randn(y.shape, generator=gen, dtype=y.dtype)).sum()
         + (final * torch.randn(final.shape, generator=gen, dtype=final.dtype)).sum()).backward()
        grads.append([t.grad for t in leaves])
    for got, want, name in zip(*grads, ["x", "dt", "A", "B", "C", "D", "initial_states"]):
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9, msg=lambda m: f"d/d{name}: {m}")


def test_gradcheck_through_both_forms():
    x, dt, A, B, C, D, s0 = _inputs(1, 11, 2, 2, 1, 2, torch.float64, seed=2, decay=(0.1, 60.0), dt_shift=1.0)
    assert _strong_heads(x, dt, A, B, C, 4).tolist() == [False, True]
    args = [t.requires_grad_(True) for t in (x, dt, A, B, C, D, s0)]

    def fn(x, dt, A, B, C, D, s0):
        return ssd_scan_chunked(x, dt, A, B, C, 4, D=D, initial_states=s0, return_final_states=True)

    assert torch.autograd.gradcheck(fn, args)


def test_inference_and_autograd_paths_agree():
    """The in-place path (no grad) and the autograd path compute the same numbers."""
    inputs = _inputs(2, 77, 4, 3, 2, 5, torch.float32, seed=9, decay=(0.05, 80.0), dt_shift=0.5)
    x, dt, A, B, C, D, s0 = inputs
    with torch.no_grad():
        y0, f0 = ssd_scan_chunked(x, dt, A, B, C, 16, D=D, initial_states=s0, return_final_states=True)
    xg = x.clone().requires_grad_(True)
    y1, f1 = ssd_scan_chunked(xg, dt, A, B, C, 16, D=D, initial_states=s0, return_final_states=True)
    torch.testing.assert_close(y1.detach(), y0, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(f1.detach(), f0, atol=1e-6, rtol=1e-6)


def test_a_large_decay_on_the_first_step_of_a_chunk():
    """A chunk whose own decay (after its first step) is within the factored form's range while its
    first step decays strongly: the state entering it decays by exp(a_end), far below 1, which the
    first rows' v_i ~ exp(-a_end + a_0) scale back up; nothing of it may be lost."""
    x, dt, A, B, C, D, s0 = _inputs(1, 96, 2, 3, 1, 4, torch.float64, seed=13, decay=(1.0, 1.0), dt_shift=-2.0)
    dt[:, 33:64] = 55.0 / 31  # steps 1..31 of the second chunk (of 32): a decay of 55 across it
    dt[:, 32] = 10.0  # its first step: a_end = -65, a decay of e**-65 for the state entering it
    assert not _strong_heads(x, dt, A, B, C, 16).any()
    _check((x, dt, A, B, C, D, s0), 16, torch.float64)
