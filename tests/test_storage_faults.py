"""Storage under faults: a fast device, a full disk, a corrupted outbox or store."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.runtime import Gateway
from tests.harness import write_config
from tests.peers import Mosquitto


def meter(device_id: str, rate_hz: float) -> dict[str, Any]:
    return {
        "id": device_id,
        "kind": "meter",
        "location": {"building": "1", "floor": 1, "unit": device_id},
        "driver": {"type": "simulated", "profile": "household_electricity", "rate_hz": rate_hz},
    }


@pytest.mark.broker
def test_a_fast_device_is_not_held_to_one_reading_per_commit(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # 100 readings/s from one device while the outbox lingers 50 ms per commit: a
    # hand-off that waits for each commit stores at most ~20/s and skips the rest.
    config = write_config(
        tmp_path / "gw.yaml",
        broker.url,
        [meter("fast", 100)],
        outbox={"commit_interval_ms": 50},
    )
    loaded = load_config(config)
    figures: dict[str, Any] = {}

    async def scenario() -> None:
        gw = Gateway(loaded)
        stop = asyncio.Event()
        run = asyncio.create_task(gw.run(stop))
        await asyncio.sleep(2.0)
        figures.update(gw.health_doc())
        stop.set()
        await run

    asyncio.run(scenario())
    sim = figures["drivers"]["simulated"]
    assert sim["telemetry"] >= 150, sim
    assert sim["late_skipped"] <= sim["telemetry"] // 10, sim
    # After SIGTERM every reading is accounted for: stored (delivered or still waiting)
    # or dropped, each with its own seq.
    with sqlite3.connect(tmp_path / "outbox.db") as db:
        next_seq, dropped = (
            int(v)
            for (v,) in db.execute(
                "SELECT value FROM meta WHERE key IN ('next_seq', 'dropped_telemetry')"
                " ORDER BY key DESC"
            )
        )
    assert next_seq - 1 >= sim["telemetry"] - figures["outbox"]["queued"]
    assert dropped == 0
