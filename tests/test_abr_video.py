"""``task.video``: the ABR video is a setting (``<abr_dir>/video/<name>_sizes``). Another video
reaches the simulator and the baselines, keys its own experience pools, and a missing or malformed
one is one line naming the file, before any work (exit 2 from the CLI)."""

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from mamba4net.core.artifacts import spec_digest
from mamba4net.core.cli import guarded, main
from mamba4net.core.errors import DataError
from mamba4net.plugins.abr.config import ABRParams
from mamba4net.plugins.abr.task import ABRTask
from mamba4net.plugins.abr.video import N_CHUNKS, N_QUALITIES, available_videos, load_video_sizes

ROOT = Path(__file__).resolve().parents[1]
ABR = ROOT.parent / "shared" / "data" / "abr"


@pytest.fixture
def data(tmp_path) -> Path:
    """A data folder with the shipped traces (linked), video1 (copied) and ``video2``: video1's
    sizes x 1.5, the same 6 qualities and 49 chunks."""
    root = tmp_path / "data" / "abr"
    (root / "video").mkdir(parents=True)
    (root / "traces").symlink_to(ABR / "traces", target_is_directory=True)
    shutil.copytree(ABR / "video" / "video1_sizes", root / "video" / "video1_sizes")
    video2 = root / "video" / "video2_sizes"
    video2.mkdir()
    for q in range(N_QUALITIES):
        sizes = [int(line) for line in (ABR / "video" / "video1_sizes" / f"video_size_{q}").read_text().split()]
        (video2 / f"video_size_{q}").write_text("".join(f"{int(s * 1.5)}\n" for s in sizes))
    return root.parent


def test_default_is_video1_and_its_pool_key_is_unchanged():
    params = ABRParams()
    assert params.video == "video1"
    task = ABRTask(params)
    assert np.array_equal(task.video_sizes, load_video_sizes(ABR))
    # no video entry in video1's pool spec: pools made before the option existed are still found
    assert not {"video", "video_sha256"} & set(task._pool_spec("test"))


def test_another_video_reaches_the_simulator_and_the_baselines(data):
    from mamba4net.plugins.abr.baselines import BBA, RobustMPC
    from mamba4net.plugins.abr.rollout import rollout, summarize

    assert available_videos(data / "abr") == ["video1", "video2"]
    one = ABRTask(ABRParams(data_dir=str(data)))
    two = ABRTask(ABRParams(data_dir=str(data), video="video2"))
    assert two.video_sizes.shape == (N_QUALITIES, N_CHUNKS + 1)
    assert np.array_equal(two.video_sizes, (one.video_sizes * 1.5).astype(np.int64))
    env1, env2 = one.env("test", limit=3), two.env("test", limit=3)
    assert np.array_equal(env2.sizes, two.video_sizes)
    # bigger chunks on the same links: more stalls for the same (buffer-based) choices
    r1, r2 = summarize(rollout(env1, BBA())), summarize(rollout(env2, BBA()))
    assert r2["qoe"] < r1["qoe"] and r2["rebuffer_s"] > r1["rebuffer_s"]
    mpc = RobustMPC()
    mpc.fit(two)  # plans with the sizes of the video being played
    assert np.array_equal(mpc.sizes, two.video_sizes)


def test_another_video_keys_its_own_pools(data, tmp_path):
    one = ABRTask(ABRParams(data_dir=str(data), pool_dir=str(tmp_path / "pools")))
    two = ABRTask(ABRParams(data_dir=str(data), video="video2", pool_dir=str(tmp_path / "pools")))
    for split in ("train", "test"):
        spec = two._pool_spec(split)
        assert spec["video"] == "video2" and len(spec["video_sha256"]) == 64
        assert spec_digest(spec) != spec_digest(one._pool_spec(split))
    # the same name with other content is another pool too
    shutil.copy(data / "abr" / "video" / "video1_sizes" / "video_size_0",
                data / "abr" / "video" / "video2_sizes" / "video_size_0")
    edited = ABRTask(ABRParams(data_dir=str(data), video="video2"))
    assert spec_digest(edited._pool_spec("test")) != spec_digest(two._pool_spec("test"))


