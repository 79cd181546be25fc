"""How long an alarm signal blocks the event loop, and how long until it is published.

The alarm engine observes events on the event loop.  Each signal changes an alarm,
which must be on disk (SQLite, `synchronous=FULL`) before its document is published.

(A) Baseline: the old way, measured in this run: the engine's change saved with
    `AlarmStore.save` on the loop, then published.
(B) The engine as it is: `observe()` hands the change to the store's writer thread and
    returns; the document is published from the write's callback.

For each: how long the loop was held per signal (median, p99, max), and from the
signal to the document in the outbox's queue (median, p99).  `--signals` smoke alarms
raised and cleared in turn on `--devices` detectors, `--gap-ms` apart.

    python -m scripts.bench_alarm_writes [--signals 400] [--devices 8] [--gap-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from community_protocol.topics import Topics
from gateway.alarms.engine import AlarmEngine
from gateway.alarms.settings import AlarmsConfig
from gateway.config import ClockCheck, SyncMode
from gateway.sdk.clock import Clock
from gateway.sdk.model import DeviceRef, Event, EventType, Identity, Kind, Location
from gateway.storage.outbox import Consumer, Outbox

T0 = datetime(2026, 12, 6, tzinfo=UTC)


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:7.2f}"


def _report(name: str, held: list[float], latency: list[float]) -> None:
    print(
        f"{name}: loop held per signal median {statistics.median(held) * 1000:6.2f} ms,"
        f" p99 {_ms(held, 0.99)} ms, max {max(held) * 1000:7.2f} ms;"
        f" signal -> published median {statistics.median(latency) * 1000:6.2f} ms,"
        f" p99 {_ms(latency, 0.99)} ms"
    )


async def _run(folder: Path, *, blocking: bool, signals: int, devices: int, gap_s: float) -> None:
    outbox = Outbox(
        folder / "outbox.db",
        max_messages=100_000,
        commit_interval_ms=0,
        sync=SyncMode.FULL,
        consumers=[Consumer("mqtt")],
    )
    outbox.open()
    engine = AlarmEngine(
        AlarmsConfig.model_validate({"damping_s": 0}),
        path=folder / "alarms.db",
        topics=Topics("bench/v1", Identity("site", "gw")),
        devices={},
        outbox=outbox,
        clock=Clock(ClockCheck.TRUST),
    )
    engine.start()
    sent: dict[tuple[str, int], float] = {}
    latency: list[float] = []

    def published(doc: dict[str, Any]) -> None:
        started = sent.pop((doc["alarm_id"], doc["rev"]), None)
        if started is not None:
            latency.append(time.monotonic() - started)

    engine.listen(published)
    if blocking:
        _make_blocking(engine)
    refs = [DeviceRef(f"smoke-{i}", Kind.SMOKE, Location("1", "1")) for i in range(devices)]
    held: list[float] = []
    for n in range(signals):
        ref = refs[n % devices]
        kind = EventType.SMOKE_ALARM if (n // devices) % 2 == 0 else EventType.SMOKE_CLEARED
        started = time.monotonic()
        engine.observe(Event(ref, T0, kind))
        held.append(time.monotonic() - started)
        for alarm in engine._require().open_alarms():
            if alarm.device.id == ref.id:
                sent.setdefault((alarm.id, alarm.rev), started)
        await asyncio.sleep(gap_s)
    deadline = time.monotonic() + 30
    while sent and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    engine.close()
    outbox.close()
    _report("(A) baseline, save on the loop" if blocking else "(B) writer thread", held, latency)


def _make_blocking(engine: AlarmEngine) -> None:
    """The engine before: each change saved on the loop, then published at once."""
    original = engine.store.save_later

    def save_now(changes: Any, mark: Any) -> Any:
        engine.store.save(changes, mark)
        return original([], mark)  # writes nothing: its callback publishes at once

    engine.store.save_later = save_now  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=400)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--gap-ms", type=float, default=5.0)
    args = parser.parse_args()
    for blocking in (True, False):
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(
                _run(
                    Path(tmp),
                    blocking=blocking,
                    signals=args.signals,
                    devices=args.devices,
                    gap_s=args.gap_ms / 1000,
                )
            )


if __name__ == "__main__":
    main()
