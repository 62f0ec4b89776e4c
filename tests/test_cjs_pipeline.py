"""CJS at tiny scale: the Decima baseline's budget and determinism, and the real CLI end to end
(pool, teacher, streaming student, baselines, keep_best, JCT CDF, report)."""

import json
import subprocess
import sys
import time

import yaml

from mamba4net.plugins.cjs.config import ClusterParams, DecimaParams
from mamba4net.plugins.cjs.decima import DecimaBaseline
from mamba4net.plugins.cjs.evaluation import evaluate_scheduler
from mamba4net.testing.toy import tiny_pipeline_config

SMALL = dict(num_executors=6, job_arrival_rate=1e-4, scales=["2g"], queries=[1, 3, 6, 12, 14])


def _decima(**kw):
    params = DecimaParams(**{"iterations": 3, "rollouts": 2, "train_jobs": 2, "imitate_episodes": 1,
                             "imitate_steps": 3, "imitate_batch": 16, "valid_every": 1, "valid_episodes": 1,
                             "hidden": 8, "rounds": 1, **kw})
    return DecimaBaseline(params, ClusterParams(**SMALL))


def test_decima_trains_deterministically_within_budget():
    a, b = _decima(), _decima()
    a.fit()
    b.fit()
    assert a.fit_info["iterations"] == 3 and a.fit_info["history"][0]["imitate_steps"] == 3
    for k, v in a.state_dict().items():
        assert (v == b.state_dict()[k]).all(), k
    jct = evaluate_scheduler(a, a.cluster, "test", 1, num_jobs=2)["avg_jct_s"]
    assert jct > 0 and jct == evaluate_scheduler(b, b.cluster, "test", 1, num_jobs=2)["avg_jct_s"]
    # a wall-clock budget ends training early, after at least one iteration
    slow = _decima(iterations=999, imitate=None)
    t0 = time.perf_counter()
    slow.fit(budget=1.0)
    assert 1 <= slow.fit_info["iterations"] < 999 and time.perf_counter() - t0 < 30


def test_cjs_cli_end_to_end(tmp_path):
    train = {"steps": 6, "batch_size": 4, "lr": 3e-3, "warmup_steps": 1, "log_every": 2,
             "checkpoint_every": 3, "eval_every": 3, "keep_best": True}
    cfg = tiny_pipeline_config(
        name="cjs-tiny",
        task={"name": "cjs", "cluster": SMALL, "pool": {"policies": ["fifo", "fair"], "episodes": 1, "jobs": 3},
              "pool_dir": str(tmp_path / "pools"), "window": 4, "max_stages": 4, "limit_levels": 3,
              "eval_jobs": 3, "eval_episodes": 1, "valid_episodes": 1},
        encoder={"name": "cjs_tokens", "hidden": 8, "rounds": 1},
        head={"name": "cjs_policy", "hidden": 8},
        train={"adapt_teacher": train,
               "distill": {**train, "cache_teacher": True, "losses": [{"name": "task"}, {"name": "cjs_kd"}]}},
        evaluate={"baselines": ["fifo", "fair"]},
        benchmark={"repeats": 1, "sweep": False},
    )
    path = tmp_path / "cjs_tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = subprocess.run([sys.executable, "-m", "mamba4net.core.cli", "run", str(path), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "run"
    results = json.loads((out / "results.json").read_text())
    assert results["metric"] == "avg_jct_s" and results["higher_is_better"] is False
    assert set(results["models"]) == {"fifo", "fair", "teacher", "student"}
    for name, m in results["models"].items():
        assert m["avg_jct_s"] > 0 and m["jobs"] == 3 and m["decision_ms"] > 0, name
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    for stage in ("adapt_teacher", "distill"):  # the best validation of each stage is the one recorded
        logged = [(m["valid_avg_jct_s"], m["step"]) for m in metrics if m["stage"] == stage and "valid_avg_jct_s" in m]
        assert [s for _, s in logged] == [3, 6]
        best = json.loads((out / "checkpoints" / stage / "best.json").read_text())
        assert (best["value"], best["step"]) == min(logged, key=lambda v: v[0])
    details = json.loads((out / "evaluation_details.json").read_text())
    assert all(len(details[m]["jct_s"]) == 3 for m in results["models"])
    assert (out / "cjs_jct_cdf.png").exists()
    assert "![Job completion time per job (CDF)](cjs_jct_cdf.png)" in (out / "report.md").read_text()
    check_pool_from_run(tmp_path, out, {k: v for k, v in cfg["task"].items() if k != "name"})


