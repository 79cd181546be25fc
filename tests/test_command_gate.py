"""The command gate and the refusal log: a flood costs a bounded queue and bounded log."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.mqtt.commands import Admission, CommandGate, CommandRouter, Throttled
from tests.harness import FakeClock


def test_a_flood_runs_the_rate_refuses_as_many_then_drops_and_counts() -> None:
    clock = FakeClock()
    gate = CommandGate(rate_per_s=10, burst=10, max_pending=1000, clock=clock)
    verdicts = []
    for i in range(12_000):  # 12,000 commands in one second
        clock.now = i / 12_000
        verdicts.append(gate.admit())
    run = verdicts.count(Admission.RUN)
    busy = verdicts.count(Admission.BUSY)
    assert 10 <= run <= 21  # the burst, then the rate
    assert 10 <= busy <= 21  # refusals answered at the same rate, no more
    assert gate.dropped_total == 12_000 - run - busy
    assert gate.stats() == {
        "run_total": run,
        "busy_total": busy,
        "dropped_total": gate.dropped_total,
        "pending": run,
    }


def test_a_full_queue_drops_until_a_command_is_answered() -> None:
    clock = FakeClock()
    gate = CommandGate(rate_per_s=1000, burst=1000, max_pending=3, clock=clock)
    assert [gate.admit() for _ in range(4)] == [Admission.RUN] * 3 + [Admission.DROP]
    gate.done()
    assert gate.admit() is Admission.RUN


def test_refusals_are_logged_within_a_budget_and_the_rest_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttled = Throttled(logging.getLogger("test.flood"), interval_s=3600, budget=3)
    with caplog.at_level(logging.WARNING, "test.flood"):
        for i in range(10_000):
            throttled.warning("command %d refused", i)
    assert [r.getMessage() for r in caplog.records] == [
        "command 0 refused",
        "command 1 refused",
        "command 2 refused",
    ]


def test_a_deep_payload_is_refused_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = CommandRouter()
    deep = b'{"a": ' + b"[" * 60_000 + b"]" * 60_000 + b"}"
    reply = asyncio.run(router.handle("ping", deep))
    assert reply["ok"] is False and "nests deeper than 32 levels" in reply["error"]
    assert not any(r.exc_info for r in caplog.records)
