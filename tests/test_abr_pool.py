"""ABR experience pools: what they record, determinism, the safetensors+JSON format and its
errors, and reuse across runs through the task's pool folder."""

import numpy as np
import pytest

from mamba4net.core.errors import DataError
from mamba4net.plugins.abr import pool as pool_mod
from mamba4net.plugins.abr.baselines import BBA, RateBased
from mamba4net.plugins.abr.config import ABRParams
from mamba4net.plugins.abr.pool import ExperiencePool, generate_pool
from mamba4net.plugins.abr.rollout import rollout, summarize
from mamba4net.plugins.abr.task import ABRTask


@pytest.fixture(scope="module")
def task():
    return ABRTask(ABRParams())


def _pool(task, *, seed=0, epsilon=0.5, noise=False):
    return generate_pool(lambda s: task.env("valid", noise=noise, seed=s, limit=4),
                         {"bba": BBA(), "rate_based": RateBased()}, passes=2, epsilon=epsilon, seed=seed,
                         progress=False)


def test_pool_records_episodes(task):
    pool = _pool(task)
    E = 2 * 2 * 4  # passes x policies x traces
    assert pool.states.shape == (E, 47, 6, 6) and pool.actions.shape == pool.rewards.shape == (E, 47)
    assert pool.dones[:, -1].all() and not pool.dones[:, :-1].any()
    assert pool.policy[:8] == ["bba"] * 4 + ["rate_based"] * 4
    assert pool.policy[8:] == ["bba+eps0.5"] * 4 + ["rate_based+eps0.5"] * 4
    assert ((pool.actions >= 0) & (pool.actions < 6)).all()
    # the first pass is the plain policy with no noise: its rewards are the QoE the simulator scores
    bba = summarize(rollout(task.env("valid", limit=4), BBA()))["qoe"]
    assert pool.rewards[:4].mean() == pytest.approx(bba, rel=1e-5)
    # epsilon exploration changed some of the second pass's actions
    assert (pool.actions[8:12] != pool.actions[:4]).any()


def test_pool_is_deterministic(task):
    a, b, c = _pool(task, seed=3, noise=True), _pool(task, seed=3, noise=True), _pool(task, seed=4, noise=True)
    for k in ("states", "actions", "rewards"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    assert not np.array_equal(a.rewards, c.rewards)


def test_save_load_roundtrip_and_errors(task, tmp_path):
    pool = _pool(task, epsilon=0.0)
    path = pool.save(tmp_path / "p.safetensors")
    back = ExperiencePool.load(path)
    for k in ("states", "actions", "rewards", "dones"):
        assert np.array_equal(getattr(back, k), getattr(pool, k))
    assert back.policy == pool.policy and back.trace == pool.trace and back.meta == pool.meta

    sidecar = path.with_suffix(".json")
    sidecar.write_text(sidecar.read_text().replace('"format": 1', '"format": 7'))
    with pytest.raises(DataError, match=r"p\.json.*format 7"):
        ExperiencePool.load(path)
    pool.save(path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match=r"p\.safetensors: damaged"):
        ExperiencePool.load(path)
    pool.rewards[0, 0] = np.nan
    pool.save(path)
    with pytest.raises(DataError, match="non-finite"):
        ExperiencePool.load(path)


def test_task_reuses_a_saved_pool(tmp_path, monkeypatch):
    params = ABRParams(pool_dir=str(tmp_path), pool={"policies": ["bba"], "passes": 1})
    first = ABRTask(params).pool("train")
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].startswith("train-")  # .json + .safetensors

    def fail(*a, **k):
        raise AssertionError("generated again")

    monkeypatch.setattr(pool_mod, "generate_pool", fail)
    again = ABRTask(params).pool("train")  # a new task (a new run): loads from the folder
    assert np.array_equal(again.actions, first.actions)
    # another spec is another pool
    other = ABRTask(ABRParams(pool_dir=str(tmp_path), pool={"policies": ["bba"], "passes": 1, "seed": 9}))
    with pytest.raises(AssertionError, match="generated again"):
        other.pool("train")


def test_best_per_trace_trains_on_each_traces_best_episodes(tmp_path):
    spec = {"policies": ["bba", "rate_based"], "passes": 1}
    full = ABRTask(ABRParams(pool_dir=str(tmp_path), pool=spec))
    best = ABRTask(ABRParams(pool_dir=str(tmp_path), pool=spec, best_per_trace=1))
    pool = full.pool("train")
    returns, traces = pool.episode_returns(), np.asarray(pool.trace)
    keep = best.kept_episodes("train")
    assert len(keep) == len(set(traces)) and len(full.kept_episodes("train")) == len(pool)
    for i in keep:  # each kept episode is its trace's best
        assert returns[i] == returns[traces == traces[i]].max()
    assert len(best.data("train")) < len(full.data("train"))
    assert np.array_equal(best.data("train").actions.numpy(), pool.actions[keep])
    # the target quantile is taken over the episodes trained on
    assert best.target_return == pytest.approx(float(np.quantile(returns[keep], 0.5)))
    assert best.target_return >= full.target_return
    assert len(best.kept_episodes("valid")) == len(best.pool("valid"))  # valid is never filtered
