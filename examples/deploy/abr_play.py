"""Play ABR episodes on the fcc-test traces with an exported student: onnxruntime and numpy only.

    mamba4net export RUN_DIR                           # an examples/abr.yaml run
    python examples/deploy/abr_play.py RUN_DIR [--traces 100] [--data DIR]

The simulator is mamba4net's chunk-level Pensieve/Genet simulator (``plugins/abr/sim.py``, pure
numpy); the decisions are the ONNX model's alone. It prints the mean QoE over the traces (the same
figure as the run's ``results.json``: the decisions are the PyTorch student's) and the latency of
one decision for a single stream, and checks that torch was never imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_decider import Decider  # noqa: E402

from mamba4net.plugins.abr.rollout import rollout, summarize  # noqa: E402  (numpy only)
from mamba4net.plugins.abr.sim import AbrEnv  # noqa: E402
from mamba4net.plugins.abr.splits import load_split  # noqa: E402
from mamba4net.plugins.abr.video import load_video_sizes  # noqa: E402

N_ACTIONS = 6


class OnnxPolicy:
    """The rollout's policy interface (reset / act / observe) around a :class:`Decider`."""

    def __init__(self, decider: Decider):
        self.decider = decider
        c = decider.constants
        self.target, self.scale, self.s_len = c["target_return"], c["return_scale"], int(c["s_len"])

    def reset(self, n: int) -> None:
        self.decider.reset(n)
        self.rtg = np.full(n, self.target / self.scale, dtype=np.float32)
        self.prev = np.full(n, N_ACTIONS, dtype=np.int64)
        self.t = 0

    def act(self, obs) -> np.ndarray:
        n = len(self.rtg)
        logits = self.decider.decide(rtg=self.rtg, state=obs.pensieve_state(self.s_len), prev_action=self.prev,
                                     timestep=np.full(n, self.t, dtype=np.int64))
        self.prev, self.t = logits.argmax(-1).astype(np.int64), self.t + 1
        return self.prev

    def observe(self, reward: np.ndarray) -> None:
        self.rtg = (self.rtg - np.asarray(reward, dtype=np.float32) / self.scale).astype(np.float32)


def test_env(data: Path, limit: int | None = None) -> AbrEnv:
    traces, ptrs = load_split(data / "abr", "test")
    if limit is not None and limit < len(traces):
        keep = np.linspace(0, len(traces) - 1, limit).round().astype(int)
        traces, ptrs = [traces[i] for i in keep], [ptrs[i] for i in keep]
    return AbrEnv(traces, load_video_sizes(data / "abr"), start_ptrs=ptrs)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--role", default="student")
    ap.add_argument("--traces", type=int, default=None, help="evenly spaced fcc-test traces (default: all 100)")
    default_data = os.environ.get("MAMBA4NET_DATA") or Path(__file__).resolve().parents[3] / "shared" / "data"
    ap.add_argument("--data", type=Path, default=Path(default_data))
    args = ap.parse_args(argv)

    policy = OnnxPolicy(Decider(args.run_dir / "deploy" / f"{args.role}.json"))
    episode = rollout(test_env(args.data, args.traces), policy)
    scores = summarize(episode)
    print(f"QoE {scores['qoe']:.4f} over {int(scores['n_traces'])} fcc-test traces "
          f"(bitrate {scores['bitrate_mbps']:.3f} Mbps, rebuffering {scores['rebuffer_s']:.4f} s/chunk)")

    times = []  # one stream, one decision at a time: what a device does
    env, start = test_env(args.data, 1), time.perf_counter
    obs, _ = env.reset()
    policy.reset(1)
    while not env.done:
        t0 = start()
        actions = policy.act(obs)
        times.append(start() - t0)
        obs, reward, _, _ = env.step(actions)
        policy.observe(reward)
    print(f"one stream: {statistics.median(times) * 1e3:.3f} ms per decision (median of {len(times)}, 1 thread)")
    print("torch imported:", "torch" in sys.modules)


if __name__ == "__main__":
    main()
