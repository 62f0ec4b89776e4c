"""The CUDA-graph streaming decoder (``stream_decoder_cuda_graph``): its position-free step against
the reference on the CPU, and the recorded graphs against the reference on a GPU (skipped without one)."""

from __future__ import annotations

import pytest
import torch

from mamba4net.core.kernels import available_kernels
from mamba4net.core.streaming import StepDecoder
from mamba4net.plugins.hybrid_mamba.decode import FusedDecoder
from mamba4net.plugins.hybrid_mamba.graph_decode import GraphDecoder, StaticDecoder, graph_decoder
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
    def buffers():  # what a recorded step reads and writes
        return [id(getattr(layer, name)) for layer in dec.layers for name in ("k", "v", "pos", "ring", "ssm")
                if hasattr(layer, name)]

    before = buffers()
    assert dec.load(2, state)  # the same buffers: recorded graphs stay valid
    assert buffers() == before
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


class _FakeGraph:
    """What a recorded step does at replay: the step's kernels from the ring slots it was recorded
    at, with no Python side effects (the host-side values are put back)."""

    def __init__(self, dec, key):
        self.dec, self.key, self.out = dec, key, None

    def replay(self):
        inner = self.dec.inner
        slots, positions = inner.ring_slots(), inner.positions()
        inner.set_ring_slots(self.key)
        self.out.copy_(inner.step(self.dec.x))
        inner.set_ring_slots(slots)
        inner.set_positions(positions)


class _CPUGraphDecoder(GraphDecoder):
    """GraphDecoder with the recording emulated on the CPU: the step's Python runs, its tensor
    writes are undone (a recording runs no kernel), and the graph replays the step."""

    def _capture(self):
        saved = [{k: v.clone() for k, v in vars(layer).items() if isinstance(v, torch.Tensor)}
                 for layer in self.inner.layers]
        graph = _FakeGraph(self, self.inner.ring_slots())
        out = self.inner.step(self.x)
        with torch.inference_mode():
            for layer, tensors in zip(self.inner.layers, saved):
                for name, value in tensors.items():
                    getattr(layer, name).copy_(value)
        graph.out = out
        return graph, out


@pytest.fixture
def cuda_calls_on_cpu(monkeypatch):
    """The few torch.cuda calls of GraphDecoder outside the recording, made no-ops."""
    import contextlib

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream())
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_graph_decoder_bookkeeping_with_an_emulated_recording(variant, cuda_calls_on_cpu):
    """The replay logic on the CPU: one recording per ring slot, the host-side slots and positions
    advanced after each replay, the cache grown (and everything recorded again) at 64, in-place
    resets keeping the recordings, another batch size recording anew."""
    model = _backbone(**VARIANTS[variant])
    ref, dec = _run_against_reference(model, _CPUGraphDecoder, 2, 70, 5, "cpu", 3e-5)  # 75 > 64: grown once
    assert len(dec.graphs) == next(layer.mixer.d_conv for layer in model.layers if not layer.is_attention)
    with torch.no_grad():
        _, state = model.prefill(torch.randn(2, 7, model.d_model))
    graphs = dict(dec.graphs)
    dec.reset(2, state)
    assert dec.graphs == graphs  # fits the buffers: copied in place
    ref = StepDecoder(model, 2, state)
    x = torch.randn(2, 6, model.d_model)
    torch.testing.assert_close(dec.step_many(x), torch.stack([ref.step(x[:, t]) for t in range(6)], 1),
                               atol=3e-5, rtol=0)
    dec.reset(3)  # another batch size: new buffers, new recordings
    assert not dec.graphs
    ref = StepDecoder(model, 3)
    for _ in range(5):
        x = torch.randn(3, model.d_model)
        torch.testing.assert_close(dec.step(x), ref.step(x), atol=3e-5, rtol=0)
    _assert_states_equal(dec.states(), ref.states(), atol=3e-5)


@needs_cuda
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("prefill", [0, 5])
def test_graph_decoder_matches_the_reference_step_on_cuda(variant, prefill):
    model = _backbone(**VARIANTS[variant]).cuda()  # safe: a CUDA-only test (needs_cuda)
    _run_against_reference(model, GraphDecoder, 3, 9, prefill, "cuda", 1e-4)


@needs_cuda
def test_graph_decoder_grows_resets_and_records_once_per_ring_slot_on_cuda():
    model = _backbone().cuda()  # safe: a CUDA-only test (needs_cuda)
    ref, dec = _run_against_reference(model, GraphDecoder, 1, 70, 0, "cuda", 1e-4)  # capacity 64 -> 128
    assert len(dec.graphs) == model.layers[0].mixer.d_conv  # one recording per ring slot
    with torch.no_grad():
        _, state = model.prefill(torch.randn(1, 10, model.d_model, device="cuda"))  # safe: a CUDA-only test (needs_cuda)
    graphs = dict(dec.graphs)
    dec.reset(1, state)  # fits: copied in place, the recordings kept
    assert dec.graphs == graphs
    ref = StepDecoder(model, 1, state)
    for _ in range(6):
        x = torch.randn(1, model.d_model, device="cuda")  # safe: a CUDA-only test (needs_cuda)
        torch.testing.assert_close(dec.step(x), ref.step(x), atol=1e-4, rtol=0)
    dec.reset(2, None)  # another batch size: rebuilt
    ref = StepDecoder(model, 2)
    x = torch.randn(2, model.d_model, device="cuda")  # safe: a CUDA-only test (needs_cuda)
    torch.testing.assert_close(dec.step(x), ref.step(x), atol=1e-4, rtol=0)
