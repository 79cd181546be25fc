"""ThreadDeaths: the first thread to die is reported once; a stop asked for is not a death."""

from __future__ import annotations

import logging
import threading

import pytest

from gateway.process.supervision import ThreadDeath, ThreadDeaths


def die(name: str, exc: BaseException) -> None:
    def run() -> None:
        raise exc

    thread = threading.Thread(target=run, name=name)
    thread.start()
    thread.join()


def test_the_first_death_is_reported_once_in_one_line_and_the_hook_restored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deaths: list[ThreadDeath] = []
    before = threading.excepthook
    with caplog.at_level(logging.INFO, "gateway.process.supervision"), ThreadDeaths(deaths.append):
        die("sink-influx", OverflowError("int too large to convert to float"))
        die("uplink", ValueError("second"))
        die("quiet", SystemExit(0))  # what a thread may end with on purpose
    assert threading.excepthook is before
    assert [d.thread for d in deaths] == ["sink-influx"]
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1
    assert lines[0].startswith(
        "thread sink-influx died: OverflowError: int too large to convert to float"
        " (at test_supervision.py:"
    )


def test_a_death_while_stopping_is_a_warning_and_no_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deaths: list[ThreadDeath] = []
    with ThreadDeaths(deaths.append, stopping=lambda: True):
        die("uplink", RuntimeError("outbox closed"))
    assert deaths == []
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "while the gateway was stopping" in caplog.records[0].getMessage()
