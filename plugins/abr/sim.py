"""The Pensieve/Genet chunk-level, trace-driven ABR simulator, played on N traces in lockstep.

Every episode is the same video (48 chunks of 4 s), so N traces are N parallel episodes that
all end together. Per trace and chunk (times in ms unless named ``_s``):

* **download** — starting at trace row ``ptr`` (``last_time`` = end of the previous transfer),
  each row delivers ``bw * 1e6 / 8 * (time[ptr] - last_time) * 0.95`` payload bytes; the chunk
  finishes inside the row that completes it (a fractional row). Passing the trace's last row
  wraps to row 1 with ``last_time = 0``. ``delay = transfer time + 80 ms RTT``, then, unless
  the environment is noise-free, ``delay *= U(0.9, 1.1)``.
* **buffer** — ``rebuffer = max(delay - buffer, 0)``; ``buffer = max(buffer - delay, 0) + 4 s``.
  Above 60 s the player sleeps in 500 ms steps until it is back under the cap; the trace clock
  advances by the sleep.
* **QoE** of the chunk = ``bitrate_Mbps - 4.3 * rebuffer_s - |bitrate_Mbps - previous bitrate_Mbps|``.

``reset()`` fetches chunk 0 at quality 1 (no decision, as Pensieve and NetLLM do; the reported
score skips that chunk) and returns ``(observation, info of chunk 0)``; then ``step(actions)`` is
called 47 times, once per remaining chunk; ``done`` turns True with chunk 47 (the 48th).
Start rows: ``start_ptrs`` if given (fcc-test's fixed ones), else random rows in 1..T-1 drawn
from ``seed``. ``reset()`` reseeds, so it replays the same episodes (start rows and noise); build
the environment with another seed for other ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .traces import Trace
from .video import BITRATES_KBPS, CHUNK_S, DEFAULT_QUALITY, N_CHUNKS, N_QUALITIES

RTT_MS = 80.0
PAYLOAD = 0.95
BUFFER_CAP_MS = 60_000.0
DRAIN_MS = 500.0
REBUF_PENALTY = 4.3
NOISE = (0.9, 1.1)
HISTORY = 8  # past chunks kept in an observation
BITRATES_MBPS = np.asarray(BITRATES_KBPS, dtype=np.float64) / 1000.0


@dataclass
class Observation:
    """What a policy sees before choosing the next chunk's quality (``N`` traces)."""

    last_quality: np.ndarray  # (N,) int, quality of the chunk just fetched
    buffer_s: np.ndarray  # (N,)
    throughput_mbps: np.ndarray  # (N, HISTORY) chunk bytes * 8 / delay, oldest first, 0 = none yet
    delay_s: np.ndarray  # (N, HISTORY) download time incl. RTT, oldest first, 0 = none yet
    next_sizes_bytes: np.ndarray  # (N, 6) the next chunk at each quality, zeros after the last
    chunks_left: np.ndarray  # (N,) int, chunks still to fetch

    def pensieve_state(self, s_len: int = 6) -> np.ndarray:
        """Pensieve's normalised state ``(N, 6, s_len)`` float32, history in the last columns:

        row 0 last bitrate / 4300 kbps; row 1 buffer / 10 s; row 2 throughput in MB/s
        (bytes / ms / 1000); row 3 delay / 10 s; row 4 columns 0..5: next chunk sizes in MB;
        row 5 min(chunks left, 48) / 48. Rows 0, 1 and 5 fill only the last column (Pensieve's
        networks read only that one).
        """
        n = len(self.buffer_s)
        s = np.zeros((n, 6, s_len), dtype=np.float32)
        k = min(s_len, HISTORY)
        s[:, 0, -1] = BITRATES_MBPS[self.last_quality] / BITRATES_MBPS[-1]
        s[:, 1, -1] = self.buffer_s / 10.0
        s[:, 2, -k:] = self.throughput_mbps[:, -k:] / 8.0
        s[:, 3, -k:] = self.delay_s[:, -k:] / 10.0
        q = min(s_len, N_QUALITIES)
        s[:, 4, :q] = self.next_sizes_bytes[:, :q] / 1e6
        s[:, 5, -1] = np.minimum(self.chunks_left, N_CHUNKS) / float(N_CHUNKS)
        return s