def check_pool_from_run(tmp_path, out, task_cfg):
    """Self-improvement across runs (``task.pool.runs``): the finished run's student plays the
    pool's sequences into another task's pool, asked for its own run's target, cached by its
    weights; ``best_per_sequence`` keeps the best episodes of each sequence."""
    import numpy as np
    import pytest
    import torch

    from mamba4net.core.pipeline import open_run
    from mamba4net.plugins.cjs import pool as pool_mod
    from mamba4net.plugins.cjs.config import CJSParams
    from mamba4net.plugins.cjs.evaluation import episode_jobs, make_sim
    from mamba4net.plugins.cjs.task import CJSTask

    base = CJSTask(CJSParams(**task_cfg)).pool("train")
    with_run = {**task_cfg, "pool": {**task_cfg["pool"], "runs": [{"dir": str(out)}]}}
    pool = CJSTask(CJSParams(**with_run)).pool("train")
    n = base.num_episodes
    assert pool.num_episodes == n + 1 and pool.policy == [*base.policy, f"student:{out}"]
    assert pool.seed == [*base.seed, base.seed[0]]  # the run plays the pool's own sequence
    assert np.array_equal(pool.x[: len(base.x)], base.x) and np.array_equal(pool.level[: base.num_decisions], base.level)
    run = open_run(out, "student")
    task = CJSTask(CJSParams(**with_run))
    seq = episode_jobs(task.params.cluster, task.library, base.seed[0], task_cfg["pool"]["jobs"])
    with torch.no_grad():  # the same episode as the student playing the sequence itself
        played = pool_mod.record_episode(make_sim(task.params.cluster), run.task.as_scheduler(run.model("student"), jobs=task_cfg["pool"]["jobs"]),
                                         seq, base.seed[0], task.limits)
    own = pool.episode(n)
    assert np.array_equal(own["action_node"], played["action_node"]) and np.array_equal(own["level"], played["level"])
    assert pool.avg_jct_s[n] == pytest.approx(played["avg_jct_s"])
    # best_per_sequence: the best episode of the one sequence, among the rules' and the run's
    best = CJSTask(CJSParams(**with_run, best_per_sequence=1)).pool("train")
    returns = pool.episode_returns()
    assert best.num_episodes == 1 and best.avg_jct_s == [pool.avg_jct_s[int(np.argmax(returns))]]
    # made once: a new task loads the run's episodes from the pool folder

    def fail(*a, **k):
        raise AssertionError("generated again")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pool_mod, "generate_pool", fail)
        again = CJSTask(CJSParams(**with_run)).pool("train")
    assert np.array_equal(again.action_node, pool.action_node)


def test_params_keep_train_seeds_off_valid_and_test(m4n_registry):
    import pytest
    from pydantic import ValidationError

    from mamba4net.plugins.cjs.config import CJSParams, PoolParams
    from mamba4net.plugins.cjs.task import CJSTask

    for bad in (lambda: PoolParams(seed=100), lambda: PoolParams(episodes=1001), lambda: DecimaParams(seed=50),
                lambda: DecimaParams(iterations=1000), lambda: CJSParams(window=8, stride=9)):
        with pytest.raises(ValidationError):
            bad()
    # the generic kd loss would mix stage and limit logits in one softmax: refused, naming cjs_kd
    with pytest.raises(ValueError, match="use 'cjs_kd'"):
        m4n_registry.get("losses", "kd").build({"temperature": 1.0}, task=CJSTask())
