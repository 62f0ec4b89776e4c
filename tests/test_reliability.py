"""Runs that survive damage: checksums, fail-fast checks, NaN-safe results, one writer per run
folder, refused writes. The first four tests are the cases a user met on a finished run."""

import errno
import hashlib
import json
import shutil
import struct
import subprocess
import sys
import textwrap
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mamba4net.core import io
from mamba4net.core.cli import main
from mamba4net.core.config import validate_data
from mamba4net.core.errors import WriteError
from mamba4net.core.hookspecs import hookimpl
from mamba4net.core.pipeline import run_pipeline
from mamba4net.testing.toy import run_tiny_pipeline, tiny_pipeline_config

NO_BENCH = {"benchmark": {"enabled": False}}


def _tree(root) -> dict[str, str]:
    """Every file under ``root`` and its sha256: what a failed command must leave unchanged."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny run (copied by each test that damages it)."""
    return run_tiny_pipeline(tmp_path_factory.mktemp("finished") / "run", **NO_BENCH)


@pytest.fixture
def run(finished, tmp_path, m4n_registry):
    dest = tmp_path / "run"
    shutil.copytree(finished, dest)
    return dest


def _data_offset(path) -> int:
    """Where a safetensors file's tensor bytes start (after the 8-byte length and the JSON header)."""
    (n,) = struct.unpack("<Q", path.read_bytes()[:8])
    return 8 + n


# -- the four reported cases ------------------------------------------------------------------------

def test_truncated_done_json_is_one_line(run, capsys):
    (run / "checkpoints" / "distill" / "done.json").write_text("{bad json")
    before = _tree(run)
    assert main(["evaluate", str(run), "--no-bench"]) == 2
    assert "distill/done.json: not valid JSON" in _one_line(capsys)
    assert _tree(run) == before


def test_flipped_tensor_bytes_are_caught_before_any_work(run, capsys, caplog):
    final = run / "checkpoints" / "distill" / "final.safetensors"
    data = bytearray(final.read_bytes())
    start = _data_offset(final)
    assert len(data) - start > 2000
    for i in range(start, start + 2000):
        data[i] ^= 0xFF
    final.write_bytes(bytes(data))
    before = _tree(run)
    with caplog.at_level("INFO", logger="mamba4net"):
        assert main(["evaluate", str(run), "--no-bench"]) == 2
    assert "distill/final.safetensors: damaged" in _one_line(capsys)
    assert not any("evaluate " in r.getMessage() for r in caplog.records)  # no model was evaluated
    assert _tree(run) == before


def test_corrupt_header_is_named_before_the_baselines_run(run, capsys, caplog):
    final = run / "checkpoints" / "distill" / "final.safetensors"
    data = bytearray(final.read_bytes())
    data[10:40] = b"\x00" * 30
    final.write_bytes(bytes(data))
    with caplog.at_level("INFO", logger="mamba4net"):
        assert main(["evaluate", str(run)]) == 2
    assert "final.safetensors: damaged" in _one_line(capsys)
    assert not any("evaluate " in r.getMessage() for r in caplog.records)
    assert not (run / "evaluations").exists()


def test_no_bench_flag_and_benchmark_off(run, capsys):
    assert main(["evaluate", str(run), "--no-bench"]) == 0
    (out,) = (run / "evaluations").iterdir()
    assert "efficiency" not in json.loads((out / "results.json").read_text()) or not (out / "bench.json").exists()
    assert not (run / "bench.json").exists()  # the run was made with benchmark.enabled: false


class _NaNBaseline:
    @hookimpl
    def mamba4net_register_baselines(self, register):
        class NaNPredictor:
            def fit(self, task):
                pass

            def predict(self, batch):
                return torch.full((len(batch["x"]), 2), float("nan"))

        register("toy_nan", lambda params, task: NaNPredictor(), task="toy")


def test_nan_metric_is_flagged_last_and_exits_nonzero(tmp_path, m4n_registry, capsys):
    m4n_registry.add_plugin(_NaNBaseline(), name="nanbase")
    cfg = tiny_pipeline_config(**NO_BENCH, evaluate={"baselines": [{"name": "toy_nan"}, {"name": "toy_mean"}]})
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mamba4net: result error: toy_nan: mse is not finite"), err[-1]
    results = json.loads((out / "results.json").read_text())
    assert results["non_finite"] == ["toy_nan"] and results["models"]["toy_nan"]["mse"] is None
    rows = [line for line in (out / "report.md").read_text().splitlines() if line.startswith("| toy_")]
    assert rows[-1].startswith("| toy_nan | **not finite**")  # last in the table
    assert (out / "models.png").exists()
    assert main(["report", str(out)]) == 0  # re-rendering reads it back without a crash


def test_an_infinite_metric_read_back_from_results_json_stays_last():
    """results.json writes inf as 1e308: the non_finite flag, not the number, decides."""
    from mamba4net.core.report import ranked, results_table

    results = {"metric": "mse", "higher_is_better": False, "non_finite": ["b"],
               "models": {"a": {"mse": 2.0}, "b": {"mse": 1e308}, "c": {"mse": 1.0}}}
    assert ranked(results) == ["c", "a", "b"]
    assert results_table(results).splitlines()[-1] == "| b | **not finite** |"
    results["higher_is_better"] = True
    assert ranked(results) == ["a", "c", "b"]


# -- checksums and resume ---------------------------------------------------------------------------

