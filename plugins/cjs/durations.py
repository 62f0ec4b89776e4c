"""Task-duration model: which profiled sample a task gets (Decima / spark-sched-sim rules).

Two choices per task:

1. The executor-count key. Durations were profiled at a few executor counts (keys); a task of a
   job currently holding ``n`` executors uses the key equal to ``n`` if profiled, the smallest /
   largest key outside the profiled range, and otherwise one of the two bracketing keys at random,
   the nearer one more likely (linear in the distance). Decima draws between the same two keys.
2. The wave, from the executor's history:

   * ``fresh``: its first task since it joined this job -> a ``fresh_durations`` sample, or a
     ``first_wave`` sample plus the warm-up delay when the key has no fresh sample;
   * ``rest``: it just ran a task of this same stage -> ``rest_wave`` (else first wave, else fresh);
   * ``first``: it ran another stage of this job -> ``first_wave`` (else fresh).
"""

from __future__ import annotations

import random
from bisect import bisect_left

from .jobs import StageSpec

# kind -> (wave, add the warm-up delay) tried in order until one has samples at the key
FALLBACKS = {
    "fresh": (("fresh_durations", False), ("first_wave", True)),
    "rest": (("rest_wave", False), ("first_wave", False), ("fresh_durations", False)),
    "first": (("first_wave", False), ("fresh_durations", False)),
}


def executor_key(keys: tuple[int, ...], n: int, rng: random.Random) -> int:
    """The profiled executor count to sample at for a job holding ``n`` executors (``keys`` ascending)."""
    if n <= keys[0]:
        return keys[0]
    if n >= keys[-1]:
        return keys[-1]
    i = bisect_left(keys, n)
    if keys[i] == n:
        return n
    lo, hi = keys[i - 1], keys[i]
    return hi if rng.random() * (hi - lo) < n - lo else lo


def sample_duration(stage: StageSpec, kind: str, num_job_executors: int, rng: random.Random,
                    warmup_delay: float) -> float:
    """One task duration (ms) for ``stage`` given the executor's ``kind`` (fresh / first / rest)."""
    key = executor_key(stage.keys, num_job_executors, rng)
    for wave, warm in FALLBACKS[kind]:
        samples = stage.waves[wave][key]
        if samples:
            d = samples[rng.randrange(len(samples))]
            return d + warmup_delay if warm else d
    # load_job guarantees first_wave or fresh_durations at every key
    raise AssertionError(f"stage {stage.index} has no duration sample at {key} executors")
