"""CJS sequence policies: experience pool, windows, streaming == re-encoding, live == batch
encoding of a decision, evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mamba4net.core.errors import DataError
from mamba4net.core.model import NetModel
from mamba4net.core.protocols import ModelOutput
from mamba4net.core.stats import mean_interval
from mamba4net.plugins.cjs.baselines import RuleBaseline
from mamba4net.plugins.cjs.config import CJSParams, ClusterParams, PoolParams
from mamba4net.plugins.cjs.evaluation import episode_jobs, make_sim
from mamba4net.plugins.cjs.graph import JobSetCache, job_set, observe
from mamba4net.plugins.cjs.policy import SequenceScheduler, can_stream
from mamba4net.plugins.cjs.pool import ExperiencePool, record_episode
from mamba4net.plugins.cjs.task import CJSTask
from mamba4net.plugins.cjs.tokens import CJSKDLoss, CJSPolicyHead, CJSTokenEncoder
from mamba4net.plugins.cjs.windows import Decision, assemble, candidates

# a small cluster and small jobs keep every episode to a few hundred decisions
SMALL = dict(num_executors=6, job_arrival_rate=1e-4, scales=["2g"], queries=[1, 3, 6, 12, 14])


def _task(tmp_path, **kw) -> CJSTask:
    params = dict(cluster=ClusterParams(**SMALL), pool=PoolParams(policies=["fifo", "fair"], episodes=2, jobs=3),
                  pool_dir=str(tmp_path / "pools"), window=4, max_stages=4, limit_levels=3, eval_jobs=2,
                  eval_episodes=1, valid_episodes=1)
    return CJSTask(CJSParams(**{**params, **kw}))


def _model(d: int, backbone, task: CJSTask) -> NetModel:
    p = task.params
    enc = CJSTokenEncoder(d, hidden=8, rounds=2, window=p.window, limit_levels=p.limit_levels)
    head = CJSPolicyHead(d, max_stages=p.max_stages, limit_levels=p.limit_levels, hidden=8)
    return NetModel(enc, backbone, head).eval()


def test_pool_round_trip_and_cache(tmp_path):
    task = _task(tmp_path)
    pool = task.pool("train")
    assert pool.num_episodes == 4 and pool.policy == ["fifo", "fair", "fifo", "fair"]
    assert pool.seed[0] == pool.seed[1] != pool.seed[2]  # both schedulers face the same sequence
    # the rewards sum to minus the total JCT of each episode
    np.testing.assert_allclose(-pool.episode_returns(), np.asarray(pool.avg_jct_s) * np.asarray(pool.jobs), rtol=1e-4)
    files = sorted((tmp_path / "pools").iterdir())
    assert [f.suffix for f in files] == [".json", ".safetensors"]
    again = ExperiencePool.load(files[1])
    for k in ExperiencePool.ARRAYS:
        np.testing.assert_array_equal(getattr(again, k), getattr(pool, k))
    assert again.policy == pool.policy and again.meta == pool.meta
    reused = _task(tmp_path).pool("train")  # a second task finds the cached file
    np.testing.assert_array_equal(reused.reward, pool.reward)
    assert len(list((tmp_path / "pools").iterdir())) == 2


def test_a_trained_decima_fills_the_pool_beside_the_rules(tmp_path):
    from mamba4net.plugins.cjs.config import DecimaParams
    from mamba4net.plugins.cjs.decima import DecimaBaseline

    decima = DecimaParams(iterations=1, rollouts=2, train_jobs=2, imitate_episodes=1, imitate_steps=2,
                          valid_every=1, valid_episodes=1, budget_s=600.0)
    task = _task(tmp_path, pool=PoolParams(policies=["fair", "decima"], episodes=1, jobs=3, decima=decima))
    pool = task.pool("train")
    assert pool.policy == ["fair", "decima"] and task._pool_spec("train")["decima"]["iterations"] == 1
    # the decima episode is the trained scheduler's own: the same JCT when it plays that sequence again
    again = DecimaBaseline(decima, task.params.cluster)
    again.fit(task)
    seq = episode_jobs(task.params.cluster, task.library, pool.seed[1], 3)
    replay = record_episode(make_sim(task.params.cluster), again, seq, pool.seed[1], task.limits)
    assert replay["avg_jct_s"] == pytest.approx(pool.avg_jct_s[1])


def test_corrupt_pool_files_name_the_file(tmp_path):
    task = _task(tmp_path)
    task.pool("train")
    tensors = next((tmp_path / "pools").glob("*.safetensors"))
    side = tensors.with_suffix(".json")
    good = tensors.read_bytes()
    tensors.write_bytes(b"garbage" * 10)
    with pytest.raises(DataError) as err:
        ExperiencePool.load(tensors)
    assert str(tensors) in str(err.value) and "\n" not in str(err.value)
    tensors.write_bytes(good)
    side.write_text("{not json")
    with pytest.raises(DataError, match=str(side)):
        ExperiencePool.load(tensors)


@pytest.mark.parametrize("key, value, needle", [
    ("level", -1, "negative limit levels"),
    ("edge_index", 10_000, "edges point outside"),
    ("done", "flip", "done flags"),
])
def test_inconsistent_pool_arrays_are_rejected(tmp_path, key, value, needle):
    import dataclasses

    pool = _task(tmp_path).pool("train")
    arr = getattr(pool, key).copy()
    if value == "flip":
        arr[0] = not arr[0]
    else:
        arr.flat[0] = value
    bad = dataclasses.replace(pool, **{key: arr}).save(tmp_path / "bad.safetensors")
    with pytest.raises(DataError, match=f"bad.safetensors: .*{needle}"):
        ExperiencePool.load(bad)


def test_candidates_put_each_jobs_first_stage_first():
    mask = np.array([0, 1, 1, 0, 1, 1, 1], dtype=bool)
    node_job = np.array([0, 0, 0, 1, 1, 2, 2])
    assert candidates(mask, node_job, 10).tolist() == [1, 4, 5, 2, 6]
    assert candidates(mask, node_job, 2).tolist() == [1, 4]


def test_windows_shapes_and_returns(tmp_path):
    task = _task(tmp_path)
    data, pool, W, K = task.data("train"), task.pool("train"), 4, 4
    sizes = np.diff(pool.episode_ptr)
    assert len(data) == int(sum(-(-s // W) for s in sizes))
    b = data.batch(torch.arange(len(data)))
    B = len(data)
    assert b["dec_mask"].shape == (B, W) and b["cand_mask"].shape == (B, W, K)
    assert int(b["dec_mask"].sum()) == pool.num_decisions
    assert b["dec_feat"].shape == (pool.num_decisions, 2)
    # the first window of episode 0 starts with the whole episode's return
    np.testing.assert_allclose(b["rtg"][0, 0].item(), pool.episode_returns()[0] / task.params.return_scale, rtol=1e-4)
    assert b["step"][0].tolist() == list(range(W))
    # taken actions are candidates (rule schedulers pick a job's first runnable stage)
    taken = b["action"][b["dec_mask"]]
    assert (taken >= 0).float().mean() == data.action_coverage
    hit = b["dec_mask"] & (b["action"] >= 0)
    assert b["cand_mask"].gather(2, b["action"].clamp_min(0).unsqueeze(-1)).squeeze(-1)[hit].all()
    # token positions: k stage tokens, then executor, then action; packed without gaps
    k = b["cand_mask"].sum(-1)
    assert torch.equal(b["exec_pos"][b["dec_mask"]], (b["stage_pos"][..., 0] + k)[b["dec_mask"]])
    assert torch.equal(b["length"], ((k + 2) * b["dec_mask"]).sum(1))


def test_model_pred_loss_and_kd(tmp_path, tiny_student):
    task = _task(tmp_path)
    torch.manual_seed(0)
    model = _model(tiny_student.d_model, tiny_student, task)
    batch = task.data("train").batch(torch.arange(3))
    out = model(batch)
    assert out.pred.shape == (3, 4, 4 + 3)
    loss = task.loss(out, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    kd = CJSKDLoss(4)
    assert kd(out, ModelOutput(out.pred.detach()), batch).abs().item() < 1e-6
    assert kd(out, ModelOutput(out.pred.detach() + torch.randn_like(out.pred)), batch).item() > 0


def _play(scheduler, cluster, seed=200_000, jobs=2, max_decisions=14):
    sim = make_sim(cluster)
    from mamba4net.plugins.cjs.jobs import JobLibrary

    sim.reset(episode_jobs(cluster, JobLibrary(cluster.tpch_dir), seed, jobs), seed=seed)
    picks = []
    while not sim.done and len(picks) < max_decisions:
        stage, limit = scheduler(sim)
        picks.append((stage.job.id, stage.spec.index, limit))
        sim.step(stage, limit)
    return picks, sim.time


def test_streaming_student_decides_like_re_encoding(tmp_path, tiny_student):
    """One recurrent step per token gives the same decisions as re-running the block's history."""
    task = _task(tmp_path)
    torch.manual_seed(1)
    model = _model(tiny_student.d_model, tiny_student, task)
    assert can_stream(model)
    kw = dict(window=4, max_stages=4, limits=task.limits, return_scale=100.0, target_return=-60.0)
    stream = SequenceScheduler(model, mode="stream", **kw)
    reenc = SequenceScheduler(model, mode="reencode", **kw)
    a, time_a = _play(stream, task.params.cluster)
    b, time_b = _play(reenc, task.params.cluster)
    assert len(a) == 14  # three context blocks and a half
    assert a == b and time_a == time_b
    assert len({p[:2] for p in a}) > 1  # it chose different stages: the equality is not trivial