class AbrEnv:
    """N parallel episodes; see the module docstring for the rules."""

    def __init__(self, traces: list[Trace], video_sizes: np.ndarray, *, start_ptrs: list[int] | None = None,
                 noise: bool = False, seed: int = 0):
        if not traces:
            raise ValueError("AbrEnv needs at least one trace")
        if start_ptrs is not None and len(start_ptrs) != len(traces):
            raise ValueError(f"{len(start_ptrs)} start pointers for {len(traces)} traces")
        for i, t in enumerate(traces):
            if len(t.time_s) < 2 or not (t.bw_mbps[1:] > 0).any():
                raise ValueError(f"trace {t.name}: needs >= 2 rows and some positive bandwidth after row 0")
            if start_ptrs is not None and not 1 <= start_ptrs[i] < len(t.time_s):
                raise ValueError(f"trace {t.name}: start pointer {start_ptrs[i]} outside 1..{len(t.time_s) - 1}")
        video_sizes = np.asarray(video_sizes)
        if video_sizes.ndim != 2 or video_sizes.shape[0] != N_QUALITIES or video_sizes.shape[1] < N_CHUNKS:
            raise ValueError(f"video sizes must be ({N_QUALITIES}, >= {N_CHUNKS}) bytes, got {video_sizes.shape}")
        self.traces, self.sizes = traces, np.asarray(video_sizes)
        self.start_ptrs, self.noise, self.seed = start_ptrs, noise, seed
        self.n = len(traces)
        self.trace_names = [t.name for t in traces]
        self._times = [t.time_s for t in traces]
        self._bw = [t.bw_mbps * 1e6 / 8.0 for t in traces]  # bytes per second

    # --- episode -----------------------------------------------------------------------------
    def reset(self) -> tuple[Observation, dict[str, np.ndarray]]:
        """Start every episode and fetch chunk 0 at the default quality -> (obs, info of chunk 0)."""
        self.rng = np.random.default_rng(self.seed)
        if self.start_ptrs is not None:
            self.ptr = np.asarray(self.start_ptrs, dtype=np.int64).copy()
        else:
            self.ptr = np.array([self.rng.integers(1, len(t)) for t in self._times], dtype=np.int64)
        self.last_time = np.array([t[p - 1] for t, p in zip(self._times, self.ptr)], dtype=np.float64)
        self.buffer_ms = np.zeros(self.n)
        self.chunk = 0
        self.last_quality = np.full(self.n, DEFAULT_QUALITY, dtype=np.int64)
        self.tput_hist = np.zeros((self.n, HISTORY))
        self.delay_hist = np.zeros((self.n, HISTORY))
        obs, _, _, info = self._fetch(np.full(self.n, DEFAULT_QUALITY, dtype=np.int64))
        return obs, info

    def step(self, actions) -> tuple[Observation, np.ndarray, bool, dict[str, np.ndarray]]:
        """Fetch the next chunk of every trace at ``actions`` (N,) quality indices."""
        if not hasattr(self, "ptr"):
            raise RuntimeError("call reset() before step()")
        if self.chunk >= N_CHUNKS:
            raise RuntimeError("episode is over: call reset()")
        actions = np.asarray(actions)
        if actions.shape != (self.n,) or not np.issubdtype(actions.dtype, np.integer):
            raise ValueError(f"actions must be {self.n} integers, got shape {actions.shape} dtype {actions.dtype}")
        if actions.min() < 0 or actions.max() >= N_QUALITIES:
            raise ValueError(f"actions must be quality indices 0..{N_QUALITIES - 1}, got {actions.min()}..{actions.max()}")
        return self._fetch(actions.astype(np.int64))

    @property
    def done(self) -> bool:
        return self.chunk >= N_CHUNKS

    # --- one chunk ---------------------------------------------------------------------------
    def _fetch(self, quality: np.ndarray):
        sizes = self.sizes[quality, self.chunk].astype(np.float64)  # (N,) bytes
        delay = np.array([self._download(i, sizes[i]) for i in range(self.n)])  # (N,) ms
        delay = delay + RTT_MS
        if self.noise:
            delay = delay * self.rng.uniform(*NOISE, size=self.n)
        rebuffer = np.maximum(delay - self.buffer_ms, 0.0)
        buffer = np.maximum(self.buffer_ms - delay, 0.0) + CHUNK_S * 1000.0
        sleep = np.where(buffer > BUFFER_CAP_MS, np.ceil((buffer - BUFFER_CAP_MS) / DRAIN_MS) * DRAIN_MS, 0.0)
        buffer = buffer - sleep
        for i in np.flatnonzero(sleep):
            self._sleep(i, sleep[i])
        self.buffer_ms = buffer
        bitrate = BITRATES_MBPS[quality]
        smooth = np.abs(bitrate - BITRATES_MBPS[self.last_quality])
        reward = bitrate - REBUF_PENALTY * rebuffer / 1000.0 - smooth
        self.last_quality = quality
        self.chunk += 1
        self.tput_hist = np.roll(self.tput_hist, -1, axis=1)
        self.delay_hist = np.roll(self.delay_hist, -1, axis=1)
        self.tput_hist[:, -1] = sizes * 8.0 / delay / 1000.0  # Mbps
        self.delay_hist[:, -1] = delay / 1000.0
        info = {"quality": quality, "bitrate_mbps": bitrate, "rebuffer_s": rebuffer / 1000.0,
                "smooth_mbps": smooth, "delay_s": delay / 1000.0, "buffer_s": buffer / 1000.0,
                "sleep_s": sleep / 1000.0, "chunk_bytes": sizes, "reward": reward}
        return self._observation(), reward, self.done, info

    def _observation(self) -> Observation:
        if self.chunk < N_CHUNKS:
            nxt = self.sizes[:, self.chunk].astype(np.float64)  # (6,) bytes
        else:  # after the last chunk: nothing left to fetch
            nxt = np.zeros(N_QUALITIES)
        return Observation(
            last_quality=self.last_quality.copy(), buffer_s=self.buffer_ms / 1000.0,
            throughput_mbps=self.tput_hist.copy(), delay_s=self.delay_hist.copy(),
            next_sizes_bytes=nxt[None, :].repeat(self.n, 0),
            chunks_left=np.full(self.n, N_CHUNKS - self.chunk, dtype=np.int64),
        )

    def _advance_row(self, i: int, times: np.ndarray) -> None:
        self.last_time[i] = times[self.ptr[i]]
        self.ptr[i] += 1
        if self.ptr[i] >= len(times):  # wrap to row 1; the clock restarts at 0
            self.ptr[i] = 1
            self.last_time[i] = 0.0

    def _download(self, i: int, size: float) -> float:
        """Transfer ``size`` bytes on trace ``i`` from its current position -> time taken (ms)."""
        times, bw = self._times[i], self._bw[i]
        sent, delay_s = 0.0, 0.0
        while True:
            p = self.ptr[i]
            duration = times[p] - self.last_time[i]
            payload = bw[p] * duration * PAYLOAD
            if sent + payload > size:
                frac = (size - sent) / bw[p] / PAYLOAD
                delay_s += frac
                self.last_time[i] += frac
                return delay_s * 1000.0
            sent += payload
            delay_s += duration
            self._advance_row(i, times)

    def _sleep(self, i: int, sleep_ms: float) -> None:
        """Advance trace ``i``'s clock by ``sleep_ms`` (the player waits, nothing downloads)."""
        times = self._times[i]
        while True:
            duration = times[self.ptr[i]] - self.last_time[i]
            if duration > sleep_ms / 1000.0:
                self.last_time[i] += sleep_ms / 1000.0
                return
            sleep_ms -= duration * 1000.0
            self._advance_row(i, times)