def test_every_tensor_file_has_a_recorded_checksum(finished):
    ckpt = finished / "checkpoints"
    for stage in ("adapt_teacher", "distill"):
        done = json.loads((ckpt / stage / "done.json").read_text())
        for name in done["writes"].values():
            assert done["sha256"][name] == hashlib.sha256((ckpt / stage / name).read_bytes()).hexdigest()
    for path in [*(ckpt / "export").glob("*.safetensors"), *(ckpt / "baselines").glob("*.safetensors")]:
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest(), path


class _Stop(BaseException):
    """Ends a run in-process right after a checkpoint, as a kill would (nothing else is written)."""


def _run_until(out, reg, stage, step, monkeypatch):
    from mamba4net.core import checkpoint

    original = checkpoint.StageCheckpoints.save

    def save_then_stop(self, s, *a, **k):
        path = original(self, s, *a, **k)
        if self.dir.name == stage and s == step:
            raise _Stop
        return path

    with monkeypatch.context() as m:
        m.setattr(checkpoint.StageCheckpoints, "save", save_then_stop)
        with pytest.raises(_Stop):
            run_pipeline(validate_data(tiny_pipeline_config(**NO_BENCH), registry=reg), out, registry=reg)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, finished, m4n_registry,
                                                                  monkeypatch, caplog):
    out = tmp_path / "run"
    _run_until(out, m4n_registry, "distill", 8, monkeypatch)
    latest = out / "checkpoints" / "distill" / "step-000008" / "model.safetensors"
    assert (out / "checkpoints" / "distill" / "step-000004").is_dir()
    data = bytearray(latest.read_bytes())
    for i in range(_data_offset(latest), len(data), 7):
        data[i] ^= 0x5A
    latest.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="mamba4net"):
        run_pipeline(validate_data(tiny_pipeline_config(**NO_BENCH), registry=m4n_registry), out, resume=True,
                     registry=m4n_registry)
    assert any("step-000008/model.safetensors: damaged" in r.getMessage() and "step-000004" in r.getMessage()
               for r in caplog.records)
    a = load_file(str(finished / "checkpoints" / "distill" / "final.safetensors"))
    b = load_file(str(out / "checkpoints" / "distill" / "final.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_no_good_checkpoint_left_is_one_line(tmp_path, m4n_registry, monkeypatch, capsys):
    out = tmp_path / "run"
    _run_until(out, m4n_registry, "distill", 8, monkeypatch)
    for step in ("step-000004", "step-000008"):
        (out / "checkpoints" / "distill" / step / "optimizer.safetensors").write_bytes(b"")
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_pipeline_config(**NO_BENCH)))
    assert main(["run", str(path), "--out", str(out), "--resume"]) == 2
    assert "step-000008/optimizer.safetensors: damaged" in _one_line(capsys)


# -- refused writes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("target", [".step-000008.tmp", "final.safetensors"])
def test_disk_full_mid_file_keeps_what_was_written(tmp_path, finished, m4n_registry, monkeypatch, capsys, target):
    """The disk fills up half-way through a file of the step-8 checkpoint (or of the stage's final
    weights): the previous checkpoint and every done.json are intact, the run ends in one line, and
    a resume afterwards ends with the weights of an undamaged run."""
    original = io.write_chunk
    folder = out = tmp_path / "run"

    def fail_mid_file(f, chunk, tmp):
        if target in tmp and "distill" in tmp:
            original(f, chunk[: len(chunk) // 2], tmp)
            raise OSError(errno.ENOSPC, "No space left on device")
        original(f, chunk, tmp)

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_pipeline_config(**NO_BENCH)))
    monkeypatch.setattr(io, "write_chunk", fail_mid_file)
    assert main(["run", str(path), "--out", str(out)]) == 1
    err = _one_line(capsys)
    assert "write error" in err and "No space left on device" in err and "is unchanged" in err
    distill = folder / "checkpoints" / "distill"
    assert not (distill / "done.json").exists()
    assert (folder / "checkpoints" / "adapt_teacher" / "done.json").exists()
    assert not list(distill.glob(".*tmp*"))  # no half-written file or folder left behind
    latest = json.loads((distill / "latest.json").read_text())
    assert latest["step"] == (4 if target.startswith(".step") else 8)
    before = _tree(folder)
    monkeypatch.setattr(io, "write_chunk", original)
    assert main(["run", str(path), "--out", str(out), "--resume"]) == 0
    assert _tree(folder)["checkpoints/adapt_teacher/done.json"] == before["checkpoints/adapt_teacher/done.json"]
    a = load_file(str(finished / "checkpoints" / "distill" / "final.safetensors"))
    b = load_file(str(distill / "final.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_atomic_write_failure_leaves_the_old_version(tmp_path, monkeypatch):
    path = tmp_path / "x.json"
    io.write_json(path, {"v": 1})

    def full(f, chunk, tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "write_chunk", full)
    with pytest.raises(WriteError, match=r"x\.json: cannot be written \(No space left on device\)"):
        io.write_json(path, {"v": 2})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# -- one writer per run folder ----------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    from mamba4net.core.lock import run_lock
    with run_lock(sys.argv[1], "run"):
        print("locked", flush=True)
        time.sleep(120)
""")


def test_a_live_writer_refuses_a_second_and_a_killed_one_does_not_block(run, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = _tree(run)
        assert main(["evaluate", str(run), "--no-bench"]) == 2
        err = _one_line(capsys)
        assert f"in use by process {holder.pid} (run, since" in err
        assert main(["report", str(run)]) == 2
        assert f"process {holder.pid}" in _one_line(capsys)
        assert _tree(run) == before
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert main(["evaluate", str(run), "--no-bench"]) == 0  # the lock of a killed process is gone