def test_plain_message_passing_is_torch_geometrics_bit_for_bit(tmp_path):
    """The live path's message passing (indices kept by the job set) sums exactly what
    torch_geometric's propagate sums on the same edges."""
    from mamba4net.plugins.cjs.encoder import ChildrenToParent

    task = _task(tmp_path)
    sim = make_sim(task.params.cluster)
    sim.reset(episode_jobs(task.params.cluster, task.library, 7, 3), seed=7)
    while len(sim.jobs) < 2:
        sim.step(sim.runnable_stages()[0], 1)
    structure = job_set(sim.jobs)
    assert structure.edge_index.shape[1] > 2  # several jobs' DAGs in one graph
    torch.manual_seed(0)
    passing = ChildrenToParent(8)
    h = torch.randn(structure.node_job.shape[0], 8)
    rows = structure.parent.view(-1, 1).expand(-1, 8)
    assert torch.equal(passing.plain(h, structure.child, rows), passing(h, structure.edge_index))


def _episode_states(task, seed=200_000, jobs=3):
    """Every scheduling event of one fair episode: (the sim at that event, its index)."""
    sim = make_sim(task.params.cluster)
    sim.reset(episode_jobs(task.params.cluster, task.library, seed, jobs), seed=seed)
    fair, n = RuleBaseline("fair"), 0
    while not sim.done:
        yield sim, n
        sim.step(*fair(sim))
        n += 1


