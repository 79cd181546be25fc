"""Escalation of an alarm in a real gateway process whose wall clock is stepped meanwhile.

Shared by tests/test_clock_steps.py (asserts) and scripts/bench_clock_steps.py (figures).
The gateway runs under libfaketime (tests/faketime.py); the test measures on its own
monotonic clock, from the reply to the command that injected the smoke alarm (the alarm
is raised before that reply is sent) to receiving the escalated document.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.faketime import FakeTime
from tests.harness import Subscriber
from tests.peers import Mosquitto, wait_for
from tests.test_alarms_e2e import sim_device, start_site

__all__ = ["Escalation", "escalation_across_step", "inactivity_across_step"]


@dataclass(frozen=True)
class Escalation:
    """What one run saw: seconds from raised to escalated, and the stamps the gateway used."""

    step: str
    restart: bool
    configured_s: float
    measured_s: float
    raised_at: str
    escalated_at: str

    @property
    def error_s(self) -> float:
        return self.measured_s - self.configured_s

    @property
    def wall_gap_s(self) -> float:
        """escalated_at - raised_at by the gateway's (stepped) wall clock."""
        return (
            datetime.fromisoformat(self.escalated_at) - datetime.fromisoformat(self.raised_at)
        ).total_seconds()


def escalation_across_step(
    workdir: Path,
    broker: Mosquitto,
    step: str,
    *,
    escalate_s: float,
    restart: bool = False,
) -> Escalation:
    """Raise a smoke alarm, step the gateway's wall clock by `step`, time its escalation.

    With `restart` the gateway is killed (SIGKILL) right after the alarm is raised and
    started again with the stepped clock: the escalation must survive both.
    """
    fake = FakeTime(workdir / "faketime")
    site = start_site(
        workdir,
        broker,
        [sim_device("smoke-1")],
        env=fake.env(),
        alarms={"damping_s": 0, "escalation": {"critical": escalate_s}},
    )
    try:
        site.inject("smoke-1", "smoke.alarm")
        raised_at = time.monotonic()
        site.wait_doc(lambda d: d["state"] == "active")
        if restart:
            site.gw.kill()
            fake.set(step)
            site.gw.start()
        else:
            fake.set(step)
        escalated = site.wait_doc(lambda d: d["escalation"] == 1, timeout=escalate_s + 15)
        [got] = [m for m in site.alarms.snapshot() if m.payload and m.json()["escalation"] == 1][:1]
        return Escalation(
            step,
            restart,
            escalate_s,
            got.at - raised_at,
            escalated["raised_at"],
            escalated["updated_at"],
        )
    finally:
        site.stop()


def inactivity_across_step(
    workdir: Path, broker: Mosquitto, step: str, *, window_s: float
) -> float:
    """Seconds from a resident's last motion to `elderly.inactivity`, the clock stepped between.

    The motion is injected on a flat's sensor; right after, the gateway's wall clock is
    stepped by `step`.  The inactivity check must still wait exactly its window.
    """
    fake = FakeTime(workdir / "faketime")
    flat = {"building": "1", "floor": 2, "unit": "201"}
    devices = [
        {"id": d, "kind": "elderly_alarm", "location": flat, "driver": {"type": "simulated"}}
        for d in ("sos-201", "pir-201")
    ]
    site = start_site(
        workdir,
        broker,
        devices,
        env=fake.env(),
        wellness={"checks": [{"device": "sos-201", "window_s": window_s}]},
    )
    events = Subscriber(broker.port, f"{site.base}/devices/+/events").start()
    try:
        site.inject("pir-201", "activity.motion")
        moved = time.monotonic()
        fake.set(step)

        def raised() -> list[float]:
            return [
                m.at
                for m in events.snapshot()
                if m.at > moved and m.json()["event"]["type"] == "elderly.inactivity"
            ]

        assert wait_for(raised, timeout=window_s + 15), site.gw.log()[-3000:]
        return raised()[0] - moved
    finally:
        events.stop()
        site.stop()
