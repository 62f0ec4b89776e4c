"""CJS: job-file validation and the simulator, with completion times computed by hand."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from mamba4net.core.errors import DataError
from mamba4net.plugins.cjs.config import ClusterParams
from mamba4net.plugins.cjs.durations import executor_key, sample_duration
from mamba4net.plugins.cjs.jobs import JobLibrary, constant_job, job_sequence, load_job
from mamba4net.plugins.cjs.schedulers import fair, fifo, run_episode, srwf
from mamba4net.plugins.cjs.sim import ClusterSim


def _write(tmp_path, obj, name="query_1.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def _good():
    return {"query": 1, "scale": "2g", "num_stages": 2, "adj_mat": [[0, 1], [0, 0]],
            "task_duration": {str(s): {"first_wave": {"5": [100.0, 120.0]}, "rest_wave": {"5": [80.0]},
                                       "fresh_durations": {"5": [150.0]}} for s in range(2)}}


# ---- loading and validation ----

def test_real_job_file_loads():
    spec = load_job(ClusterParams().tpch_dir / "2g" / "query_2.json")
    assert spec.num_stages == 18 and all(s.num_tasks >= 1 for s in spec.stages)
    assert spec.stages[0].children == (2, 9)  # adj_mat row 0
    assert all(s.keys == tuple(sorted(s.keys)) for s in spec.stages)


def test_fresh_samples_removed_from_first_wave(tmp_path):
    raw = _good()
    raw["task_duration"]["0"]["first_wave"]["5"] = [150.0, 100.0, 150.0]
    raw["task_duration"]["0"]["rest_wave"]["5"] = []
    st = load_job(_write(tmp_path, raw)).stages[0]
    assert st.num_tasks == 3
    assert sorted(st.waves["first_wave"][5]) == [100.0, 150.0]  # one 150 was the fresh sample


@pytest.mark.parametrize("mutate, needle", [
    (lambda r: r["adj_mat"][1].__setitem__(0, 1), "cycle"),
    (lambda r: r["adj_mat"][0].__setitem__(0, 1), "cycle"),
    (lambda r: r["task_duration"]["1"].pop("rest_wave"), "missing durations 'rest_wave'"),
    (lambda r: r["task_duration"].pop("1"), "missing stages ['1']"),
    (lambda r: r["task_duration"]["0"]["first_wave"].__setitem__("5", []) or
     r["task_duration"]["0"]["rest_wave"].__setitem__("5", []), "has no tasks"),
    (lambda r: r["task_duration"]["0"]["first_wave"]["5"].append(float("nan")), "finite"),
    (lambda r: r["adj_mat"].append([0, 0]), "square"),
    (lambda r: r.pop("adj_mat"), "missing key 'adj_mat'"),
])
def test_malformed_job_is_one_line_error_naming_file(tmp_path, mutate, needle):
    raw = _good()
    mutate(raw)
    path = _write(tmp_path, raw)
    with pytest.raises(DataError) as err:
        load_job(path)
    msg = str(err.value)
    assert str(path) in msg and needle in msg and "\n" not in msg


def test_missing_first_and_fresh_at_a_key_is_rejected(tmp_path):
    raw = _good()
    for w in ("first_wave", "rest_wave", "fresh_durations"):
        raw["task_duration"]["1"][w]["2"] = [50.0] if w == "rest_wave" else []
    with pytest.raises(DataError, match="missing durations.*at 2 executors"):
        load_job(_write(tmp_path, raw))


def test_bad_json_names_file(tmp_path):
    path = _write(tmp_path, "{not json")
    with pytest.raises(DataError, match=f"{path}: not valid JSON"):
        load_job(path)


def test_job_sequence_is_seeded_poisson():
    lib = JobLibrary(ClusterParams().tpch_dir)
    a = job_sequence(lib, 3, 6, 4e-5, ["2g", "5g"], [1, 2, 3])
    b = job_sequence(lib, 3, 6, 4e-5, ["2g", "5g"], [1, 2, 3])
    assert [(t, j.name) for t, j in a] == [(t, j.name) for t, j in b]
    assert a[0][0] == 0.0 and all(a[i][0] < a[i + 1][0] for i in range(5))
    assert {j.name.split("-")[1] for _, j in a} <= {"2g", "5g"}


# ---- duration model ----

def test_executor_key_nearest_bracket():
    rng = random.Random(0)
    keys = (5, 10, 20)
    assert executor_key(keys, 1, rng) == 5 and executor_key(keys, 50, rng) == 20
    assert executor_key(keys, 10, rng) == 10
    draws = [executor_key(keys, 18, rng) for _ in range(4000)]
    assert set(draws) == {10, 20}
    assert 0.75 < draws.count(20) / len(draws) < 0.85  # 18 is 80% of the way from 10 to 20


def test_fresh_executor_without_fresh_samples_pays_warmup():
    job = constant_job("w", [1], [400.0], fresh=False)
    st = job.stages[0]
    rng = random.Random(0)
    assert sample_duration(st, "fresh", 1, rng, warmup_delay=1000.0) == 1400.0
    assert sample_duration(st, "first", 1, rng, warmup_delay=1000.0) == 400.0


# ---- exact completion times (durations are constant, so every number is hand-computable) ----

def test_chain():
    # A(2 tasks x 10 s) -> B(1 x 5 s) -> C(3 x 2 s); 2 executors, 1 s moving delay.
    # 0: both executors sent to A, arrive 1 s, A runs 1-11 s. 11: B on one executor (local, no
    # delay) 11-16. 16: C on both, 16-18; one goes on with the third task 18-20 -> JCT 20 s.
    job = constant_job("chain", [2, 1, 3], [10000, 5000, 2000], [(0, 1), (1, 2)])
    r = run_episode(fifo, ClusterSim(2, moving_delay=1000), [(0.0, job)])
    assert r.jct_s == [20.0] and r.makespan_s == 20.0
    assert r.utilisation == pytest.approx((2 * 10 + 5 + 3 * 2) / (2 * 20))
    assert r.decisions == 3


def test_fork_join():
    # 0 -> {1, 2} -> 3. S0 (1 x 2 s): one executor moves (1 s), runs 1-3. 3: S1 (2 x 3 s) gets the
    # local executor 3-6 and the second (moves 3-4) 4-7. 6: S2 (1 x 6 s) on the free local one,
    # 6-12. 12: S3 (1 x 1 s) 12-13 -> JCT 13 s.
    job = constant_job("fj", [1, 2, 1, 1], [2000, 3000, 6000, 1000], [(0, 1), (0, 2), (1, 3), (2, 3)])
    r = run_episode(fifo, ClusterSim(2, moving_delay=1000), [(0.0, job)])
    assert r.jct_s == [13.0]
    assert r.utilisation == pytest.approx((2 + 6 + 6 + 1) / (2 * 13))


def test_two_competing_jobs():
    # 4 executors, 1 s moving delay; at t=0 a big job (8 x 10 s) and a small one (2 x 1 s).
    # FIFO: all 4 to the big job, 1-11-21 s; then the small one moves in 21-22, runs 22-23.
    # Fair (share 2 each): big 2 executors 1-11-21, small 2 executors 1-2 (JCT 2); at 2 s the two
    # freed executors join the big job (arrive 3 s, 3-13-23) -> big JCT 23.
    big, small = constant_job("big", [8], [10000]), constant_job("small", [2], [1000])
    jobs = [(0.0, big), (0.0, small)]
    sim = ClusterSim(4, moving_delay=1000)
    assert run_episode(fifo, sim, jobs).jct_s == [21.0, 23.0]
    assert run_episode(fair, sim, jobs).jct_s == [23.0, 2.0]
    assert run_episode(srwf, sim, jobs).jct_s == [23.0, 2.0]  # the small job first, then the big


def test_late_arrival_and_warmup():
    # 1 executor, no moving delay, no fresh samples -> every first task on a job pays 1 s warm-up.
    # Job 0 (2 x 3 s) 0-4 (fresh: 3+1) then 4-7 (rest). Job 1 arrives at 5 s, waits; 7-9 (1+1).
    a, b = constant_job("a", [2], [3000], fresh=False), constant_job("b", [1], [1000], fresh=False)
    r = run_episode(fifo, ClusterSim(1, moving_delay=0, warmup_delay=1000), [(0.0, a), (5000.0, b)])
    assert r.jct_s == [7.0, 4.0] and r.makespan_s == 9.0


def test_limit_caps_executors():
    # A limit of 1 keeps a 4-task stage on one executor although 3 more are free... until the
    # scheduler is asked again, which it is (free executors, runnable stage): limit 1 every time
    # still sends one executor per decision (at least one always goes).
    job = constant_job("j", [4], [1000])
    sim = ClusterSim(4, moving_delay=0)
    sim.reset([(0.0, job)])
    stage = sim.runnable_stages()[0]
    sim.step(stage, 1)
    assert stage.moving_in + stage.started == 1 and sim.num_free == 3


def test_real_episode_is_deterministic_and_fair_beats_fifo():
    p = ClusterParams()
    lib = JobLibrary(p.tpch_dir)
    jobs = job_sequence(lib, 0, 12, 4e-5, p.scales, p.queries)
    sim = ClusterSim(p.num_executors, p.moving_delay, p.warmup_delay)
    a, b = run_episode(fifo, sim, jobs, seed=1), run_episode(fifo, sim, jobs, seed=1)
    assert a.jct_s == b.jct_s
    f = run_episode(fair, sim, jobs, seed=1)
    assert len(f.jct_s) == 12 and 0 < f.utilisation <= 1
    assert f.avg_jct_s < a.avg_jct_s


def test_limit_above_held_keeps_the_executor_a_step_sends_at_work():
    # 2 executors, one stage of 4 tasks x 1 s, no moving delay; the scheduler always asks for limit 1.
    # As asked: decision 1 sends A, decision 2 (job holds 1, limit 1) still sends B; at 1 s both are
    # over the limit and wait idle at the job, decision 3 restarts them (tasks 3-4, 1-2 s): 3 decisions.
    # Decima's valid limits: decision 2's limit is raised to 2 (held + 1), so at 1 s both go on: 2.
    job = constant_job("j", [4], [1000])
    always_one = lambda sim: (sim.runnable_stages()[0], 1)  # noqa: E731
    plain = run_episode(always_one, ClusterSim(2, moving_delay=0), [(0.0, job)])
    raised = run_episode(always_one, ClusterSim(2, moving_delay=0, limit_above_held=True), [(0.0, job)])
    assert (plain.decisions, plain.jct_s) == (3, [2.0])
    assert (raised.decisions, raised.jct_s) == (2, [2.0])


def test_min_limit_is_held_plus_one_capped_at_the_cluster():
    job = constant_job("j", [8], [1000])
    for above, expect in ((False, [1, 1, 1]), (True, [1, 3, 4])):
        sim = ClusterSim(4, moving_delay=0, limit_above_held=above)
        sim.reset([(0.0, job)])
        stage = sim.runnable_stages()[0]
        got = [sim.min_limit(stage.job)]
        sim.step(stage, 2)  # two executors go (limit 2), the job holds 2
        got.append(sim.min_limit(stage.job))
        sim.step(stage, 1)  # one more goes whatever the limit: the job holds 3, one executor is left
        got.append(sim.min_limit(stage.job))
        assert got == expect and sim.num_free == 1
        assert stage.job.limit == (3 if above else 1)
    holds_all = SimpleNamespace(num_executors=4)
    assert ClusterSim(4, limit_above_held=True).min_limit(holds_all) == 4
