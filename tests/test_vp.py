"""The viewport-prediction plugin: metric, representation, windows, splits, baselines, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from mamba4net.core.protocols import ModelOutput, Task
from mamba4net.plugins.vp import plugin
from mamba4net.plugins.vp.baselines import LinearRegressionBaseline, LSTMBaseline, VelocityBaseline
from mamba4net.plugins.vp.config import LSTMParams, VPParams, resolve_dataset_dir
from mamba4net.plugins.vp.data import (
    SCALE,
    TraceFormatError,
    VPData,
    load_trace,
    to_absolute,
    to_relative,
    trace_path,
    wrap_deg,
)
from mamba4net.plugins.vp.metrics import MAEAccumulator, angular_error, mae_deg
from mamba4net.plugins.vp.task import VPTask

try:
    DATASET_DIR = resolve_dataset_dir(None, "Jin2022")
except ValueError:  # pragma: no cover - the shared data is missing on this machine
    DATASET_DIR = None
needs_data = pytest.mark.skipif(DATASET_DIR is None, reason="Jin2022 data not found (set $MAMBA4NET_DATA)")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread is fastest, and avoids spinning on a busy shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _single(video: int, user: int, **kw) -> VPParams:
    """Params whose every split is the single trace (video, user)."""
    lists = {f"{s}_{k}": [v] for s in ("train", "valid", "test") for k, v in (("videos", video), ("users", user))}
    return VPParams(**lists, **kw)


# ---- metric ---------------------------------------------------------------------------------


def test_mae_wraps_around_the_seam():
    assert float(angular_error(torch.tensor(179.0), torch.tensor(-179.0))) == pytest.approx(2.0)
    assert float(angular_error(torch.tensor(-170.0), torch.tensor(170.0))) == pytest.approx(20.0)
    assert float(angular_error(torch.tensor(10.0), torch.tensor(-10.0))) == pytest.approx(20.0)
    assert float(angular_error(torch.tensor(0.0), torch.tensor(180.0))) == pytest.approx(180.0)
    assert float(angular_error(torch.tensor(540.0), torch.tensor(0.0))) == pytest.approx(180.0)


def test_mae_averages_over_angles_and_steps():
    truth = torch.zeros(1, 2, 3)
    pred = torch.tensor([[[1.0, 2.0, 3.0], [4.0, 5.0, 359.0]]])  # yaw 359 is 1 degree away
    # roll (1+4)/2 = 2.5, pitch (2+5)/2 = 3.5, yaw (3+1)/2 = 2 -> mean 8/3
    assert mae_deg(pred, truth) == pytest.approx(8 / 3)
    acc = MAEAccumulator()
    acc.update(pred, truth)
    acc.update(torch.zeros(1, 2, 3), truth)  # a perfect second sample halves everything
    r = acc.result()
    assert r["mae_roll"] == pytest.approx(1.25) and r["mae_pitch"] == pytest.approx(1.75)
    assert r["mae_yaw"] == pytest.approx(1.0) and r["mae_deg"] == pytest.approx(4 / 3)
    assert r["n_samples"] == 2


# ---- representation -------------------------------------------------------------------------


def test_relative_representation_round_trips_across_the_seam():
    # yaw walks 170 -> -170 through the seam, roll the other way; pitch is plain
    traj = torch.tensor([[[10.0, 5.0, 170.0], [-175.0, 6.0, 178.0], [179.0, 7.0, -178.0], [170.0, 8.0, -170.0]]],
                        dtype=torch.float64)
    last = torch.tensor([[178.0, 4.0, 175.0]], dtype=torch.float64)
    rel = to_relative(traj, last)
    assert rel.abs().max() <= 1.0
    # yaw -170 seen from 175 is +15 degrees, not -345
    assert float(rel[0, 3, 2]) * SCALE[2] == pytest.approx(15.0)
    assert float(rel[0, 1, 0]) * SCALE[0] == pytest.approx(7.0)  # roll -175 from 178: +7
    assert float(rel[0, 0, 1]) * SCALE[1] == pytest.approx(1.0)  # pitch divided by 90
    back = to_absolute(rel, last)
    assert torch.allclose(back, traj, atol=1e-9)
    assert torch.allclose(wrap_deg(torch.tensor([180.0, -180.0, 540.0, -181.0])), torch.tensor([-180.0, -180.0, -180.0, 179.0]))


@needs_data
def test_samples_are_consistent_with_the_raw_trace():
    params = _single(4, 83)
    data = VPData(params, "test")
    raw = load_trace(trace_path(DATASET_DIR, 4, 83))
    b = data.batch(torch.arange(len(data)))
    for i in (0, len(data) - 1):
        t = int(b["t"][i])
        assert np.allclose(b["future"][i].numpy(), raw[t:t + 20], atol=1e-4)
        assert np.allclose(b["last"][i].numpy(), raw[t - 1], atol=1e-4)
    assert torch.all(b["history"][:, -1] == 0)  # relative to the last observed sample
    assert torch.allclose(to_absolute(b["target"].double(), b["last"].double()).float(),
                          wrap_deg(b["future"]), atol=1e-3)


# ---- windows and splits ---------------------------------------------------------------------


@needs_data
@pytest.mark.parametrize("video,user", [(4, 83), (18, 15)])  # a 300-row and a 226-row trace
def test_window_count_matches_hand_count(video, user):
    path = trace_path(DATASET_DIR, video, user)
    rows = sum(1 for line in path.read_text().splitlines() if line.strip())
    # starts t = 30, 45, ... while t < rows - 60 (history needs t >= 10, future t + 20 <= rows)
    expected = len([t for t in range(rows) if t >= 30 and t < rows - 60 and (t - 30) % 15 == 0])
    assert expected == math.ceil((rows - 60 - 30) / 15)
    data = VPData(_single(video, user), "test")
    assert len(data) == expected
    assert data.batch(torch.arange(len(data)))["t"].tolist() == list(range(30, rows - 60, 15))


@needs_data
def test_splits_are_disjoint_and_shaped():
    p = VPParams()
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not set(p.videos(a)) & set(p.videos(b))
        assert not set(p.users(a)) & set(p.users(b))
    task = VPTask(p)
    seen = {}
    for split in ("valid", "test"):
        data = task.data(split)
        everything = data.batch(torch.arange(len(data)))
        seen[split] = (set(everything["video"].tolist()), set(everything["user"].tolist()))
        assert seen[split][0] <= set(p.videos(split)) and seen[split][1] <= set(p.users(split))
    assert not seen["valid"][0] & seen["test"][0] and not seen["valid"][1] & seen["test"][1]
    b = task.data("test").batch(torch.tensor([0, 5, 7]))
    assert b["history"].shape == (3, 10, 3) and b["target"].shape == (3, 20, 3)
    assert b["last"].shape == (3, 3) and b["future"].shape == (3, 20, 3)
    assert b["history"].dtype == torch.float32


@needs_data
def test_max_samples_takes_an_even_deterministic_subset():
    p = _single(4, 83, max_samples={"test": 5})
    full = VPData(_single(4, 83), "test").batch(torch.arange(14))["t"]
    sub = VPData(p, "test").batch(torch.arange(5))["t"]
    assert len(VPData(p, "test")) == 5
    assert sub.tolist() == full[[0, 3, 6, 10, 13]].tolist()


# ---- baselines ------------------------------------------------------------------------------


def _batch_from(traj_deg: torch.Tensor, his: int = 10) -> dict[str, torch.Tensor]:
    """A one-sample batch from an absolute (T, 3) trajectory in degrees."""
    traj = traj_deg[None].double()
    last = traj[:, his - 1]
    return {"history": to_relative(traj[:, :his], last), "target": to_relative(traj[:, his:], last),
            "last": last, "future": traj[:, his:], "history_abs": traj[:, :his] / torch.tensor(SCALE)}


def test_velocity_is_exact_on_constant_velocity_across_the_seam():
    steps = torch.arange(30, dtype=torch.float64)[:, None]
    traj = wrap_deg(torch.tensor([[20.0, -30.0, 150.0]]) + steps * torch.tensor([[-1.5, 0.8, 4.0]]))
    b = _batch_from(traj)
    pred = VelocityBaseline(20).predict(b)
    assert pred.shape == (1, 20, 3)
    assert torch.allclose(pred, b["target"], atol=1e-9)
    assert mae_deg(to_absolute(pred, b["last"]), b["future"]) < 1e-6


def test_linear_regression_is_exact_on_a_linear_trajectory():
    steps = torch.arange(30, dtype=torch.float64)[:, None]
    traj = wrap_deg(torch.tensor([[-170.0, 10.0, -160.0]]) + steps * torch.tensor([[-2.0, -0.5, -3.0]]))
    b = _batch_from(traj)
    assert torch.allclose(LinearRegressionBaseline(20).predict(b), b["target"], atol=1e-9)
    # on a noisy history it is the least-squares line, not the last-two-points velocity
    noisy = b["history"].clone()
    noisy[0, 4, 1] += 0.05
    lr, vel = LinearRegressionBaseline(20).predict({"history": noisy}), VelocityBaseline(20).predict({"history": noisy})
    assert torch.allclose(vel, b["target"])  # endpoints untouched
    assert not torch.allclose(lr, b["target"])
    i = np.arange(10)
    coef = np.polyfit(i, noisy[0, :, 1].numpy(), 1)
    assert np.allclose(lr[0, :, 1].numpy(), np.polyval(coef, np.arange(10, 30)))


@needs_data
def test_lstm_fit_is_seeded_and_round_trips_its_state():
    task = VPTask(VPParams(max_samples={"train": 64, "valid": 32, "test": 32}))
    params = LSTMParams(hidden=8, steps=3, batch_size=16, valid_every=2, seed=3)
    a, b = LSTMBaseline(20, params), LSTMBaseline(20, params)
    a.fit(task)
    b.fit(task)
    batch = task.data("test").batch(torch.arange(4))
    assert torch.equal(a.predict(batch), b.predict(batch))
    c = LSTMBaseline(20, params.model_copy(update={"seed": 4}))
    c.load_state_dict(a.state_dict())
    assert torch.equal(c.predict(batch), a.predict(batch))
    assert a.fit_info["steps"] == 3 and a.predict(batch).shape == (4, 20, 3)


# ---- task, plugin wiring --------------------------------------------------------------------


@needs_data
def test_plugin_builds_a_working_task_encoder_head_and_baselines():
    regs: dict[str, dict[str, tuple]] = {}

    def recorder(kind):
        return lambda name, factory, params=None, **meta: regs.setdefault(kind, {}).update({name: (factory, params, meta)})

    plugin.mamba4net_register_tasks(recorder("tasks"))
    plugin.mamba4net_register_encoders(recorder("encoders"))
    plugin.mamba4net_register_heads(recorder("heads"))
    plugin.mamba4net_register_baselines(recorder("baselines"))
    factory, params, _ = regs["tasks"]["vp"]
    task = factory(params.model_validate({"max_samples": {"train": 32, "valid": 16, "test": 40}}))
    assert isinstance(task, Task)
    assert set(task.default_baselines) == set(regs["baselines"])
    assert all(meta == {"task": "vp"} for _, _, meta in regs["baselines"].values())

    enc_f, enc_p, _ = regs["encoders"][task.default_encoder]
    head_f, head_p, _ = regs["heads"][task.default_head]
    enc = enc_f(enc_p(), task=task, d_model=24)
    head = head_f(head_p(), task=task, d_model=24)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.head = enc, head

        def forward(self, batch):
            hidden = self.enc(batch)  # (B, 10, 24), no backbone needed here
            return ModelOutput(pred=self.head(hidden, batch), hidden=hidden)

    net = Net().train()
    batch = task.data("train").batch(torch.arange(8))
    out = net(batch)
    assert out.hidden.shape == (8, 10, 24) and out.pred.shape == (8, 20, 3)
    loss = task.loss(out, batch)
    loss.backward()
    assert loss.ndim == 0 and enc.proj.weight.grad is not None

    res = task.evaluate(net, "test", batch_size=16)
    assert net.training  # mode restored
    assert res["n_samples"] == 40 and set(res) >= {"mae_deg", "mae_roll", "mae_pitch", "mae_yaw"}
    # an untrained head predicts "stay still": the same score as an all-zero predictor
    zero = task.evaluate(lambda b: ModelOutput(pred=torch.zeros_like(b["target"])), "test")
    assert res["mae_deg"] == pytest.approx(zero["mae_deg"])
    assert 0 < zero["mae_deg_ci95"] < zero["mae_deg"]  # the interval over the 40 test windows

    for name, (f, p, _) in regs["baselines"].items():
        baseline = f(p(), task=task)
        assert baseline.name == name
        if name != "lstm":
            baseline.fit(task)
            r = task.evaluate(baseline, "test")
            assert 0 < r["mae_deg"] < 180


def test_loss_kinds():
    task = VPTask.__new__(VPTask)
    task.params = VPParams.model_construct(loss="mse")
    batch = {"target": torch.zeros(2, 20, 3)}
    out = ModelOutput(pred=torch.full((2, 20, 3), 2.0))
    assert float(task.loss(out, batch)) == pytest.approx(4.0)
    task.params = VPParams.model_construct(loss="l1")
    assert float(task.loss(out, batch)) == pytest.approx(2.0)


# ---- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content,line,words",
    [
        ("0.0,1,2,3\n0.2,1,2,3\n0.4,1,abc,3\n", 3, "pitch is not a number"),
        ("0.0,1,2,3\n0.2,1,2\n", 2, "expected 4 comma-separated fields"),
        ("", 1, "empty file"),
        ("0.0,1,2,3\n0.2,1,nan,3\n", 2, "not finite"),
    ],
)
def test_malformed_trace_names_file_and_line(tmp_path, content, line, words):
    path = tmp_path / "simple_5Hz_user1.csv"
    path.write_text(content)
    with pytest.raises(TraceFormatError) as e:
        load_trace(path)
    msg = str(e.value)
    assert f"{path}:{line}:" in msg and words in msg and "\n" not in msg


def test_missing_trace_file_is_named(tmp_path):
    (tmp_path / "video1" / "5Hz").mkdir(parents=True)
    p = VPParams(data_dir=str(tmp_path), **{f"{s}_{k}": [1] for s in ("train", "valid", "test") for k in ("videos", "users")})
    with pytest.raises(TraceFormatError, match="simple_5Hz_user1.csv"):
        VPData(p, "test")


def test_missing_data_dir_is_a_validation_error_naming_the_path(tmp_path):
    missing = tmp_path / "no_such_data"
    with pytest.raises(ValidationError) as e:
        VPParams(data_dir=str(missing))
    assert str(missing) in str(e.value)
    with pytest.raises(ValidationError, match="extra"):
        VPParams(data_dir=str(tmp_path), hiswindow=5)  # a typo is caught too


def test_mae_interval_is_over_the_windows_own_errors():
    from mamba4net.core.stats import mean_interval
    from mamba4net.plugins.vp.metrics import MAEAccumulator

    acc = MAEAccumulator()
    true = torch.zeros(5, 2, 3, dtype=torch.float64)
    pred = torch.arange(5, dtype=torch.float64)[:, None, None].expand(5, 2, 3)  # window i off by i degrees
    acc.update(pred[:3], true[:3])
    acc.update(pred[3:], true[3:])
    res = acc.result()
    assert res["mae_deg"] == pytest.approx(2.0)
    assert res["mae_deg_ci95"] == pytest.approx(mean_interval([0.0, 1.0, 2.0, 3.0, 4.0])[1])
