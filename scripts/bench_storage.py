"""Storage fault injection: a full disk, corrupted outboxes, 32 fast Modbus meters.

Three runs, each printing its figures next to a baseline from the same run:

(S1) disk full with alarms during the full period: a gateway with its outbox on a
     2 MiB tmpfs (mounted here, needs root), two meters at 20 Hz and a smoke detector
     alarming every 0.5 s, a real Mosquitto and a subscriber; the tmpfs is filled for
     `--full-s` seconds.  Alarms raised (the driver's count) against alarms received:
     the target is 0 lost.  Baseline: the same before the disk is filled.
(S2) corruption: `--corruptions` outboxes of 3,000 rows, each damaged at a random
     offset (8 KiB of random bytes; every fifth truncated at a random length instead),
     then opened.  Counts the recoveries and checks that every seq is either salvaged
     or inside a reported `lost_seq` range.  Baseline: rows per intact file.
(S3) 32 Modbus meters (TCP, each its own endpoint on a pymodbus server in a child
     process, so each has its own poller) polled every
     50 ms for `--modbus-s` seconds, then stopped the way SIGTERM stops the gateway.
     Every polled reading must be at the subscriber, still stored, or counted as
     dropped; RSS sampled every 5 s must stay flat.  Baseline: the same with the old
     hand-off (each emit waits for the commit), for `--baseline-s` seconds.

    python -m scripts.bench_storage [--modbus-s 60] [--baseline-s 20] [--full-s 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.config import SyncMode, load_config
from gateway.process.runtime import Gateway
from gateway.sdk.model import Message, Priority
from gateway.storage.outbox import Consumer, Outbox, OutboxItem
from tests.harness import Subscriber, fill, simulated_meter, topic_base, write_config
from tests.peers import Mosquitto, free_port, wait_for

# ---- helpers ---------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def outbox_figures(path: Path) -> tuple[int, int, set[int]]:
    """(next seq, dropped telemetry, seqs still stored) of a closed outbox."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        stored = {s for (s,) in db.execute("SELECT seq FROM messages WHERE seq > 0")}
    return int(meta["next_seq"]), int(meta["dropped_telemetry"]), stored


async def run_gateway(gw: Gateway, seconds: float, during: Any = None) -> dict[str, Any]:
    """Run `gw` for `seconds` (calling `during(elapsed)` every 0.5 s), then stop it."""
    stop = asyncio.Event()
    task = asyncio.create_task(gw.run(stop))
    started = time.monotonic()
    samples: list[float] = []
    while (elapsed := time.monotonic() - started) < seconds:
        await asyncio.sleep(0.5)
        if during is not None:
            during(elapsed)
        if int(elapsed * 2) % 10 == 0:
            samples.append(rss_mb())
    doc = gw.health_doc()
    stop.set()
    await task
    drivers = {name: d.health().as_dict() for name, d in gw.drivers.items()}
    return {"health": doc, "drivers": drivers, "rss": samples}


# ---- S1: disk full -----------------------------------------------------------------------


def disk_full(work: Path, full_s: float) -> None:
    card = work / "card"
    card.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(card)], capture_output=True
    )
    if mounted.returncode != 0:
        print(f"(S1) disk full: skipped, cannot mount a tmpfs ({mounted.stderr.decode().strip()})")
        return
    broker = Mosquitto(work / "broker", persistence=False)
    broker.start()
    try:
        meters = [simulated_meter(f"m{i}", 20) for i in (1, 2)]
        smoke = {
            "id": "smoke-1",
            "kind": "smoke",
            "location": {"building": "2"},
            "driver": {"type": "simulated", "events": [{"type": "smoke.alarm", "every_s": 0.5}]},
        }
        config = write_config(
            work / "gw.yaml",
            broker.url,
            [*meters, smoke],
            outbox={"path": str(card / "outbox.db"), "reserve_bytes": 256 * 1024},
        )
        sub = Subscriber(broker.port, f"{topic_base(config)}/#").start()
        filler = card / "filler"
        marks: dict[str, float] = {}

        def during(elapsed: float) -> None:
            if elapsed >= 3 and "full" not in marks:
                marks["full"] = time.monotonic()
                fill(card)
            elif "full" in marks and "freed" not in marks and elapsed >= 3 + full_s:
                marks["freed"] = time.monotonic()
                filler.unlink()

        # 15 s after the room is back: the outbox holds the full state for 10 s.
        result = asyncio.run(run_gateway(Gateway(load_config(config)), 3 + full_s + 15, during))
        wait_for(lambda: False, timeout=1.0)  # let the last publishes arrive
        sub.stop()
    finally:
        broker.kill()
        subprocess.run(["umount", "-l", str(card)], check=False)
    messages = sub.snapshot()
    smoke_rx = [m for m in messages if m.topic.endswith("/smoke-1/events")]
    raised = result["drivers"]["simulated"]["events"]
    received = {m.json()["seq"] for m in smoke_rx}
    in_full = {
        m.json()["seq"] for m in smoke_rx if marks["full"] <= m.at <= marks.get("freed", m.at)
    }
    before = {m.json()["seq"] for m in smoke_rx if m.at < marks["full"]}
    storage = [m.json()["event"]["data"] for m in messages if m.topic.endswith("/events")]
    storage = [d for d in storage if "problem" in d]
    outbox = result["health"]["outbox"]
    print(f"(S1) disk full for {full_s:g} s, outbox on a 2 MiB tmpfs, reserve 256 KiB")
    print(f"    smoke alarms before the fill (baseline): {len(before)} received")
    print(f"    smoke alarms received while full:       {len(in_full)}")
    print(
        f"    smoke alarms raised {raised}, received {len(received)},"
        f" lost {raised - len(received)}  [target 0]"
    )
    print(
        f"    gateway.storage events: {[d['problem'] for d in storage]};"
        f" dropped telemetry {outbox['dropped_telemetry']} (each with its seq)"
    )


