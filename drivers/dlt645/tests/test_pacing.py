"""Meters on a DL/T 645 bus: all read at the start, then in groups spread over their
interval (gateway.sdk.pacing), against meters answering on the far end of a pty pair."""

from __future__ import annotations

from pathlib import Path

from drivers.dlt645.tests.responder import Bus
from gateway.sdk.pacing import GROUP
from tests.driverkit import assert_paced
from tests.peers import PtyPair
from tests.recording import RecordingContext

from .test_driver import meter, run_until, specs, telemetry


def test_meters_are_all_read_at_the_start_then_in_groups_over_the_interval(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    # GROUP + 4 meters at 2 s, one reading each so that a round of polls on the one line
    # takes well under half the interval: all at the start, then the first GROUP, and
    # the last 4 half an interval after them.
    ctx = recording_ctx
    addresses = {f"m{i:02d}": f"0000123450{i:02d}" for i in range(GROUP + 4)}
    names = list(addresses)
    devices = specs(tmp_path, ptys.a, addresses, poll_interval_s=2.0, readings=["energy_total"])
    with Bus(ptys.b, [meter(a, 100 + i) for i, a in enumerate(addresses.values())]):
        run_until(devices, ctx, lambda: all(len(telemetry(ctx, n)) >= 3 for n in names), timeout=30)

    assert_paced({n: [t.ts.timestamp() for t in telemetry(ctx, n)] for n in names}, 2.0)
