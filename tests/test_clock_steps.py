"""Alarm timers against wall-clock steps (NTP at boot), in a real gateway process.

Only the gateway's clock is stepped (libfaketime, tests/faketime.py); the monotonic
clock runs on, as it does when NTP steps a real clock.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.clock_steps import escalation_across_step, inactivity_across_step
from tests.faketime import libfaketime
from tests.peers import Mosquitto

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.skipif(libfaketime() is None, reason="needs libfaketime (Debian: faketime)"),
]

ESCALATE_S = 3.0
# Long enough for the killed gateway to start again on a busy machine: it can only
# escalate once it runs (an alarm overdue by then escalates at once).
ESCALATE_AFTER_RESTART_S = 8.0
STEPS = {"+1h": 3600, "-1h": -3600, "+365d": 365 * 86400}


@pytest.mark.parametrize("step", list(STEPS))
def test_escalation_keeps_its_time_when_the_clock_steps(
    tmp_path: Path, broker: Mosquitto, step: str
) -> None:
    run = escalation_across_step(tmp_path, broker, step, escalate_s=ESCALATE_S)
    assert abs(run.error_s) < 1.0, run
    # The gateway did see the step: its own stamps are a whole step apart.
    assert abs(run.wall_gap_s - STEPS[step]) < 60, run


@pytest.mark.parametrize("step", ["+365d", "-1h"])
def test_escalation_survives_a_restart_with_a_stepped_clock(
    tmp_path: Path, broker: Mosquitto, step: str
) -> None:
    run = escalation_across_step(
        tmp_path, broker, step, escalate_s=ESCALATE_AFTER_RESTART_S, restart=True
    )
    # Same boot of the host: the time the gateway was down counts too.
    assert abs(run.error_s) < 1.0, run


@pytest.mark.parametrize("step", ["+365d", "-1h"])
def test_the_inactivity_window_keeps_its_length_when_the_clock_steps(
    tmp_path: Path, broker: Mosquitto, step: str
) -> None:
    waited = inactivity_across_step(tmp_path, broker, step, window_s=ESCALATE_S)
    assert abs(waited - ESCALATE_S) < 1.0, waited
