"""The CUDA-graph streaming decoder (``stream_decoder_cuda_graph``): its position-free step against
the reference on the CPU, and the recorded graphs against the reference on a GPU (skipped without one)."""

from __future__ import annotations

import pytest
import torch

from mamba4net.core.kernels import available_kernels
from mamba4net.core.streaming import StepDecoder
from mamba4net.plugins.hybrid_mamba.decode import FusedDecoder
from mamba4net.plugins.hybrid_mamba.graph_decode import StaticDecoder, graph_decoder
from test_stream_decoder import VARIANTS, _assert_states_equal, _backbone

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA device")


def _run_against_reference(model, make, batch: int, steps: int, prefill: int, device: str, atol: float):
    state = None
    with torch.no_grad():
        if prefill:
            _, state = model.prefill(torch.randn(batch, prefill, model.d_model, device=device))
    ref, dec = StepDecoder(model, batch, state), make(model, batch, state)
    for _ in range(steps):
        x = torch.randn(batch, model.d_model, device=device)
        torch.testing.assert_close(dec.step(x), ref.step(x), atol=atol, rtol=0)
    _assert_states_equal(dec.states(), ref.states(), atol=atol)
    return ref, dec


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("prefill", [0, 5])
def test_static_decoder_matches_the_reference_step(variant, prefill):
    _run_against_reference(_backbone(**VARIANTS[variant]), StaticDecoder, 3, 9, prefill, "cpu", 2e-5)


def test_static_decoder_grows_its_cache_and_step_many_is_that_many_steps():
    model = _backbone()
    ref, dec = _run_against_reference(model, StaticDecoder, 1, 70, 0, "cpu", 3e-5)  # past the capacity of 64
    x = torch.randn(1, 5, model.d_model)
    want = torch.stack([ref.step(x[:, t]) for t in range(5)], 1)
    torch.testing.assert_close(dec.step_many(x), want, atol=3e-5, rtol=0)
    assert dec.states()[-1].length == 75


def test_static_decoder_loads_a_state_in_place_and_refuses_one_that_does_not_fit():
    model = _backbone()
    with torch.no_grad():
        _, state = model.prefill(torch.randn(2, 20, model.d_model))
        _, long_state = model.prefill(torch.randn(2, 90, model.d_model))
    dec = StaticDecoder(model, 2)
    buffers = [id(getattr(layer, "k", None)) for layer in dec.layers]
    assert dec.load(2, state)  # the same buffers: recorded graphs stay valid
    assert [id(getattr(layer, "k", None)) for layer in dec.layers] == buffers
    ref = StepDecoder(model, 2, state)
    for _ in range(6):
        x = torch.randn(2, model.d_model)
        torch.testing.assert_close(dec.step(x), ref.step(x), atol=2e-5, rtol=0)
    for _ in range(60):  # past the capacity: the grown cache is made inside a step (inference mode)
        dec.step(torch.randn(2, model.d_model))
    assert dec.load(2, state)  # and can still be written into
    ref = StepDecoder(model, 2, state)
    x = torch.randn(2, model.d_model)
    torch.testing.assert_close(dec.step(x), ref.step(x), atol=2e-5, rtol=0)
    assert not dec.load(1, None)  # another batch size
    assert not StaticDecoder(model, 2).load(2, long_state)  # longer than the capacity (64)


def test_graph_decoder_is_the_fused_one_off_cuda_and_is_registered_for_cuda_only():
    model = _backbone()
    assert isinstance(graph_decoder(model, 1), FusedDecoder)
    assert isinstance(graph_decoder(model.to(torch.bfloat16), 1), StepDecoder)
    assert available_kernels("stream_decoder", "cuda")[0] == "stream_decoder_cuda_graph"
    assert "stream_decoder_cuda_graph" not in available_kernels("stream_decoder", "cpu")


@needs_cuda
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("prefill", [0, 5])
def test_graph_decoder_matches_the_reference_step_on_cuda(variant, prefill):
    from mamba4net.plugins.hybrid_mamba.graph_decode import GraphDecoder

    torch.backends.cuda.matmul.allow_tf32 = False
    model = _backbone(**VARIANTS[variant]).cuda()
    _run_against_reference(model, GraphDecoder, 3, 9, prefill, "cuda", 1e-4)


@needs_cuda
def test_graph_decoder_grows_resets_and_records_once_per_ring_slot_on_cuda():
    from mamba4net.plugins.hybrid_mamba.graph_decode import GraphDecoder

    torch.backends.cuda.matmul.allow_tf32 = False
    model = _backbone().cuda()
    ref, dec = _run_against_reference(model, GraphDecoder, 1, 70, 0, "cuda", 1e-4)  # capacity 64 -> 128
    assert len(dec.graphs) == model.layers[0].mixer.d_conv  # one recording per ring slot
    with torch.no_grad():
        _, state = model.prefill(torch.randn(1, 10, model.d_model, device="cuda"))
    graphs = dict(dec.graphs)
    dec.reset(1, state)  # fits: copied in place, the recordings kept
    assert dec.graphs == graphs
    ref = StepDecoder(model, 1, state)
    for _ in range(6):
        x = torch.randn(1, model.d_model, device="cuda")
        torch.testing.assert_close(dec.step(x), ref.step(x), atol=1e-4, rtol=0)
    dec.reset(2, None)  # another batch size: rebuilt
    ref = StepDecoder(model, 2)
    x = torch.randn(2, model.d_model, device="cuda")
    torch.testing.assert_close(dec.step(x), ref.step(x), atol=1e-4, rtol=0)
