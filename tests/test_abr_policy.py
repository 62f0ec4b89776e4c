"""ABR sequence policies: pool windows, token layouts, and streaming == re-encoding decisions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mamba4net.core.model import NetModel
from mamba4net.plugins.abr.data import PoolWindows
from mamba4net.plugins.abr.encoder import N_ACTIONS, ABRStateEncoder
from mamba4net.plugins.abr.head import PolicyHead
from mamba4net.plugins.abr.policy import SequencePolicy, can_stream


def _pool(E=3, T=48, seed=0):
    rng = np.random.default_rng(seed)
    states = rng.random((E, T, 6, 6), dtype=np.float32)
    actions = rng.integers(0, 6, (E, T))
    rewards = rng.normal(1.0, 0.5, (E, T)).astype(np.float32)
    return states, actions, rewards


def test_windows_cover_every_start_and_carry_the_previous_action():
    states, actions, rewards = _pool()
    data = PoolWindows(states, actions, rewards, window=10, return_scale=2.0)
    assert len(data) == 3 * (48 - 10 + 1)
    b = data.batch(torch.tensor([0, 5, len(data) - 1]))
    assert b["states"].shape == (3, 10, 6, 6) and b["actions"].shape == (3, 10)
    # sample 5 = episode 0 starting at decision 5
    assert b["timesteps"][1].tolist() == list(range(5, 15))
    assert b["prev_action"][1].item() == actions[0, 4]
    assert b["prev_action"][0].item() == N_ACTIONS  # episode start
    np.testing.assert_allclose(b["rtg"][1, 0].item(), rewards[0, 5:].sum() / 2.0, rtol=1e-5)
    np.testing.assert_array_equal(b["actions"][2].numpy(), actions[2, -10:])


def test_whole_episode_windows_are_one_per_episode():
    data = PoolWindows(*_pool(E=4), window=48, return_scale=1.0)
    assert len(data) == 4
    with pytest.raises(ValueError, match="window"):
        PoolWindows(*_pool(E=1), window=49, return_scale=1.0)


@pytest.mark.parametrize("layout", ["separate", "fused"])
def test_encoder_and_head_shapes(layout):
    enc = ABRStateEncoder(16, layout=layout, hidden=8, conv_channels=4)
    head = PolicyHead(16, enc.tokens_per_decision, hidden=8)
    batch = PoolWindows(*_pool(), window=7, return_scale=10.0).batch(torch.arange(4))
    tokens = enc(batch)
    assert tokens.shape == (4, 7 * enc.tokens_per_decision, 16)
    assert head(tokens, batch).shape == (4, 7, 6)
    assert head(tokens[:, 0], batch).shape == (4, 6)


def test_action_tokens_do_not_leak_into_the_decision_they_record():
    """Causality of the separate layout: changing a_t must not change the logits read for a_t."""
    torch.manual_seed(0)
    enc = ABRStateEncoder(16, layout="separate", hidden=8, conv_channels=4)
    from mamba4net.plugins.hybrid_mamba.config import HybridMambaParams
    from mamba4net.plugins.hybrid_mamba.model import HybridMambaBackbone

    model = NetModel(enc, HybridMambaBackbone(HybridMambaParams(
        d_model=16, n_layers=2, d_state=8, headdim=8, chunk_size=4, attn_heads=2, attn_kv_heads=2,
        attn_layers=[1], d_intermediate=32)), PolicyHead(16, 3, hidden=8)).eval()
    batch = PoolWindows(*_pool(), window=6, return_scale=10.0).batch(torch.arange(2))
    changed = dict(batch, actions=batch["actions"].clone())
    changed["actions"][:, -1] = (changed["actions"][:, -1] + 1) % 6
    with torch.no_grad():
        a, b = model(batch).pred, model(changed).pred
    torch.testing.assert_close(a, b)


class _Obs:
    """A stand-in observation: only what SequencePolicy reads."""

    def __init__(self, state: np.ndarray):
        self.state = state

    def pensieve_state(self, s_len: int = 6) -> np.ndarray:
        return self.state


def _play(policy, states, rewards):
    n, T = states.shape[:2]
    policy.reset(n)
    actions = []
    for t in range(T):
        actions.append(policy.act(_Obs(states[:, t])))
        policy.observe(rewards[:, t])
    return np.stack(actions, 1)


@pytest.mark.parametrize("layout", ["separate", "fused"])
def test_streaming_student_decides_like_re_encoding(tiny_student, layout):
    """One recurrent step per token gives the same decisions as re-running the whole history."""
    torch.manual_seed(0)
    d = tiny_student.d_model
    enc = ABRStateEncoder(d, layout=layout, hidden=8, conv_channels=4)
    model = NetModel(enc, tiny_student, PolicyHead(d, enc.tokens_per_decision, hidden=8)).eval()
    assert can_stream(model)
    states, _, rewards = _pool(E=5, T=12, seed=3)
    kw = dict(window=47, return_scale=10.0, target_return=30.0)
    streamed = SequencePolicy(model, mode="stream", **kw)
    reencoded = SequencePolicy(model, mode="reencode", **kw)
    np.testing.assert_array_equal(_play(streamed, states, rewards), _play(reencoded, states, rewards))
    # and the logits agree, not just their argmax
    seen: list[torch.Tensor] = []
    hook = model.head.register_forward_hook(lambda module, args, out: seen.append(out if out.ndim == 2 else out[:, -1]))
    streamed.reset(5), reencoded.reset(5)
    for t in range(4):
        a = streamed.act(_Obs(states[:, t]))
        b = reencoded.act(_Obs(states[:, t]))
        np.testing.assert_array_equal(a, b)
        torch.testing.assert_close(seen[-2], seen[-1], rtol=1e-4, atol=1e-4)
        streamed.observe(rewards[:, t]), reencoded.observe(rewards[:, t])
    hook.remove()
    assert len(seen) == 8


def test_teacher_cannot_stream_and_says_so(tiny_teacher):
    d = tiny_teacher.d_model
    enc = ABRStateEncoder(d, hidden=8, conv_channels=4)
    model = NetModel(enc, tiny_teacher, PolicyHead(d, 3, hidden=8))
    if can_stream(model):
        pytest.skip("this teacher backbone has a recurrent step")
    with pytest.raises(ValueError, match="reencode"):
        SequencePolicy(model, mode="stream", window=47, return_scale=10.0, target_return=1.0)