def test_live_tokens_equal_the_batch_path_at_every_decision(tmp_path, tiny_student):
    """live_tokens (cached job-set structure, no batch, no torch_geometric) gives the tokens and
    candidate features of decision_tokens on a one-decision batch, at every event of an episode
    whose jobs arrive and complete."""
    task = _task(tmp_path)
    torch.manual_seed(2)
    enc = _model(tiny_student.d_model, tiny_student, task).encoder
    cache, worst, n_jobs = JobSetCache(), 0.0, set()
    with torch.no_grad():
        for sim, n in _episode_states(task):
            structure = cache(sim.jobs)
            ob = observe(sim, structure)
            cand = candidates(ob.mask.numpy(), ob.node_job.numpy(), 4)
            rtg, step = -0.37 * n, n % 4
            d = Decision(ob.x, ob.edge_index, ob.node_job, cand, rtg, int(cand[0]), 0, step)
            full_tokens, full_feats = enc.decision_tokens(assemble([[d]], 4, 4))
            tokens, feats = enc.live_tokens(ob.x, structure, torch.from_numpy(cand), rtg, step)
            assert tokens.shape == full_tokens.shape == (len(cand) + 1, tiny_student.d_model)
            worst = max(worst, float((tokens - full_tokens).abs().max()), float((feats - full_feats).abs().max()))
            n_jobs.add(len(sim.jobs))
    assert worst <= 1e-6
    assert n >= 20 and len(n_jobs) >= 2  # many events, and the job set changed along the way


