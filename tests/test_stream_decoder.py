"""The streaming decoders (kernel op ``stream_decoder``): the fused one against the reference step."""

from __future__ import annotations

import pytest
import torch

from mamba4net.core.kernels import available_kernels, set_kernel_overrides
from mamba4net.core.runtime import decision_threads
from mamba4net.core.streaming import StepDecoder, decoder_for, step_tokens
from mamba4net.plugins.hybrid_mamba.attention import KVCache
from mamba4net.plugins.hybrid_mamba.config import HybridMambaParams
from mamba4net.plugins.hybrid_mamba.decode import FusedDecoder
from mamba4net.plugins.hybrid_mamba.model import HybridMambaBackbone

SMALL = dict(d_model=32, n_layers=3, d_state=8, headdim=8, chunk_size=4, d_intermediate=48, attn_heads=4,
             attn_kv_heads=4)
VARIANTS = {
    "default": {},
    "groups_gqa": dict(ngroups=2, attn_kv_heads=2),
    "no_mlp_no_conv_bias": dict(d_intermediate=0, conv_bias=False),
    "biases_dt_limit": dict(proj_bias=True, dt_limit=(0.01, 0.5)),
    "pure_mamba": dict(attn_layers=[]),
    "attention_first_no_rope": dict(attn_layers=[0], rope=False),
    "d_conv_2": dict(d_conv=2),
}


def _backbone(seed: int = 0, dtype=torch.float32, **overrides) -> HybridMambaBackbone:
    torch.manual_seed(seed)
    model = HybridMambaBackbone(HybridMambaParams(**{**SMALL, **overrides})).eval().to(dtype)
    with torch.no_grad():  # non-trivial norms, D and biases, so that a dropped term shows
        for name, p in model.named_parameters():
            if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "norm_f.weight", ".D", "bias")):
                p.add_(0.3 * torch.randn_like(p))
    return model


def _assert_states_equal(got, want, atol: float) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, KVCache):
            torch.testing.assert_close(g.k, w.k, atol=atol, rtol=0)
            torch.testing.assert_close(g.v, w.v, atol=atol, rtol=0)
        else:
            torch.testing.assert_close(g.conv, w.conv, atol=atol, rtol=0)
            torch.testing.assert_close(g.ssm, w.ssm, atol=atol, rtol=0)


def _decoders(variant: str, prefill: int, batch: int):
    """A backbone of ``variant`` and its reference and fused decoders, after ``prefill`` tokens."""
    model = _backbone(**VARIANTS[variant])
    state = None
    with torch.no_grad():
        if prefill:
            _, state = model.prefill(torch.randn(batch, prefill, model.d_model))
    return model, StepDecoder(model, batch, state), FusedDecoder(model, batch, state)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("prefill", [0, 5])
def test_fused_decoder_matches_the_reference_step(variant, prefill):
    model, ref, fused = _decoders(variant, prefill, batch := 3)
    for _ in range(9):  # past the conv ring's wrap-around, several times
        x = torch.randn(batch, model.d_model)
        torch.testing.assert_close(fused.step(x), ref.step(x), atol=2e-5, rtol=0)
    _assert_states_equal(fused.states(), ref.states(), atol=2e-5)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("prefill", [0, 5])
def test_step_many_is_that_many_steps(variant, prefill):
    """T tokens in one call == T reference steps, for runs of 1 to 7 tokens in a row (the conv
    ring wrapping inside and across calls), interleaved with single steps."""
    model, ref, fused = _decoders(variant, prefill, batch := 2)
    for T in (3, 1, 7, 2, 5):
        x = torch.randn(batch, T, model.d_model)
        want = torch.stack([ref.step(x[:, t]) for t in range(T)], 1)
        torch.testing.assert_close(fused.step_many(x), want, atol=3e-5, rtol=0)
        x = torch.randn(batch, model.d_model)
        torch.testing.assert_close(fused.step(x), ref.step(x), atol=3e-5, rtol=0)
    _assert_states_equal(fused.states(), ref.states(), atol=3e-5)


def test_step_many_grows_the_kv_cache_within_one_call():
    model = _backbone()
    ref, fused = StepDecoder(model, 1), FusedDecoder(model, 1)
    x = torch.randn(1, 150, model.d_model)  # past the initial capacity of 64, twice, in one call
    want = torch.stack([ref.step(x[:, t]) for t in range(150)], 1)
    torch.testing.assert_close(fused.step_many(x), want, atol=5e-5, rtol=0)
    assert fused.states()[-1].length == 150
    # step_tokens for a decoder without step_many (the reference): T plain steps
    torch.testing.assert_close(step_tokens(StepDecoder(model, 1), x[:, :4]), want[:, :4], atol=0, rtol=0)


