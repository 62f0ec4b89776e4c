"""Progress without a terminal: log lines at most once per interval, none when disabled."""

import logging

from mamba4net.core import progress


def test_log_lines_without_a_terminal(monkeypatch, caplog):
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    caplog.set_level(logging.INFO, logger="mamba4net")
    with progress.progress_bar(total=100, desc="cache") as bar:
        assert bar.disable  # a caller that logs its own lines sees no bar
        for i in range(100):
            clock[0] = 2.0 * (i + 1)  # 2 s a step: a line at most every 60 s
            bar.update(1)
            bar.set_postfix(loss="0.5")
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "cache: 30/100 (30%), 1m00s elapsed, about 2m20s left [loss=0.5]"
    assert len(lines) == 4 and lines[1].startswith("cache: 60/100 (60%), 2m00s")
    assert lines[-1] == "cache: 100/100 done in 3m20s"

    caplog.clear()
    for kwargs in ({"enabled": False}, {"log_lines": False}):  # disabled, or the caller logs its own
        bar = progress.progress_bar(total=10, desc="quiet", **kwargs)
        for i in range(10):
            clock[0] += 100.0
            bar.update(1)
        bar.close()
    fetch = progress.progress_bar(total=300 * 2**20, desc="fetch", unit="B")  # bytes shown in MiB
    clock[0] += 61.0
    fetch.update(100 * 2**20)
    assert caplog.records[-1].getMessage() == "fetch: 100/300 MiB (33%), 1m01s elapsed, about 2m02s left"
    fetch.close()
    caplog.clear()
    short = progress.progress_bar(total=3, desc="short")  # under a minute: nothing at all
    short.update(3)
    short.close()
    assert caplog.records == []
