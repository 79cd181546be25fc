"""A driver's meters: all read when the gateway starts, then in groups spread over their
interval (gateway.sdk.pacing), against a real pymodbus server on loopback TCP."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.sdk.pacing import GROUP, Cadence, first_offsets
from tests.driverkit import assert_paced
from tests.peers import free_port
from tests.recording import HistoryContext

from .helpers import meter_unit, running, specs, telemetry, wait_until
from .peers import ModbusPeer
from .test_tcp import device, tcp


def test_groups_of_devices_share_the_interval_evenly() -> None:
    assert first_offsets([10.0] * GROUP) == [0.0] * GROUP  # one burst: nothing to spread
    three = first_offsets([10.0] * (2 * GROUP + 1))
    assert sorted(set(three)) == [0.0, 10 / 3, 20 / 3]
    assert three.count(0.0) == GROUP and three[-1] == 20 / 3
    assert first_offsets([1.0, 60.0], group=1) == [0.0, 30.0]  # each its own interval's share
    assert first_offsets([]) == []


def test_meters_are_all_read_at_the_start_then_in_groups_over_the_interval(
    tmp_path: Path, ctx: HistoryContext
) -> None:
    # GROUP + 4 meters at 1 s: all at once when the gateway starts (the installer sees
    # every meter), then the first GROUP together and the last 4 half an interval later,
    # so their readings reach the outbox in two short bursts instead of one long one.
    port = free_port()
    units = list(range(1, GROUP + 5))
    peer = ModbusPeer([meter_unit(u, "eastron_sdm120", voltage=200.0 + u) for u in units])
    names = [f"m{u}" for u in units]
    devices = "".join(device(f"m{u}", "eastron_sdm120", u, tcp(port), interval=1.0) for u in units)

    async def scenario() -> None:
        await peer.start_tcp(port)
        try:
            async with running(specs(tmp_path, devices), ctx):
                await wait_until(
                    lambda: all(len(telemetry(ctx.messages, n)) >= 3 for n in names), timeout=20
                )
        finally:
            await peer.stop()

    asyncio.run(scenario())

    assert_paced({n: [t.ts.timestamp() for t in telemetry(ctx.messages, n)] for n in names}, 1.0)


def test_a_cadence_adds_its_phase_once_keeps_it_through_failures_and_never_falls_behind() -> None:
    c = Cadence(due=100.0, phase=0.5)
    c.retry(2.0, now=100.1)  # a failed first poll: backoff from now, the phase kept
    assert (c.due, c.phase) == (102.1, 0.5)
    c.keep(1.0, now=102.2)  # the first success: interval plus the phase, once
    assert (c.due, c.phase) == (103.6, 0.0)
    c.keep(1.0, now=103.7)
    assert c.due == 104.6  # the rhythm, not the time the poll ended
    c.keep(1.0, now=107.0)  # a poll that overran: due now, not a burst of missed ones
    assert c.due == 107.0