def test_fused_decoder_runs_a_float64_model():
    # the reference computes its norms and conv in float32 (``.float()``), so float32 rounding
    model = _backbone(dtype=torch.float64, ngroups=2, attn_kv_heads=2)
    ref, fused = StepDecoder(model, 2), FusedDecoder(model, 2)
    for _ in range(6):
        x = torch.randn(2, model.d_model, dtype=torch.float64)
        torch.testing.assert_close(fused.step(x), ref.step(x), atol=2e-6, rtol=0)


def test_fused_decoder_grows_its_kv_cache_and_leaves_the_given_state_alone():
    model = _backbone()
    with torch.no_grad():
        _, state = model.prefill(torch.randn(1, 40, model.d_model))
    before = [(s.k.clone(), s.v.clone()) if isinstance(s, KVCache) else (s.conv.clone(), s.ssm.clone()) for s in state]
    ref, fused = StepDecoder(model, 1, state), FusedDecoder(model, 1, state)
    for _ in range(100):  # 140 positions: past the initial capacity of 80
        x = torch.randn(1, model.d_model)
        torch.testing.assert_close(fused.step(x), ref.step(x), atol=2e-5, rtol=0)
    _assert_states_equal(fused.states(), ref.states(), atol=2e-5)
    assert fused.states()[-1].length == 140
    for s, (a, b) in zip(state, before):  # the prefill's state is not written into
        assert torch.equal(s.k if isinstance(s, KVCache) else s.conv, a)
        assert torch.equal(s.v if isinstance(s, KVCache) else s.ssm, b)


@pytest.mark.parametrize("make", [FusedDecoder, StepDecoder])
def test_reset_starts_new_streams_over_the_same_weights(make):
    model = _backbone()
    with torch.no_grad():
        _, state = model.prefill(torch.randn(2, 70, model.d_model))  # a KV cache past the initial capacity
    dec = make(model, 1)
    xs = [torch.randn(2, model.d_model) for _ in range(6)]
    for x in xs[:3]:
        dec.step(x[:1])
    for start in (state, None):  # from a prefill's state, then from empty, batch 2
        dec.reset(2, start)
        fresh = StepDecoder(model, 2, start)
        for x in xs:
            torch.testing.assert_close(dec.step(x), fresh.step(x), atol=2e-5, rtol=0)


def test_fused_decoder_is_a_snapshot_of_the_weights():
    model = _backbone()
    fused = FusedDecoder(model, 1)
    x = torch.randn(1, model.d_model)
    want = StepDecoder(model, 1).step(x)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    torch.testing.assert_close(fused.step(x), want, atol=2e-5, rtol=0)


def test_the_registry_picks_the_fused_decoder_and_runtime_kernels_overrides_it():
    assert available_kernels("stream_decoder", "cpu") == ["stream_decoder_torch_fused", "stream_decoder_torch_ref"]
    model = _backbone()
    assert isinstance(decoder_for(model, 1), FusedDecoder)
    try:
        set_kernel_overrides({"stream_decoder": "stream_decoder_torch_ref"})
        assert isinstance(decoder_for(model, 1), StepDecoder)
    finally:
        set_kernel_overrides(None)
    assert isinstance(model.to(torch.bfloat16).decoder(1), StepDecoder)  # no fused path for bf16


def test_decoder_for_wraps_a_plain_streaming_backbone_and_refuses_others():
    class Plain(torch.nn.Module):
        def init_state(self, batch_size):
            return torch.zeros(batch_size, 2)

        def step(self, x, state):
            return x + state, state + 1

    dec = decoder_for(Plain(), 2)
    assert torch.equal(dec.step(torch.ones(2, 2)), torch.ones(2, 2))
    assert torch.equal(dec.step(torch.ones(2, 2)), 2 * torch.ones(2, 2))
    with pytest.raises(TypeError, match="no recurrent step"):
        decoder_for(torch.nn.Linear(2, 2), 1)


def test_decision_threads_sets_and_restores_the_thread_count():
    before = torch.get_num_threads()
    with decision_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with decision_threads():  # the configured count (1 unless a config set another)
        assert torch.get_num_threads() >= 1
    assert torch.get_num_threads() == before