def _write(folder: Path, q: int, text: str) -> Path:
    path = folder / f"video_size_{q}"
    path.write_text(text)
    return path


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


CASES = {
    "missing quality file": (lambda f: (f / "video_size_3").unlink() or f / "video_size_3", "chunk-size file not found"),
    "non-integer line": (lambda f: _write(f, 2, "100\n" * 10 + "12x\n" + "100\n" * 40), ":11: chunk size is not an integer"),
    "too few lines": (lambda f: _write(f, 5, "100\n" * 48), "48 chunk sizes, need at least 49"),
    "seventh quality": (lambda f: _write(f, 6, "100\n" * 49), "unexpected quality file; a video has 6 qualities"),
    "not positive": (lambda f: _write(f, 0, "100\n" * 5 + "0\n" + "100\n" * 43), ":6: chunk size must be positive"),
    "binary": (lambda f: _write_bytes(f / "video_size_1", b"\xff\xfe\x00" * 40), "not a text file of chunk sizes"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_video_is_one_line_naming_the_file(data, case):
    damage, why = CASES[case]
    culprit = damage(data / "abr" / "video" / "video2_sizes")
    with pytest.raises(DataError) as err:
        load_video_sizes(data / "abr", "video2")
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(culprit)) and why in message
    # and the config refuses it while validating, before any task is built
    with pytest.raises(ValueError, match=str(culprit)):
        ABRParams(data_dir=str(data), video="video2")


def test_missing_video_names_the_folder_and_what_exists(data):
    with pytest.raises(DataError, match=r"video/video9_sizes: video folder not found .*videos in .*: video1, video2\)$"):
        load_video_sizes(data / "abr", "video9")
    with pytest.raises(ValueError, match="should match pattern"):
        ABRParams(data_dir=str(data), video="../video1")


def _outcome(argv) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = guarded(lambda: main(argv))
    return code, err.getvalue().strip().splitlines()


def test_cli_missing_or_malformed_video_is_exit_2_before_any_work(data, tmp_path):
    config = ROOT / "examples" / "abr.yaml"
    code, lines = _outcome(["validate", str(config), "--set", f"task.data_dir={data}", "--set", "task.video=video2"])
    assert code == 0, lines
    code, lines = _outcome(["validate", str(config), "--set", f"task.data_dir={data}", "--set", "task.video=video9"])
    assert code == 2 and len(lines) == 1 and "video9_sizes: video folder not found" in lines[0], lines
    # evaluate: the run's config with another (malformed) video is refused before anything is read
    # or written in the run folder
    run = tmp_path / "run"
    run.mkdir()
    cfg = yaml.safe_load(config.read_text())
    cfg["task"]["data_dir"] = str(data)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    bad = _write(data / "abr" / "video" / "video2_sizes", 4, "100\n" * 20)
    code, lines = _outcome(["evaluate", str(run), "--set", "task.video=video2"])
    assert code == 2 and len(lines) == 1 and f"{bad}: 20 chunk sizes, need at least 49" in lines[0], lines
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]


def test_damaged_video_files_load_or_fail_in_one_line(data):
    """Seeded random damage (truncation, bit flips) to one quality file: either it still loads
    (a harmless flip in a digit) or it is one DataError line naming that file, never a traceback."""
    folder = data / "abr" / "video" / "video2_sizes"
    rng = np.random.default_rng(0)
    originals = {q: (folder / f"video_size_{q}").read_bytes() for q in range(N_QUALITIES)}
    for _ in range(150):
        q = int(rng.integers(N_QUALITIES))
        raw = bytearray(originals[q])
        if rng.random() < 0.3:
            raw = raw[: int(rng.integers(len(raw)))]
        else:
            for pos in rng.integers(len(raw), size=int(rng.integers(1, 6))):
                raw[pos] ^= 1 << int(rng.integers(8))
        path = folder / f"video_size_{q}"
        path.write_bytes(bytes(raw))
        try:
            sizes = load_video_sizes(data / "abr", "video2")
            assert sizes.shape == (N_QUALITIES, N_CHUNKS + 1) and (sizes > 0).all()
        except DataError as err:
            assert "\n" not in str(err) and str(err).startswith(str(path)), str(err)
        path.write_bytes(originals[q])
