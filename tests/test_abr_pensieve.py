"""Pensieve baseline: deterministic for a seed, learns on a few synthetic traces, strict params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from mamba4net.plugins.abr.baselines.config import PensieveParams
from mamba4net.plugins.abr.baselines.pensieve import Pensieve, gae
from mamba4net.plugins.abr.rollout import rollout, summarize
from mamba4net.plugins.abr.sim import AbrEnv
from mamba4net.plugins.abr.traces import Trace
from mamba4net.plugins.abr.video import BITRATES_KBPS, CHUNK_S, N_CHUNKS

SIZES = np.asarray([[int(k * 1000 / 8 * CHUNK_S)] * (N_CHUNKS + 1) for k in BITRATES_KBPS], dtype=np.int64)


def _traces(n: int, seed: int = 0) -> list[Trace]:
    """``n`` 400 s traces whose bandwidth alternates every 20 s between 0.2..0.8 and 2.5..5 Mbps."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        low, high = rng.uniform(0.2, 0.8, size=10), rng.uniform(2.5, 5.0, size=10)
        bw = np.repeat(np.stack([low, high], 1).ravel(), 20)
        out.append(Trace(f"t{i}", Path(f"t{i}"), np.arange(len(bw), dtype=np.float64), bw))
    return out


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small(**kw) -> PensieveParams:
    base = dict(hidden=16, envs_per_epoch=8, minibatch=128, ppo_epochs=2, epochs=2, valid_every=1)
    return PensieveParams(**{**base, **kw})


def test_same_seed_same_weights():
    traces = _traces(8)
    models = []
    for _ in range(2):
        m = Pensieve(_small(seed=3, envs_per_epoch=4))
        m.train_on(traces, SIZES, AbrEnv(traces[:2], SIZES), progress=False)
        models.append(m)
    a, b = (m.net.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert models[0].history == models[1].history
    other = Pensieve(_small(seed=4, envs_per_epoch=4, epochs=1))
    other.train_on(traces, SIZES, progress=False)
    assert not all(torch.equal(a[k], v) for k, v in other.net.state_dict().items())


def test_gae_matches_discounted_returns_at_lambda_one():
    r = np.asarray([[1.0, -2.0, 3.0]], dtype=np.float32)
    v = np.asarray([[0.5, 0.1, -0.3]], dtype=np.float32)
    adv = gae(r, v, gamma=0.9, lam=1.0)
    returns = np.asarray([[1 - 2 * 0.9 + 3 * 0.81, -2 + 3 * 0.9, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(adv + v, returns, rtol=1e-6)
    np.testing.assert_allclose(gae(r, v, gamma=0.9, lam=0.0)[0, -1], 3.0 + 0.3, rtol=1e-6)


# Seeds whose untrained (random-init) greedy policy is poor. Over seeds 0..7 this run improved the
# greedy QoE on 7 of 8 (the one exception started at 1.50, above where the short run ended, 1.34);
# from these two it reaches ~1.45 and ~1.65.
@pytest.mark.parametrize("seed", [1, 7])
def test_short_training_beats_untrained_policy(seed):
    traces = _traces(8, seed=seed)
    env = AbrEnv(traces, SIZES)
    m = Pensieve(_small(seed=seed, epochs=15, ppo_epochs=4, valid_every=3, lr_actor=1e-3))
    before = summarize(rollout(env, m))["qoe"]
    m.train_on(traces, SIZES, env, progress=False)
    after = summarize(rollout(env, m))["qoe"]
    assert before < 0 and after > 1.0, (before, after)


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(clip=0.0), dict(gae_lambda=1.5), dict(gamma=0.0),
                                 dict(reward_scale=-1.0), dict(hidden=4), dict(minibatch=0), dict(lr=1e-3)])
def test_bad_params_raise(bad):
    with pytest.raises(pydantic.ValidationError):
        PensieveParams(**bad)
