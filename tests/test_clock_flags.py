"""Every document with a timestamp says whether the gateway's clock was synced: a real
gateway process, asked to trust its clock or to ask the kernel.

The kernel's answer on the machine running the test is the expectation for `kernel`
(CI containers usually report "not synchronised"); telemetry and health, which carried
the flag before, must agree with every other document.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from community_protocol.schemas import validator
from gateway.config import ClockCheck
from gateway.sdk.clock import Clock
from gateway.sdk.model import ClockState
from tests.harness import Subscriber
from tests.peers import Mosquitto
from tests.test_alarms_e2e import sim_device, start_site

pytestmark = [pytest.mark.broker]


@pytest.mark.parametrize("check", [ClockCheck.TRUST, ClockCheck.KERNEL])
def test_status_availability_alarm_reply_and_telemetry_say_the_same(
    tmp_path: Path, broker: Mosquitto, check: ClockCheck
) -> None:
    expected = str(Clock(check).state())
    site = start_site(
        tmp_path, broker, [sim_device("smoke-1")], clock={"check": str(check)}, alarms={}
    )
    everything = Subscriber(broker.port, f"{site.base}/#").start()
    try:
        site.inject("smoke-1", "smoke.alarm")
        alarm = site.wait_doc(lambda d: d["state"] == "active")
        reply = site.req.ask(f"{site.base}/cmd/ping", b"")
        assert everything.wait(lambda ms: any(m.topic.endswith("/events") for m in ms))
        seen = {
            m.topic.rsplit("/", 1)[-1]: json.loads(m.payload)
            for m in everything.snapshot()
            if m.payload.startswith(b"{")
        }
    finally:
        everything.stop()
        site.stop()
    status, availability, event = seen["status"], seen["availability"], seen["events"]
    validator("status").validate(status)
    validator("availability").validate(availability)
    assert {
        "status": status["clock"],
        "availability": availability["clock"],
        "alarm": alarm["clock"],
        "reply": reply["clock"],
        "event": event["clock"],
    } == dict.fromkeys(["status", "availability", "alarm", "reply", "event"], expected)
    if expected == ClockState.UNSYNCED:
        assert "uptime_ms" in event, "an unsynced event says how to place it"
