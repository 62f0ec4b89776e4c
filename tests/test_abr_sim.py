"""ABR simulator: hand-computed cases, fcc-test sanity ranges, bad-trace errors."""

from pathlib import Path

import numpy as np
import pytest

from mamba4net.core.errors import DataError
from mamba4net.plugins.abr.rollout import rollout, summarize
from mamba4net.plugins.abr.sim import AbrEnv
from mamba4net.plugins.abr.traces import Trace, load_trace

ABR = Path(__file__).resolve().parents[2] / "shared" / "data" / "abr"


def _trace(bw, step=1.0):
    bw = np.asarray(bw, dtype=np.float64)
    return Trace("t", Path("t"), np.arange(len(bw)) * step, bw)


class Const:
    def __init__(self, q):
        self.q = q

    def reset(self, n):
        pass

    def act(self, obs):
        return np.full(len(obs.buffer_s), self.q, dtype=np.int64)


def test_constant_bandwidth_and_buffer_cap():
    # 8 Mbps = 1e6 B/s, x 0.95 payload: a 475,000 B chunk takes 0.5 s, + 80 ms RTT = 0.58 s
    sizes = np.full((6, 49), 475_000, dtype=np.int64)
    env = AbrEnv([_trace([8.0] * 2000)], sizes, start_ptrs=[1])
    obs, info = env.reset()
    assert info["delay_s"][0] == pytest.approx(0.58)
    assert info["rebuffer_s"][0] == pytest.approx(0.58)
    assert obs.buffer_s[0] == pytest.approx(4.0)
    assert obs.throughput_mbps[0, -1] == pytest.approx(475_000 * 8 / 580 / 1000)
    buf = [4.0]
    for k in range(1, 19):
        obs, reward, done, info = env.step(np.array([1]))
        assert info["rebuffer_s"][0] == 0 and reward[0] == pytest.approx(0.75)
        buf.append(obs.buffer_s[0])
    assert buf[16] == pytest.approx(4 + 16 * 3.42)
    assert buf[17] == pytest.approx(62.14 - 2.5)  # drained in 500 ms sleeps back under 60 s
    assert buf[18] == pytest.approx(59.64 + 3.42 - 3.5)
    assert not done


def test_stall_and_wrap_around():
    # rows: 8 Mbps (950,000 B/s payload) then 0.8 Mbps; the trace wraps to row 1 at its end
    sizes = np.full((6, 49), 1_140_000, dtype=np.int64)
    env = AbrEnv([_trace([0.0, 8.0, 0.8])], sizes, start_ptrs=[1])
    _, info = env.reset()
    # 950,000 in row 1 + 95,000 in row 2, wrap, 95,000 more at 950,000 B/s = 0.1 s
    assert info["delay_s"][0] == pytest.approx(2.1 + 0.08)
    assert env.ptr[0] == 1 and env.last_time[0] == pytest.approx(0.1)
    obs, reward, _, info = env.step(np.array([5]))
    # from t=0.1: 0.9 s x 950,000 = 855,000; row 2: 95,000; wrap; row 1: 190,000 / 950,000 = 0.2 s
    assert info["delay_s"][0] == pytest.approx(0.9 + 1.0 + 0.2 + 0.08)
    rebuf = 2.18 - 4.0 + 0.0
    assert info["rebuffer_s"][0] == pytest.approx(max(rebuf, 0.0))
    assert reward[0] == pytest.approx(4.3 - abs(4.3 - 0.75))


def test_episode_length_and_noise_bounds():
    sizes = np.full((6, 49), 475_000, dtype=np.int64)
    fixed = AbrEnv([_trace([8.0] * 500)], sizes, start_ptrs=[3])
    noisy = AbrEnv([_trace([8.0] * 500)], sizes, start_ptrs=[3], noise=True, seed=1)
    log = rollout(fixed, Const(0))
    assert log.reward.shape == (1, 48)
    _, info = noisy.reset()
    assert 0.9 * 0.58 <= info["delay_s"][0] <= 1.1 * 0.58


@pytest.mark.skipif(not ABR.is_dir(), reason="shared ABR data not present")
def test_fcc_test_sanity_ranges():
    from mamba4net.plugins.abr.baselines import BBA, RobustMPC
    from mamba4net.plugins.abr.splits import load_split
    from mamba4net.plugins.abr.video import load_video_sizes

    traces, ptrs = load_split(ABR, "test")
    sizes = load_video_sizes(ABR)
    env = AbrEnv(traces, sizes, start_ptrs=ptrs)
    assert 0.70 <= summarize(rollout(env, BBA()))["qoe"] <= 0.80
    assert 0.80 <= summarize(rollout(env, RobustMPC(video_sizes=sizes)))["qoe"] <= 0.88
    low = summarize(rollout(env, Const(0)))
    assert low["bitrate_mbps"] == pytest.approx(0.3)
    assert low["smooth_mbps"] == pytest.approx(0.45 / 47)  # chunk 0 is fetched at quality 1


@pytest.mark.parametrize("text, line, what", [
    ("", None, "empty"),
    ("0 1.0\n1 abc\n2 1.0\n", 2, "non-numeric"),
    ("0 1.0\n1 -2.0\n2 1.0\n", 2, "negative"),
    ("0 1.0\n1 1.0\n1 1.0\n", 3, "does not increase"),
])
def test_bad_traces_name_file_and_line(tmp_path, text, line, what):
    path = tmp_path / "bad_trace"
    path.write_text(text)
    with pytest.raises(DataError) as exc:
        load_trace(path)
    msg = str(exc.value)
    assert str(path) in msg and what in msg and "\n" not in msg
    if line is not None:
        assert f"{path}:{line}:" in msg