# ---- S2: corruption ------------------------------------------------------------------------


def corruptions(work: Path, rounds: int, rows: int) -> None:
    rng = random.Random(11)
    print(f"(S2) {rounds} corrupted outboxes of {rows} rows each")
    recovered = checked = lost_total = 0
    worst_s = 0.0
    for n in range(rounds):
        path = work / f"c{n}" / "outbox.db"
        box = _outbox(path, None)
        futures = [box.put(_row(k)) for k in range(rows)]
        seqs = {f.result(timeout=30) for f in futures}
        box.close()
        size = path.stat().st_size
        with open(path, "r+b") as f:
            if n % 5 == 4:
                f.truncate(rng.randrange(size // 8, size))
            else:
                f.seek(rng.randrange(0, size - 8192))
                f.write(os.urandom(8192))
        reports: list[Mapping[str, Any]] = []

        def on_fault(
            data: Mapping[str, Any], reports: list[Mapping[str, Any]] = reports
        ) -> OutboxItem:
            reports.append(data)
            return OutboxItem(Priority.EVENT, "events", "gateway", "t/storage", lambda s: b"{}")

        started = time.monotonic()
        try:
            box = _outbox(path, on_fault)
        except Exception as exc:  # the figure that matters: it must not happen
            print(f"    round {n}: did not open: {exc!r}")
            continue
        worst_s = max(worst_s, time.monotonic() - started)
        reader = box.reader()
        kept = {r.seq for r in reader.next_batch("mqtt", {}, 10 * rows) if r.topic != "t/storage"}
        reader.close()
        box.close()
        if not reports:
            print(
                f"    round {n}: damage not detected (it hit unused space); all rows kept: {seqs <= kept}"
            )
            checked += seqs <= kept
            continue
        recovered += 1
        ranges = reports[0].get("lost_seq", [])
        lost = {s for low, high in ranges for s in range(low, high + 1)}
        ok = seqs <= kept | lost
        checked += ok
        lost_total += len(seqs - kept)
        print(
            f"    round {n:2}: rebuilt, {len(kept)} rows salvaged, {len(seqs - kept)} lost,"
            f" reported ranges {ranges}  {'ok' if ok else 'UNREPORTED LOSS'}"
        )
    print(f"    baseline: {rows} rows in an intact file")
    print(
        f"    {recovered} recoveries, {checked}/{rounds} with every loss inside a reported range,"
        f" {lost_total} rows lost in all, slowest open {worst_s * 1000:.0f} ms"
    )


def _outbox(path: Path, on_fault: Any) -> Outbox:
    box = Outbox(
        path,
        max_messages=1_000_000,
        commit_interval_ms=20,
        sync=SyncMode.NORMAL,
        consumers=[Consumer("mqtt")],
        on_storage_fault=on_fault,
        reserve_bytes=0,
    )
    box.open()
    return box


def _row(k: int) -> OutboxItem:
    prio = Priority.EVENT if k % 50 == 0 else Priority.TELEMETRY
    return OutboxItem(
        prio, "telemetry", "meter", f"t/{k}", lambda seq: f'{{"seq":{seq}}}'.ljust(200).encode()
    )


# ---- S3: 32 Modbus meters every 50 ms -------------------------------------------------------

SERVER = textwrap.dedent(
    """
    import asyncio, sys
    from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
    from pymodbus.server import StartAsyncTcpServer
    devices = {u: ModbusDeviceContext(ir=ModbusSequentialDataBlock(1, [0] * 400),
                                      hr=ModbusSequentialDataBlock(1, [0] * 400)) for u in range(1, 33)}
    ctx = ModbusServerContext(devices=devices, single=False)
    port = int(sys.argv[1])
    async def main():
        # One endpoint per meter (127.0.0.2 ... .33, all loopback): 32 buses, 32 pollers.
        await asyncio.gather(*(StartAsyncTcpServer(context=ctx, address=(f"127.0.0.{u + 1}", port))
                               for u in range(1, 33)))
    asyncio.run(main())
    """
)


def modbus(work: Path, seconds: float, baseline_s: float) -> None:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    broker = Mosquitto(work / "broker", persistence=False)
    broker.start()
    try:
        wait_for(lambda: _listening("127.0.0.33", port), timeout=10)
        print("(S3) 32 Modbus TCP meters (eastron_sdm630) polled every 50 ms, then stopped")
        for label, secs, old in (
            ("old hand-off (baseline)", baseline_s, True),
            ("bounded hand-off", seconds, False),
        ):
            if secs > 0:
                _modbus_run(work / label.split()[0], broker, port, secs, old, label)
    finally:
        server.terminate()
        server.wait(timeout=10)
        broker.kill()


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def modbus_meters(port: int, poll_interval_s: float) -> list[dict[str, Any]]:
    """32 eastron_sdm630 meters, meter u at 127.0.0.(u+1):port (the SERVER's endpoints)."""
    return [
        {
            "id": f"meter-{u:02d}",
            "kind": "meter",
            "location": {"building": "1", "floor": 1, "unit": f"{u:02d}"},
            "driver": {
                "type": "modbus",
                "bus": {"host": f"127.0.0.{u + 1}", "port": port, "timeout_s": 0.5},
                "unit_id": u,
                "profile": "eastron_sdm630",
                "poll_interval_s": poll_interval_s,
            },
        }
        for u in range(1, 33)
    ]


def _modbus_run(
    work: Path, broker: Mosquitto, port: int, seconds: float, old: bool, label: str
) -> None:
    devices = modbus_meters(port, 0.05)
    # The default linger (50 ms): what an installed gateway runs with.
    config = write_config(work / "gw.yaml", broker.url, devices, outbox={"commit_interval_ms": 50})
    sub = SeqSubscriber(broker.port, f"{topic_base(config)}/devices/+/telemetry")
    sub.start()
    gw = Gateway(load_config(config))
    if old:
        gw.emit = _waiting_emit(gw)  # type: ignore[method-assign]
    result = asyncio.run(run_gateway(gw, seconds))
    wait_for(lambda: False, timeout=1.0)
    sub.stop()
    polls = result["drivers"]["modbus"]
    readings = polls["polls"] - polls["failed_polls"]
    next_seq, dropped, stored = outbox_figures(work / "outbox.db")
    received = sub.seqs
    given = next_seq - 1
    missing = set(range(1, next_seq)) - received - stored
    # Polled, but never reached the outbox with a seq.  The driver counts a poll when it
    # starts: up to one poll per bus that the stop cut short is in here too.
    unaccounted = readings - given
    rss = result["rss"]
    print(f"    {label}, {seconds:g} s:")
    print(
        f"      readings polled {readings} ({readings / seconds:.0f}/s), seqs given {given},"
        f" at the subscriber {len(received)}, still stored {len(stored)},"
        f" dropped {dropped}"
    )
    print(
        f"      missing seqs {len(missing)} (dropped counter {dropped}),"
        f" polled but never stored: {unaccounted}  [target 0]"
    )
    if len(rss) >= 2:
        print(
            f"      RSS {rss[0]:.1f} MB at 5 s -> {rss[-1]:.1f} MB at the end"
            f" ({rss[-1] - rss[0]:+.1f} MB)"
        )


class SeqSubscriber(Subscriber):
    """Keeps only the seqs it receives: the RSS measured is the gateway's, not a log."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.seqs: set[int] = set()
        self.client.on_message = self._keep_seq

    def _keep_seq(self, _c: Any, _u: Any, msg: Any) -> None:
        seq = json.loads(msg.payload).get("seq")
        if seq is not None:
            self.seqs.add(seq)


def _waiting_emit(gw: Gateway) -> Any:
    async def emit(message: Message, *, source: str = "") -> None:
        await gw.outbox.aput(gw.item_for(message))
        gw.observe(message, source=source)

    return emit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--modbus-s", type=float, default=60.0)
    parser.add_argument("--baseline-s", type=float, default=20.0)
    parser.add_argument("--full-s", type=float, default=10.0)
    parser.add_argument("--corruptions", type=int, default=20)
    args = parser.parse_args()
    # The faults are the point here: their log lines would bury the figures.
    logging.basicConfig(level=logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="gw-bench-storage-") as tmp:
        work = Path(tmp)
        disk_full(work / "s1", args.full_s)
        corruptions(work / "s2", args.corruptions, 3000)
        modbus(work / "s3", args.modbus_s, args.baseline_s)


if __name__ == "__main__":
    main()