def test_live_and_batch_encoding_schedule_identically(tmp_path, tiny_student):
    """The default (live) streaming scheduler and the batch-encoding one take the same decisions
    over a whole episode, its jobs arriving and completing."""
    task = _task(tmp_path)
    torch.manual_seed(3)
    model = _model(tiny_student.d_model, tiny_student, task)
    kw = dict(window=4, max_stages=4, limits=task.limits, return_scale=100.0, target_return=-60.0, mode="stream")
    live = SequenceScheduler(model, **kw)
    a, time_a = _play(live, task.params.cluster, jobs=3, max_decisions=10_000)
    b, time_b = _play(SequenceScheduler(model, encoding="batch", **kw), task.params.cluster, jobs=3,
                      max_decisions=10_000)
    assert a == b and time_a == time_b
    assert len(a) > 20 and len({p[:2] for p in a}) > 3 and len({p[2] for p in a}) > 1  # not a trivial episode
    assert 1 < live.job_sets.builds < len(a) / 4  # the structure was reused between arrivals/completions
    with pytest.raises(ValueError, match="live or batch"):
        SequenceScheduler(model, encoding="incremental", **kw)


def test_job_set_structure_is_rebuilt_only_when_the_active_jobs_change(tmp_path):
    """The cache rebuilds exactly at the events whose active jobs differ from the previous
    event's, and what it returns is always the structure of the jobs active now."""
    task = _task(tmp_path)
    cache, last_ids, changes = JobSetCache(), None, 0
    for sim, n in _episode_states(task):
        ids = [j.id for j in sim.jobs]
        changes += ids != last_ids
        last_ids = ids
        structure, fresh = cache(sim.jobs), job_set(sim.jobs)
        assert cache.builds == changes, n
        assert list(structure.jobs) == sim.jobs
        assert torch.equal(structure.edge_index, fresh.edge_index) and torch.equal(structure.node_job, fresh.node_job)
    assert 3 <= changes < n / 4  # 3 arrivals at least, and far fewer changes than decisions


def test_teacher_streams_its_blocks_with_a_kv_cache_like_re_encoding(tmp_path, tiny_teacher):
    """The LLM teacher has no recurrent step; CJS's context blocks let it decide from a KV cache of
    the block (live encoding of the newest decision only) with the decisions of re-encoding."""
    task = _task(tmp_path)
    torch.manual_seed(1)
    model = _model(tiny_teacher.d_model, tiny_teacher, task)
    assert not can_stream(model)
    kw = dict(window=4, max_stages=4, limits=task.limits, return_scale=100.0, target_return=-60.0)
    cached = SequenceScheduler(model, **kw)  # mode auto
    assert cached.stream and cached.live
    a, time_a = _play(cached, task.params.cluster, jobs=3, max_decisions=10_000)
    b, time_b = _play(SequenceScheduler(model, mode="reencode", **kw), task.params.cluster, jobs=3,
                      max_decisions=10_000)
    assert a == b and time_a == time_b
    assert len(a) > 20 and len({p[:2] for p in a}) > 3  # a whole episode of varied decisions


