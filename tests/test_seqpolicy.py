"""The shared return-conditioned sequence-policy library (mamba4net.plugins.seqpolicy), on its own:
returns-to-go, windows, stored pools, and a toy task's policy deciding the same way streaming and
re-encoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from mamba4net.core.errors import DataError
from mamba4net.core.io import read_json, write_json
from mamba4net.core.model import NetModel
from mamba4net.plugins.seqpolicy import (ReturnConditionedPolicy, ReturnToGo, StoredPool, best_per_group,
                                         cached_pool, episode_windows, returns_to_go)


# --- returns ---------------------------------------------------------------------------------
def test_returns_to_go_dense_and_flat_agree():
    r = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    np.testing.assert_allclose(returns_to_go(r), [[6.0, 5.0, 3.0], [3.5, 3.0, 4.0]])
    flat = returns_to_go(np.array([1.0, 2.0, 3.0, 0.5, -1.0]), np.array([0, 3, 5]))
    np.testing.assert_allclose(flat, [6.0, 5.0, 3.0, -0.5, -1.0])
    with pytest.raises(ValueError, match="episodes, T"):
        returns_to_go(np.ones(4))


def test_return_to_go_starts_at_the_target_and_drops_by_each_reward():
    rtg = ReturnToGo(target=10.0, scale=2.0, dtype=np.float32)
    np.testing.assert_array_equal(rtg.reset(3), np.full(3, 5.0, dtype=np.float32))
    rtg.spend(np.array([1.0, 2.0, -2.0]))
    np.testing.assert_allclose(rtg.value, [4.5, 4.0, 6.0])
    assert rtg.value.dtype == np.float32
    # what a stream asks for at each decision is what the pool's windows feed: rtg of the rest
    rewards = np.array([1.0, 2.0, 3.0])
    seen = []
    rtg.reset(1)
    for r in rewards:
        seen.append(float(rtg.value[0]))
        rtg.spend([r])
    np.testing.assert_allclose(seen, (10.0 - np.concatenate([[0], np.cumsum(rewards)[:-1]])) / 2.0)


def test_best_per_group_keeps_the_top_k_of_each_group():
    returns = np.array([3.0, 1.0, 5.0, 2.0, 2.0, -1.0, 0.0])
    groups = np.array(["a", "a", "b", "b", "b", "a", "c"])
    assert best_per_group(returns, groups, 1).tolist() == [0, 2, 6]
    assert best_per_group(returns, groups, 2).tolist() == [0, 1, 2, 3, 6]  # b's tie: the earlier one
    assert best_per_group(returns, groups, 9).tolist() == list(range(7))
    with pytest.raises(ValueError, match="same 1-D shape"):
        best_per_group(returns, groups[:3], 1)
    with pytest.raises(ValueError, match="at least 1"):
        best_per_group(returns, groups, 0)


# --- windows ---------------------------------------------------------------------------------
@pytest.mark.parametrize("window,stride,partial", [(1, 1, True), (3, 1, False), (3, 3, True), (4, 2, True),
                                                   (5, 2, False), (9, 1, False)])
def test_episode_windows_match_a_plain_loop(window, stride, partial):
    ptr = np.array([0, 5, 5, 12, 13])  # an empty and a one-decision episode included
    want = [(t, min(t + window, e)) for s, e in zip(ptr[:-1], ptr[1:]) for t in range(s, e, stride)
            if partial or t + window <= e]
    starts, ends = episode_windows(ptr, window, stride, partial=partial)
    assert list(zip(starts.tolist(), ends.tolist())) == want
    with pytest.raises(ValueError, match="at least 1"):
        episode_windows(ptr, 0)


# --- stored pools ----------------------------------------------------------------------------
@dataclass
class _Pool(StoredPool):
    obs: np.ndarray  # (E, T)
    reward: np.ndarray  # (E, T)
    policy: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    ARRAYS = ("obs", "reward")
    LISTS = ("policy",)
    FINITE = ("reward",)

    @classmethod
    def check(cls, path, a, episodes):
        if a["obs"].shape != a["reward"].shape or len(a["obs"]) != episodes:
            raise DataError(f"{path}: experience-pool arrays disagree in shape")


def _toy_pool(E=3, T=4) -> _Pool:
    rng = np.random.default_rng(0)
    return _Pool(rng.random((E, T)).astype(np.float32), rng.random((E, T)).astype(np.float32),
                 [f"p{i}" for i in range(E)], {"how": "random"})


def test_stored_pool_round_trip_and_cache(tmp_path):
    pool = _toy_pool()
    made: list[str] = []

    def make(digest):
        made.append(digest)
        return pool

    spec = {"seed": 1}
    first = cached_pool("toy", str(tmp_path), "train", spec, load=_Pool.load, make=make, describe=lambda p: "x")
    again = cached_pool("toy", str(tmp_path), "train", spec, load=_Pool.load, make=make, describe=lambda p: "x")
    assert first is pool and len(made) == 1 and again is not pool
    np.testing.assert_array_equal(again.obs, pool.obs)
    assert again.policy == pool.policy and again.meta == {"how": "random"}


@pytest.mark.parametrize("damage,needle", [
    (lambda side: side.pop("policy"), "lacks a list of policy"),
    (lambda side: side.update(meta=[1]), "meta is not a mapping"),
    (lambda side: side.update(policy=["only one"]), "disagree in shape"),
])
def test_damaged_pool_sidecars_name_the_file(tmp_path, damage, needle):
    path = _toy_pool().save(tmp_path / "pool.safetensors")
    side = read_json(path.with_suffix(".json"))
    damage(side)
    write_json(path.with_suffix(".json"), side)
    with pytest.raises(DataError, match=needle) as err:
        _Pool.load(path)
    assert "pool." in str(err.value)


def test_non_finite_pool_values_are_refused(tmp_path):
    pool = _toy_pool()
    pool.reward[1, 2] = np.nan
    path = pool.save(tmp_path / "pool.safetensors")
    with pytest.raises(DataError, match=r"non-finite values \(reward\)"):
        _Pool.load(path)


# --- the policy loop -------------------------------------------------------------------------
class _Encoder(nn.Module):
    """Decision tokens: (obs, rtg) -> 2 tokens; action token: the action's embedding."""

    def __init__(self, d: int):
        super().__init__()
        self.obs, self.rtg, self.act = nn.Linear(1, d), nn.Linear(1, d), nn.Embedding(3, d)

    def decision(self, obs: Tensor, rtg: Tensor) -> Tensor:  # (N,), (N,) -> (N, 2, D)
        return torch.stack([self.obs(obs[:, None]), self.rtg(rtg[:, None])], 1)

    def forward(self, batch):  # (N, T) each -> (N, 3T, D): obs, rtg, action per decision
        T = batch["obs"].shape[1]
        per = [torch.cat([self.decision(batch["obs"][:, t], batch["rtg"][:, t]), self.act(batch["act"][:, t])[:, None]], 1)
               for t in range(T)]
        return torch.cat(per, 1)


