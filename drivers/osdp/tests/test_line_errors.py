"""A line error is not a refused key: the driver against libosdp on a noisy shared line.

On a busy RS-485 line a reader's late reply can arrive while libosdp waits for another
reader; libosdp then drops the reader it waited for at once ("Invalid pd address"),
as fast as a reader with a wrong key fails its secure channel. Stress runs found the
driver telling the installer a silent reader's key did not match.
"""

from __future__ import annotations

import asyncio
import threading
import time

from drivers.osdp import OsdpDriver
from tests.driverkit import running, until
from tests.recording import RecordingContext

from .test_driver import Bench, bench  # noqa: F401  (the fixture, shared with test_driver)

# osdp_ACK from the reader at address 1 (0x80 marks a reply): the control panel takes
# it while it asks the silent reader at address 3 for its ID.
LATE_REPLY = b"\x53\x81\x08\x00\x04\x40\x00\x00"


def test_a_silent_reader_dropped_for_a_line_error_is_not_called_a_wrong_key(
    bench: Bench,  # noqa: F811  (the fixture imported above)
    recording_ctx: RecordingContext,
) -> None:
    specs = bench.specs(
        ("cellar", {"address": 3, "secure_channel": "scbk", "scbk": {"file": "good.scbk"}})
    )
    driver = OsdpDriver(specs, recording_ctx)
    stop = threading.Event()

    def busy_line() -> None:
        while not stop.is_set():
            bench.line.inject(LATE_REPLY)
            time.sleep(0.02)

    async def body() -> None:
        async with running(driver):
            noise = threading.Thread(target=busy_line, daemon=True)
            noise.start()
            try:
                await until(lambda: "cellar" in recording_ctx.availability, timeout=15)
            finally:
                stop.set()
                noise.join()

    asyncio.run(body())
    available, reason = recording_ctx.availability["cellar"]
    assert available is False
    assert "no reply" in reason and "key" not in reason.split("(")[0], reason