def test_evaluate_rule_baseline_and_tiny_model(tmp_path, tiny_student):
    task = _task(tmp_path, eval_jobs=1)
    fair = task.evaluate(RuleBaseline("fair"), "test")
    assert fair["avg_jct_s"] > 0 and len(fair["details"]["jct_s"]) == 1
    assert {"makespan_s", "utilisation", "decision_ms"} <= set(fair)
    again = task.evaluate(RuleBaseline("fair"), "test")
    assert again["avg_jct_s"] == fair["avg_jct_s"]  # seeded: same sequences, same draws
    three = _task(tmp_path, eval_jobs=4).evaluate(RuleBaseline("fair"), "test")  # 4 jobs x 3 episodes
    assert three["avg_jct_s_ci95"] == pytest.approx(mean_interval(three["details"]["jct_s"])[1])
    assert three["avg_jct_s_ci95"] > 0 and fair["avg_jct_s_ci95"] >= 0
    torch.manual_seed(0)
    model = _model(tiny_student.d_model, tiny_student, task)
    scores = task.evaluate(model, "valid")
    assert scores["avg_jct_s"] > 0 and "details" not in scores and scores["decision_ms"] > 0
    assert task.figures({"fair": fair["details"]}, tmp_path) == [
        {"title": "Job completion time per job (CDF)", "file": "cjs_jct_cdf.png"}]
    assert (tmp_path / "cjs_jct_cdf.png").stat().st_size > 0


def test_components_are_registered_and_fit_together(tmp_path, m4n_registry, tiny_student):
    task = m4n_registry.get("tasks", "cjs").build({
        "cluster": SMALL, "pool": {"policies": ["srwf"], "episodes": 1, "jobs": 2},
        "pool_dir": str(tmp_path), "window": 4, "max_stages": 4, "limit_levels": 3})
    assert task.metric == "avg_jct_s" and not task.higher_is_better
    assert task.default_baselines == ["fifo", "fair", "srwf", "decima"]
    d = tiny_student.d_model
    enc = m4n_registry.get("encoders", task.default_encoder).build({"hidden": 8, "rounds": 1}, task=task, d_model=d)
    head = m4n_registry.get("heads", task.default_head).build({"hidden": 8}, task=task, d_model=d)
    kd = m4n_registry.get("losses", "cjs_kd").build({"temperature": 2.0}, task=task)
    batch = task.data("train").batch(torch.arange(2))
    out = NetModel(enc, tiny_student, head)(batch)
    assert torch.isfinite(kd(out, ModelOutput(out.pred.detach() * 2), batch))
    assert torch.isfinite(task.loss(out, batch))


def test_valid_jobs_sizes_the_valid_sequences_and_the_asked_return(tmp_path):
    task = _task(tmp_path, eval_jobs=4, valid_jobs=2, target_return=-40.0)
    assert (task.jobs("valid"), task.jobs("test"), task.jobs("train")) == (2, 4, 4)
    assert task.evaluate(RuleBaseline("fair"), "valid")["jobs"] == 2
    assert task.evaluate(RuleBaseline("fair"), "test")["jobs"] == 4
    assert task.target_return() == -40.0 and task.target_return(2) == -20.0  # given for eval_jobs jobs
    assert task.pool("valid").jobs == [2]  # the valid split's windows come from sequences of that size
    learned = _task(tmp_path, eval_jobs=4, valid_jobs=2)  # from the pool's per-job returns
    assert learned.target_return(2) == pytest.approx(learned.target_return() / 2)
    assert _task(tmp_path, eval_jobs=3).jobs("valid") == 3  # default: eval_jobs


# ---- Decima's valid limits (cluster.limit_above_held) ----

def _limits_and_floors(scheduler, cluster, seed=200_000, jobs=3):
    """Every decision's (limit asked, the job's executors) over one episode."""
    from mamba4net.plugins.cjs.jobs import JobLibrary

    sim = make_sim(cluster)
    sim.reset(episode_jobs(cluster, JobLibrary(cluster.tpch_dir), seed, jobs), seed=seed)
    out = []
    while not sim.done:
        stage, limit = scheduler(sim)
        out.append((limit, stage.job.num_executors))
        sim.step(stage, limit)
    return out


