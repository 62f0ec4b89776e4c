"""RobustMPC (Yin et al., SIGCOMM'15) as in the Pensieve/Genet/NetLLM baselines.

Before each chunk: predict the throughput as the harmonic mean of the last ``past`` chunk
throughputs divided by ``1 + max`` of the last ``past`` relative prediction errors, then search
every quality sequence for the next ``horizon`` chunks (fewer near the end of the video), score
each with the QoE model (bitrate - 4.3 * rebuffer - smoothness, buffer simulated with the
predicted throughput, +4 s per chunk) and fetch the first chunk of the best one (the *last*
best in product order on ties, as the reference code's ``>=`` scan does).

* ``max_jump`` — NetLLM's RobustMPC (the one behind its published 0.844) only considers
  sequences that move at most one level per chunk, starting from the current quality
  (``max_jump=1``, the default); ``None`` searches all 6^horizon sequences (Pensieve's original
  search), which scores much higher on fcc-test (see benchmarks/abr_baselines.py).
* ``genet_sizes`` — NetLLM's (and Pensieve's) planner reads the size of planned chunk ``j`` at
  video index ``next + j + 1``, one chunk ahead of the one it will fetch; ``True`` (default)
  reproduces that, ``False`` plans with the sizes of the chunks actually fetched.

Vectorised: traces are grouped by their current quality, and each group is scored against that
quality's table of allowed sequences at once, as (traces, sequences) numpy arrays.
"""

from __future__ import annotations

import itertools

import numpy as np

from ..sim import BITRATES_MBPS, REBUF_PENALTY, Observation
from ..video import CHUNK_S, N_CHUNKS, N_QUALITIES
from .rate_based import harmonic_mean


class RobustMPC:
    name = "robust_mpc"

    def __init__(self, horizon: int = 5, past: int = 5, max_jump: int | None = 1, genet_sizes: bool = True,
                 video_sizes: np.ndarray | None = None):
        self.horizon, self.past, self.max_jump, self.offset = horizon, past, max_jump, int(genet_sizes)
        self.sizes = video_sizes  # (6, 49) bytes; taken from the task when fitted
        self._tables: dict[tuple[int, int], np.ndarray] = {}

    def fit(self, task) -> None:
        self.sizes = task.video_sizes

    def reset(self, n: int) -> None:
        self.last_estimate = np.zeros(n)  # the previous decision's harmonic-mean estimate (MB/s)
        self.errors: list[np.ndarray] = []

    def combos(self, start: int, h: int) -> np.ndarray:
        """(K, h) quality sequences of length ``h`` allowed from current quality ``start``, in
        ``itertools.product`` order."""
        key = (start, h)
        if key not in self._tables:
            seqs = np.array(list(itertools.product(range(N_QUALITIES), repeat=h)), dtype=np.int64)
            if self.max_jump is not None:
                path = np.concatenate([np.full((len(seqs), 1), start), seqs], 1)  # (K, h + 1)
                seqs = seqs[np.abs(np.diff(path, axis=1)).max(1) <= self.max_jump]
            self._tables[key] = seqs
        return self._tables[key]

    def predict(self, obs: Observation) -> np.ndarray:
        """(N,) robust throughput estimate in MB/s; updates the error history (call once per chunk)."""
        actual = obs.throughput_mbps[:, -1] / 8.0  # MB/s of the chunk just fetched
        harmonic = harmonic_mean(obs.throughput_mbps[:, -self.past :] / 8.0)  # (N,) MB/s
        seen = self.last_estimate > 0  # no error before the first estimate
        error = np.where(seen, np.abs(self.last_estimate - actual) / np.maximum(actual, 1e-12), 0.0)
        self.errors.append(error)
        max_error = np.max(np.stack(self.errors[-self.past :], 1), 1)
        self.last_estimate = harmonic
        return np.maximum(harmonic / (1.0 + max_error), 1e-12)

    def act(self, obs: Observation) -> np.ndarray:
        if self.sizes is None:
            raise RuntimeError("RobustMPC needs the video's chunk sizes: call fit(task) first")
        predicted = self.predict(obs)  # (N,) MB/s
        next_chunk = N_CHUNKS - int(obs.chunks_left[0])  # index of the chunk to fetch now
        h = min(self.horizon, N_CHUNKS - next_chunk)
        actions = np.zeros(len(predicted), dtype=np.int64)
        for start in np.unique(obs.last_quality):
            rows = np.flatnonzero(obs.last_quality == start)
            actions[rows] = self._best_first(self.combos(int(start), h), next_chunk, int(start),
                                             obs.buffer_s[rows], predicted[rows])
        return actions

    def _best_first(self, combos: np.ndarray, next_chunk: int, start: int, buffer_s: np.ndarray,
                    predicted: np.ndarray) -> np.ndarray:
        """First quality of the best sequence of ``combos`` (K, h) for each of n traces."""
        n, (k, h) = len(buffer_s), combos.shape
        buffer = np.repeat(buffer_s[:, None], k, 1)  # (n, K) seconds
        rebuffer = np.zeros((n, k))
        for j in range(h):
            index = next_chunk + j + self.offset
            size_mb = self.sizes[combos[:, j], index] / 1e6 if index < self.sizes.shape[1] else np.zeros(k)
            download = size_mb[None, :] / predicted[:, None]  # (n, K) seconds
            rebuffer += np.maximum(download - buffer, 0.0)
            buffer = np.maximum(buffer - download, 0.0) + CHUNK_S
        rates = BITRATES_MBPS[combos]  # (K, h)
        path = np.concatenate([np.full((k, 1), BITRATES_MBPS[start]), rates], 1)
        smooth = np.abs(np.diff(path, axis=1)).sum(1)  # (K,)
        score = rates.sum(1)[None, :] - REBUF_PENALTY * rebuffer - smooth[None, :]  # (n, K)
        best = k - 1 - np.argmax(score[:, ::-1], 1)  # the last maximum
        return combos[best, 0]