class _Head(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.out = nn.Linear(d, 3)

    def forward(self, hidden, batch=None):  # the rtg token's hidden state -> 3 logits
        return self.out(hidden if batch is None else hidden[:, 1::3])


class _ToyPolicy(ReturnConditionedPolicy):
    def observe_decision(self, obs, step):
        return {"obs": np.asarray(obs, dtype=np.float32), "rtg": self.rtg.value.copy()}

    def decision_tokens(self, d):
        return self.model.encoder.decision(self.tensor(d["obs"]), self.tensor(d["rtg"])), None

    def read(self, hidden, d, aux):
        return self.model.head(hidden[-1]).argmax(-1).numpy()

    def action_token(self, action, d, aux):
        return self.model.encoder.act(self.tensor(action))

    def reencode(self, history, d):
        past = history[-(self.window - 1):] if self.context == "sliding" and self.window > 1 else history
        if self.context == "sliding" and self.window == 1:
            past = []
        rows = past + [{**d, "act": np.zeros(self.n, dtype=np.int64)}]
        batch = {k: self.tensor(np.stack([r[k] for r in rows], 1)) for k in ("obs", "rtg", "act")}
        return self.model(batch).pred[:, -1].argmax(-1).numpy()

    def record(self, d, action):
        return {**d, "act": action}


def _play(policy, obs, rewards):
    policy.start_episode(obs.shape[0])
    actions = []
    for t in range(obs.shape[1]):
        actions.append(policy.decide(obs[:, t]))
        policy.spend(rewards[:, t])
    return np.stack(actions, 1)


@pytest.mark.parametrize("context,window", [("blocks", 3), ("sliding", 100)])
def test_streaming_decides_like_re_encoding(tiny_student, context, window):
    torch.manual_seed(0)
    d = tiny_student.d_model
    model = NetModel(_Encoder(d), tiny_student, _Head(d)).eval()
    rng = np.random.default_rng(1)
    obs, rewards = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    kw = dict(window=window, return_scale=5.0, target_return=10.0, context=context)
    streamed, reencoded = _ToyPolicy(model, mode="stream", **kw), _ToyPolicy(model, mode="reencode", **kw)
    a, b = _play(streamed, obs, rewards), _play(reencoded, obs, rewards)
    np.testing.assert_array_equal(a, b)
    assert len(set(a.ravel().tolist())) > 1  # the actions depend on the input: the check can fail
    assert len(streamed.history) == (8 % window or window if context == "blocks" else 8)


def test_a_kv_cache_teacher_streams_context_blocks_like_re_encoding(tiny_teacher):
    """The LLM teacher has no recurrent step but a KV-cache decoder: with context blocks it
    streams (mode auto) and decides as re-encoding each block does; a sliding window it re-encodes,
    and refuses to stream, naming why."""
    torch.manual_seed(0)
    d = tiny_teacher.d_model
    model = NetModel(_Encoder(d), tiny_teacher, _Head(d)).eval()
    rng = np.random.default_rng(1)
    obs, rewards = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    kw = dict(window=3, return_scale=5.0, target_return=10.0, context="blocks")
    cached, reencoded = _ToyPolicy(model, **kw), _ToyPolicy(model, mode="reencode", **kw)
    assert cached.stream and not reencoded.stream
    a = _play(cached, obs, rewards)
    np.testing.assert_array_equal(a, _play(reencoded, obs, rewards))
    assert len(set(a.ravel().tolist())) > 1  # the actions depend on the input: the check can fail
    cache = cached.decoder.states()  # the last block (decisions 6 and 7): its 2 x 3 tokens, no more
    assert cache.get_seq_length() == 5  # the block's last action token is never stepped
    sliding = dict(kw, context="sliding")
    assert not _ToyPolicy(model, **sliding).stream
    with pytest.raises(ValueError, match="context blocks only"):
        _ToyPolicy(model, mode="stream", **sliding)


def test_the_decoder_is_reused_across_episodes_until_the_weights_change(tiny_student):
    """A second episode resets the first one's decoder (same decisions as a new policy); a change
    of the weights in place, or another number of streams, builds a new one."""
    torch.manual_seed(0)
    d = tiny_student.d_model
    model = NetModel(_Encoder(d), tiny_student, _Head(d)).eval()
    rng = np.random.default_rng(3)
    obs, rewards = rng.normal(size=(4, 8)), rng.normal(size=(4, 8))
    kw = dict(mode="stream", window=100, return_scale=5.0, target_return=10.0)
    policy = _ToyPolicy(model, **kw)
    first = _play(policy, obs, rewards)
    decoder = policy.decoder
    np.testing.assert_array_equal(_play(policy, obs, rewards), first)
    assert policy.decoder is decoder
    with torch.no_grad():
        for p in tiny_student.parameters():
            p.mul_(-1.5)
    changed = _play(policy, obs, rewards)
    assert policy.decoder is not decoder
    np.testing.assert_array_equal(changed, _play(_ToyPolicy(model, **kw), obs, rewards))
    assert (changed != first).any()  # the new weights decide differently: the check can fail
    decoder = policy.decoder
    _play(policy, obs[:2], rewards[:2])
    assert policy.decoder is not decoder


def test_blocks_restart_the_context():
    """A block's first decision sees nothing of the block before: it is the first decision of a
    fresh episode on the same observation (the return asked for held fixed)."""
    torch.manual_seed(0)
    model = NetModel(_Encoder(8), _GRUBackbone(8), _Head(8)).eval()
    obs = np.random.default_rng(2).normal(size=(64, 6)).astype(np.float32)
    kw = dict(mode="stream", return_scale=1.0, target_return=0.0)
    blocks = _play(_ToyPolicy(model, window=3, context="blocks", **kw), obs, np.zeros((64, 6)))
    fresh = _play(_ToyPolicy(model, window=3, context="blocks", **kw), obs[:, 3:], np.zeros((64, 3)))
    np.testing.assert_array_equal(blocks[:, 3:], fresh)
    sliding = _play(_ToyPolicy(model, window=3, context="sliding", **kw), obs, np.zeros((64, 6)))
    assert (sliding[:, 3:] != fresh).any()  # with the history kept, the decisions differ


class _GRUBackbone(nn.Module):
    """A recurrent backbone with the StreamingBackbone protocol (init_state/step) and no decoder."""

    def __init__(self, d: int):
        super().__init__()
        self.d_model, self.cell = d, nn.GRUCell(d, d)

    def init_state(self, batch: int):
        return torch.zeros(batch, self.d_model)

    def step(self, x, state):
        h = self.cell(x, state)
        return h, h

    def forward(self, x):
        h, out = self.init_state(x.shape[0]), []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            out.append(h)
        return torch.stack(out, 1)


def test_bad_modes_and_contexts_are_named(tiny_student):
    model = NetModel(_Encoder(tiny_student.d_model), tiny_student, _Head(tiny_student.d_model))
    with pytest.raises(ValueError, match="mode 'fast'"):
        _ToyPolicy(model, window=2, return_scale=1.0, target_return=0.0, mode="fast")
    with pytest.raises(ValueError, match="context 'tree'"):
        _ToyPolicy(model, window=2, return_scale=1.0, target_return=0.0, context="tree")
    with pytest.raises(ValueError, match="at least 1 decision"):
        _ToyPolicy(model, window=0, return_scale=1.0, target_return=0.0)
    rnn = NetModel(_Encoder(8), nn.Linear(8, 8), _Head(8))
    with pytest.raises(ValueError, match="no recurrent step"):
        _ToyPolicy(rnn, window=2, return_scale=1.0, target_return=0.0, mode="stream")