def _below(pairs, n):
    """Decisions whose limit the simulator would raise (at or below what a job holds, below N)."""
    return sum(limit < min(held + 1, n) for limit, held in pairs)


def test_pool_records_the_level_the_simulator_applies(tmp_path):
    for above in (False, True):
        task = _task(tmp_path / str(above), cluster=ClusterParams(**SMALL, limit_above_held=above),
                     pool=PoolParams(policies=["fair"], episodes=2, jobs=3))
        pool = task.pool("train")
        n = task.params.cluster.num_executors
        held = np.rint(pool.x[pool.node_ptr[:-1] + pool.action_node, 4] * n).astype(int)  # feature 4: held / N
        below = int((np.asarray(task.limits)[pool.level] < np.minimum(held + 1, n)).sum())
        # fair's equal share is often below what a job holds; under the option it is recorded raised
        assert (below > 0) if not above else (below == 0)


def test_sequence_policy_picks_only_levels_the_simulator_applies(tmp_path, tiny_student):
    task = _task(tmp_path)
    torch.manual_seed(1)
    model = _model(tiny_student.d_model, tiny_student, task)
    kw = dict(window=4, max_stages=4, limits=task.limits, return_scale=100.0, target_return=-60.0)
    plain, above = task.params.cluster, ClusterParams(**SMALL, limit_above_held=True)
    n = plain.num_executors
    assert _below(_limits_and_floors(SequenceScheduler(model, mode="stream", **kw), plain), n) > 0  # the mask bites
    masked = _limits_and_floors(SequenceScheduler(model, mode="stream", **kw), above)
    assert _below(masked, n) == 0
    # under the mask, streaming still decides exactly as re-encoding the block
    assert _play(SequenceScheduler(model, mode="stream", **kw), above) == \
        _play(SequenceScheduler(model, mode="reencode", **kw), above)


def test_decima_trains_and_acts_within_the_valid_limits(tmp_path):
    from mamba4net.plugins.cjs.config import DecimaParams
    from mamba4net.plugins.cjs.decima import DecimaBaseline

    above = ClusterParams(**SMALL, limit_above_held=True)
    decima = DecimaBaseline(DecimaParams(iterations=2, rollouts=2, train_jobs=2, imitate_episodes=1, imitate_steps=2,
                                         valid_every=1, valid_episodes=1, budget_s=600.0, limit_levels=3), above)
    decima.fit()
    losses = [row["loss"] for row in decima.fit_info["history"] if "loss" in row]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert _below(_limits_and_floors(decima, above), above.num_executors) == 0


def test_pool_key_names_the_valid_limits_only_when_they_are_on(tmp_path):
    """Pools made before the option keep their keys: the field enters the spec only when on."""
    off = _task(tmp_path)._pool_spec("train")["cluster"]
    on = _task(tmp_path, cluster=ClusterParams(**SMALL, limit_above_held=True))._pool_spec("train")["cluster"]
    assert "limit_above_held" not in off and on["limit_above_held"] is True


def test_decima_limit_log_probs_renormalise_over_the_valid_levels():
    from mamba4net.plugins.cjs.decima import DecimaBaseline

    limits = torch.tensor([2, 4, 6])
    logits = torch.tensor([[0.3, -1.0, 2.0], [1.0, 0.5, -0.2]], requires_grad=True)
    logp = torch.log_softmax(logits, -1)
    out = DecimaBaseline._masked(logp, torch.tensor([3, 1]), limits)  # row 0: level 0 (limit 2) invalid
    expect0 = torch.log_softmax(logits[0, 1:], -1)
    assert torch.isneginf(out[0, 0]) and torch.allclose(out[0, 1:], expect0)
    assert torch.allclose(out[1], logp[1])  # every level valid: unchanged
    out[0, 1:].sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert DecimaBaseline._masked(logp, torch.tensor([1, 1]), limits) is logp  # nothing masked: the same tensor
