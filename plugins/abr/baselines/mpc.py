"""RobustMPC (Yin et al., SIGCOMM'15), as in the Pensieve/Genet baselines: exhaustive search over
the next ``horizon`` chunks' qualities, planned against a throughput estimate discounted by the
recent prediction error. Vectorised over traces and the 6^horizon quality sequences.

``max_jump`` (Genet's "jump action" variant, the one NetLLM's numbers come from) only considers
sequences that move at most that many levels per chunk, starting from the current quality;
``None`` searches every sequence (Pensieve's original), which scores much higher here (see the
README's ABR table). ``genet_sizes`` plans with the size of the chunk *after* each planned one, an
off-by-one in Genet's code that NetLLM's published RobustMPC number (0.844) inherits."""

from __future__ import annotations

import itertools

import numpy as np

from ..sim import BITRATES_MBPS, REBUF_PENALTY, Observation
from ..video import CHUNK_S, N_CHUNKS, N_QUALITIES
from .rate_based import harmonic_mean


class RobustMPC:
    name = "robust_mpc"

    def __init__(self, horizon: int = 5, past: int = 5, max_jump: int | None = 1, genet_sizes: bool = False,
                 video_sizes: np.ndarray | None = None):
        self.horizon, self.past, self.max_jump, self.offset = horizon, past, max_jump, int(genet_sizes)
        self.combos = np.array(list(itertools.product(range(N_QUALITIES), repeat=horizon)))  # (K, h)
        self.sizes = video_sizes  # (6, 49) bytes; taken from the task when fitted

    def fit(self, task) -> None:
        self.sizes = task.video_sizes

    def reset(self, n: int) -> None:
        self.last_estimate = np.zeros(n)  # the previous decision's harmonic-mean estimate (MB/s)
        self.errors: list[np.ndarray] = []

    def act(self, obs: Observation) -> np.ndarray:
        if self.sizes is None:
            raise RuntimeError("RobustMPC needs the video's chunk sizes: call fit(task) first")
        n = len(obs.buffer_s)
        actual = obs.throughput_mbps[:, -1] / 8.0  # MB/s of the chunk just fetched
        harmonic = harmonic_mean(obs.throughput_mbps[:, -self.past :] / 8.0)  # (N,) MB/s
        error = np.where(self.last_estimate > 0, np.abs(self.last_estimate - actual) / np.maximum(actual, 1e-9), 0.0)
        self.errors.append(error)
        max_error = np.max(np.stack(self.errors[-self.past :], 1), 1)
        predicted = np.maximum(harmonic / (1.0 + max_error), 1e-9)  # (N,) MB/s
        self.last_estimate = harmonic

        next_chunk = N_CHUNKS - int(obs.chunks_left[0])  # index of the chunk to fetch now
        h = min(self.horizon, N_CHUNKS - next_chunk)
        combos = self.combos[:, :h]  # (K, h); truncated duplicates tie, the rule below picks one
        rebuffer = np.zeros((n, len(combos)))
        buffer = np.repeat(obs.buffer_s[:, None], len(combos), 1)  # (N, K) seconds
        smooth = np.zeros((n, len(combos)))
        last = np.repeat(BITRATES_MBPS[obs.last_quality][:, None], len(combos), 1)
        for j in range(h):
            index = next_chunk + j + self.offset
            size_mb = (self.sizes[combos[:, j], index] if index < self.sizes.shape[1] else np.zeros(len(combos))) / 1e6
            download = size_mb[None, :] / predicted[:, None]  # (N, K) seconds
            rebuffer += np.maximum(download - buffer, 0.0)
            buffer = np.maximum(buffer - download, 0.0) + CHUNK_S
            rate = BITRATES_MBPS[combos[:, j]][None, :]
            smooth += np.abs(rate - last)
            last = np.broadcast_to(rate, last.shape)
        bitrate = BITRATES_MBPS[combos].sum(1)[None, :]  # (1, K)
        score = bitrate - REBUF_PENALTY * rebuffer - smooth  # (N, K)
        if self.max_jump is not None:
            steps = np.abs(np.diff(combos, axis=1)).max(1, initial=0)  # (K,)
            first = np.abs(combos[None, :, 0] - obs.last_quality[:, None])  # (N, K)
            allowed = (first <= self.max_jump) & (steps <= self.max_jump)[None, :]
            score = np.where(allowed, score, -np.inf)
        # Pensieve keeps the last sequence reaching the maximum (">=" while scanning in order)
        best = score.shape[1] - 1 - np.argmax(score[:, ::-1], 1)
        return combos[best, 0].astype(np.int64)
