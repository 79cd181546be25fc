"""A bus's meters: all read when the gateway starts, then spread over their interval
(gateway.sdk.pacing), against a real pymodbus server on loopback TCP."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from tests.peers import free_port
from tests.recording import HistoryContext

from .helpers import meter_unit, running, specs, telemetry, wait_until
from .peers import ModbusPeer
from .test_tcp import device, tcp


def test_meters_on_one_bus_are_all_read_at_the_start_then_spread_over_the_interval(
    tmp_path: Path, ctx: HistoryContext
) -> None:
    # Four meters on one endpoint, 0.8 s apart: all four at once when the gateway
    # starts (the installer sees every meter), then each in its own quarter of the
    # interval, so their readings never reach the outbox in one burst.
    port = free_port()
    peer = ModbusPeer([meter_unit(u, "eastron_sdm120", voltage=230.0 + u) for u in (1, 2, 3, 4)])
    names = [f"m{u}" for u in (1, 2, 3, 4)]
    devices = "".join(
        device(f"m{u}", "eastron_sdm120", u, tcp(port), interval=0.8) for u in (1, 2, 3, 4)
    )

    async def scenario() -> None:
        await peer.start_tcp(port)
        try:
            async with running(specs(tmp_path, devices), ctx):
                await wait_until(
                    lambda: all(len(telemetry(ctx.messages, n)) >= 3 for n in names), timeout=15
                )
        finally:
            await peer.stop()

    asyncio.run(scenario())
    first = [telemetry(ctx.messages, n)[0].ts.timestamp() for n in names]
    assert max(first) - min(first) < 0.2, first
    # From the second round on, meter i comes i/4 of the interval after meter 0.
    for round_ in (1, 2):
        at = [telemetry(ctx.messages, n)[round_].ts.timestamp() for n in names]
        gaps = [b - a for a, b in itertools.pairwise(at)]
        assert all(0.1 < g < 0.3 for g in gaps), (round_, gaps)
    # And each keeps its interval.
    for n in names:
        ts = [t.ts.timestamp() for t in telemetry(ctx.messages, n)[1:3]]
        assert 0.7 < ts[1] - ts[0] < 0.9, (n, ts)
