"""Progress of long loops: a tqdm bar on a terminal; without one (a log file, a batch job), a log
line at most once a minute (``desc: n/total (p%), elapsed, about ... left``); nothing when disabled."""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger("mamba4net")

LOG_EVERY_S = 60.0


def progress_bar(total: int, desc: str, initial: int = 0, enabled: bool = True, log_lines: bool = True, **extra):
    """A bar over ``total`` steps. ``log_lines=False``: no log lines without a terminal either (for a
    caller that logs its own)."""
    if enabled and not sys.stderr.isatty() and log_lines:
        return LoggedProgress(total, desc, initial, unit=extra.get("unit", ""))
    return tqdm(total=total, initial=initial, desc=desc, disable=not (enabled and sys.stderr.isatty()),
                dynamic_ncols=True, leave=False, **extra)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class LoggedProgress:
    """What the loops use of a tqdm bar (update, set_postfix, close, ``with``), written as log
    lines: one at most every ``every_s`` seconds, and one at the end if any was written before."""

    disable = True  # no bar is drawn (a caller that logs its own lines checks this)

    def __init__(self, total: int, desc: str, initial: int = 0, every_s: float = LOG_EVERY_S, unit: str = ""):
        self.total, self.desc, self.n, self.every_s = total, desc, initial, every_s
        self.scale, self.unit = (2**20, " MiB") if unit == "B" else (1, "")
        self.start_n, self.postfix, self.logged = initial, "", False
        self.t0 = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every_s and self.n < self.total:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed, done = now - self.t0, self.n - self.start_n
        left = f", about {_duration(elapsed / done * (self.total - self.n))} left" if done > 0 and self.total else ""
        share = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        log.info("%s: %s%s, %s elapsed%s%s", self.desc, self._count(), share, _duration(elapsed), left,
                 f" [{self.postfix}]" if self.postfix else "")
        self.logged = True

    def _count(self) -> str:
        if self.scale == 1:
            return f"{self.n}/{self.total}{self.unit}"
        return f"{self.n / self.scale:.0f}/{self.total / self.scale:.0f}{self.unit}"

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        self.postfix = text

    def close(self) -> None:
        if self.logged:
            log.info("%s: %s done in %s", self.desc, self._count(), _duration(time.monotonic() - self.t0))
            self.logged = False

    def __enter__(self) -> "LoggedProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
