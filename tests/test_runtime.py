"""The runtime's supervision: a crashing service or driver is restarted, the rest go on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.process.runtime import Gateway
from tests.harness import write_config
from tests.peers import Mosquitto

SMOKE = {
    "id": "smoke-1",
    "kind": "smoke",
    "location": {"building": "1"},
    "driver": {"type": "simulated", "events": [{"type": "smoke.alarm", "every_s": 0.2}]},
}


def test_a_crashing_service_is_restarted_and_the_drivers_keep_emitting(
    tmp_path: Path, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = load_config(write_config(tmp_path / "gw.yaml", broker.url, [SMOKE]))
    starts: list[float] = []
    seen: list[str] = []

    async def flaky() -> None:
        starts.append(asyncio.get_running_loop().time())
        if len(starts) < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()  # the third start stays up

    async def scenario() -> None:
        gw = Gateway(loaded)
        gw.restart_pause_s = 0.1
        gw.services["flaky"] = flaky
        gw.message_observers.append(lambda m: seen.append(m.device.id))
        stop = asyncio.Event()
        run = asyncio.create_task(gw.run(stop))
        await asyncio.sleep(1.5)
        stop.set()
        await run

    asyncio.run(scenario())
    assert len(starts) == 3, "restarted after each crash, then left running"
    assert starts[1] - starts[0] >= 0.1
    assert caplog.text.count("flaky crashed; restarting it in 0.1 s") == 2
    assert seen.count("smoke-1") >= 3, "the driver went on emitting meanwhile"
