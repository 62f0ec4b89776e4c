"""A fuzzed bad-input corpus: mutated example configs, random ``--set`` strings and damaged data
files (traces, TPC-H jobs, VP CSVs, experience pools, checkpoints). Every case must end in exit
code 0 (the damage was harmless) or 2 with one line naming the culprit: never a traceback, and
nothing already written changes. Hypothesis runs derandomized, so CI sees the same corpus each time.
"""

import contextlib
import io
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mamba4net.core.cli import guarded, main
from mamba4net.testing.toy import run_tiny_pipeline

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
EXAMPLES = ["vp", "abr", "cjs", "mohawk_lm", "pkd_digits"]
CASES = 200  # per kind of damage
FUZZ = settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_names = itertools.count()


def _outcome(fn) -> tuple[int, list[str]]:
    """(exit code, stderr lines) of ``fn`` run the way the CLI runs a command."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = guarded(fn)
    return code, err.getvalue().strip().splitlines()


def _assert_clean(code: int, lines: list[str]) -> None:
    assert code in (0, 2), (code, lines)
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("mamba4net: "), lines


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != ".lock"}  # the lock file records its last holder


# -- configs ----------------------------------------------------------------------------------------

def _paths(node, prefix=()):
    """Every (path, value) of a nested config."""
    yield prefix, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


WRONG_VALUES = st.one_of(st.none(), st.booleans(), st.text(max_size=12), st.lists(st.integers(), max_size=3),
                         st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                         st.sampled_from([-1, 0, -1e9, 1e308, 10**30, float("nan"), float("inf"), -0.5, 1.5]))


@st.composite
def mutated_config(draw):
    name = draw(st.sampled_from(EXAMPLES))
    cfg = yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _paths(cfg) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = cfg
        for key in path[:-1]:
            parent = parent[key]
        op = draw(st.sampled_from(["wrong", "unknown_key", "delete"]))
        if op == "delete":
            del parent[path[-1]]
        elif op == "unknown_key" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(WRONG_VALUES)
        else:
            parent[path[-1]] = draw(WRONG_VALUES)
    return name, cfg


@pytest.fixture(scope="module")
def prior_run(tmp_path_factory):
    """A finished tiny run: a failed command aimed at it must leave every file as it was."""
    return run_tiny_pipeline(tmp_path_factory.mktemp("prior") / "run", benchmark={"enabled": False})


@FUZZ
@given(case=mutated_config())
def test_mutated_example_configs(case, tmp_path, prior_run):
    name, cfg = case
    path = tmp_path / f"{name}-{next(_names)}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    code, lines = _outcome(lambda: main(["validate", str(path)]))
    _assert_clean(code, lines)
    if code == 2:  # the same config aimed at a finished run: refused before anything is written
        before = _tree(prior_run)
        code, lines = _outcome(lambda: main(["run", str(path), "--out", str(prior_run), "--resume"]))
        _assert_clean(code, lines)
        assert code == 2 and _tree(prior_run) == before


SET_STRINGS = st.one_of(
    st.text(max_size=30),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["seed", "task.name", "train.distill.lr", "student",
                                                        "student.n_layers", "runtime.threads", "teacher.lora.r",
                                                        "benchmark.seq_lens", "a.b.c", "", "task..x"]),
              st.text(max_size=20)),
)


@FUZZ
@given(name=st.sampled_from(EXAMPLES), sets=st.lists(SET_STRINGS, min_size=1, max_size=3))
def test_random_set_strings(name, sets):
    argv = ["validate", str(ROOT / "examples" / f"{name}.yaml")] + [f"--set={s}" for s in sets]
    code, lines = _outcome(lambda: main(argv))
    _assert_clean(code, lines)


# -- damaged data files -----------------------------------------------------------------------------

@st.composite
def damage(draw, size: int):
    """(kind, detail) of a damage to a file of ``size`` bytes."""
    kind = draw(st.sampled_from(["truncated", "bit-flipped", "empty"]))
    if kind == "truncated":
        return kind, draw(st.integers(0, max(0, size - 1)))
    if kind == "bit-flipped":
        return kind, draw(st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 7)), min_size=1, max_size=40))
    return kind, None


def _damaged(data: bytes, how) -> bytes:
    kind, detail = how
    if kind == "truncated":
        return data[:detail]
    if kind == "empty":
        return b""
    out = bytearray(data)
    for pos, bit in detail:
        out[pos] ^= 1 << bit
    return bytes(out)


def _needs(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not found: {path}")
    return path


def _first(folder: Path, pattern: str) -> Path:
    found = sorted(p for p in _needs(folder).rglob(pattern) if p.is_file())
    if not found:
        pytest.skip(f"no {pattern} under {folder}")
    return found[0]


def _fuzz_file(source: Path, load, tmp_path: Path):
    """A property over damaged copies of ``source`` read by ``load(path)``."""
    original = source.read_bytes()

    @FUZZ
    @given(how=damage(len(original)))
    def check(how):
        path = tmp_path / f"{next(_names)}-{source.name}"
        path.write_bytes(_damaged(original, how))
        code, lines = _outcome(lambda: (load(path), 0)[1])
        _assert_clean(code, lines)

    check()


def test_damaged_abr_traces(tmp_path):
    from mamba4net.plugins.abr.traces import load_trace

    _fuzz_file(_first(DATA / "abr" / "traces" / "test", "*"), load_trace, tmp_path)


def test_damaged_vp_csvs(tmp_path):
    from mamba4net.plugins.vp.data import load_trace

    _fuzz_file(_first(DATA / "vp", "simple_5Hz_user1.csv"), load_trace, tmp_path)


def test_damaged_tpch_jobs(tmp_path):
    from mamba4net.plugins.cjs.jobs import load_job

    _fuzz_file(_first(DATA / "cjs" / "tpch_json", "*.json"), load_job, tmp_path)


@pytest.fixture(scope="module")
def pool_file(tmp_path_factory):
    from mamba4net.plugins.abr.pool import ExperiencePool

    rng = np.random.default_rng(0)
    pool = ExperiencePool(states=rng.normal(size=(3, 5, 6, 8)).astype(np.float32),
                          actions=rng.integers(0, 6, size=(3, 5)).astype(np.int64),
                          rewards=rng.normal(size=(3, 5)).astype(np.float32),
                          dones=np.zeros((3, 5), dtype=bool), policy=["a", "b", "c"], trace=["t0", "t1", "t2"], meta={})
    return pool.save(tmp_path_factory.mktemp("pool") / "pool.safetensors")


@pytest.mark.parametrize("part", ["safetensors", "json"])
def test_damaged_experience_pools(tmp_path, pool_file, part):
    from mamba4net.plugins.abr.pool import ExperiencePool

    target = pool_file.with_suffix(f".{part}")
    other = pool_file.with_suffix(".json" if part == "safetensors" else ".safetensors")

    def load(path: Path):  # the damaged part beside an intact copy of the other
        shutil.copy(other, path.with_suffix(other.suffix))
        return ExperiencePool.load(path.with_suffix(".safetensors"))

    _fuzz_file(target, load, tmp_path)


@pytest.mark.parametrize("name", ["final.safetensors", "done.json"])
def test_damaged_checkpoints(tmp_path, prior_run, m4n_registry, name):
    """``mamba4net evaluate`` on a run whose distill weights or record is damaged: one line, and the
    run folder unchanged (a harmless damage evaluates normally into evaluations/)."""
    target = prior_run / "checkpoints" / "distill" / name
    original = target.read_bytes()
    run = tmp_path / "run"
    shutil.copytree(prior_run, run)
    before = _tree(run)

    @settings(FUZZ, max_examples=CASES // 2)
    @given(how=damage(len(original)))
    def check(how):
        (run / "checkpoints" / "distill" / name).write_bytes(_damaged(original, how))
        code, lines = _outcome(lambda: main(["evaluate", str(run), "--no-bench"]))
        _assert_clean(code, lines)
        shutil.rmtree(run / "evaluations", ignore_errors=True)
        after = _tree(run)
        after.pop(f"checkpoints/distill/{name}")
        assert after == {k: v for k, v in before.items() if k != f"checkpoints/distill/{name}"}

    check()
