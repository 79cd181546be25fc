"""Fleet benchmark (issue 19): 1,000 simulated gateways against the central ticket service.

One process simulates the fleet (not a gateway per process): every gateway's retained
status, telemetry at 1 msg/s per gateway (1,000 msg/s in all), alarms at one per
gateway per hour, and bursts of 200 alarms (a city-wide power cut ending).  Every kind
of document is checked against its JSON Schema before it is sent.

The same run measures 1, 2 and 4 workers on PostgreSQL and 1 on SQLite, each on a fresh
database, against one Mosquitto, with the telemetry running all along:

- steady: alarms at 10x the normal rate (2.8/s) for 10 s: raised -> opened p50/p99;
- sustained: 1,000 alarms as fast as 10 publishers go: tickets/s from the first
  publish to the last ticket opened;
- kill -9: a burst of 200 during which one worker is killed (a lone worker is started
  again, as systemd would): tickets missing and doubled, which must both be 0.

Baseline from the same run: a plain MQTT publish -> subscriber latency of the same
documents at the same pace.  Run `./scripts/bench` or `python -m scripts.bench_fleet`.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from community_central.contract import format_ts, validator
from community_central.documents import parse_ts
from community_central.store import TicketStore
from paho.mqtt.enums import CallbackAPIVersion

from central.tests.pgserver import PostgresServer
from central.tests.tickets_harness import Publisher, TicketServiceProc, alarm_doc
from community_protocol import ClockState, GatewayState, Identity, SchemaName
from community_protocol.documents import envelope, status_document
from tests.harness import Subscriber
from tests.peers import Mosquitto, wait_for

SITE = "city"
TYPES = ("fire", "care", "wellness", "security", "maintenance")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def gw(i: int) -> str:
    return f"gw-{i:04d}"


class Fleet:
    """The simulated gateways: retained status once, then telemetry at `rate` msg/s."""

    def __init__(self, port: int, prefix: str, gateways: int, rate: float) -> None:
        self.port, self.prefix, self.gateways, self.rate = port, prefix, gateways, rate
        self.sent = 0
        self.stop = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"fleet-{os.getpid()}")
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _status(self, i: int) -> dict[str, Any]:
        now = datetime.now(UTC)
        return status_document(
            GatewayState.ONLINE,
            session=1,
            identity=Identity(SITE, gw(i)),
            version="bench",
            started=now,
            ts=now,
            clock=ClockState.SYNCED,
        )

    def _telemetry(self, i: int, seq: int) -> dict[str, Any]:
        doc = envelope(
            SchemaName.TELEMETRY,
            uuid.uuid4().hex,
            seq,
            datetime.now(UTC),
            ClockState.SYNCED,
            Identity(SITE, gw(i)),
        )
        doc["device"] = {"id": "meter-1", "kind": "meter", "location": {"building": "1"}}
        doc["values"] = {"energy_import": {"value": 1234.5 + seq, "unit": "kWh", "type": "counter"}}
        return doc

    def start(self) -> Fleet:
        validator("status").validate(self._status(0))
        validator("telemetry").validate(self._telemetry(0, 1))
        for i in range(self.gateways):
            topic = f"{self.prefix}/{SITE}/{gw(i)}/status"
            self.client.publish(topic, json.dumps(self._status(i)), qos=1, retain=True)
        self.thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.sent < due:
                i = self.sent % self.gateways
                topic = f"{self.prefix}/{SITE}/{gw(i)}/devices/meter-1/telemetry"
                doc = self._telemetry(i, self.sent // self.gateways + 1)
                self.client.publish(topic, json.dumps(doc), qos=1)
                self.sent += 1
            time.sleep(0.01)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.client.disconnect()
        self.client.loop_stop()


def alarms(prefix: str, tag: str, n: int, gateways: int) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(n):
        g, alarm_id = gw(i % gateways), f"{tag}-{i}"
        doc = alarm_doc(SITE, g, alarm_id, type=TYPES[i % len(TYPES)])  # schema-checked
        out.append((f"{prefix}/{SITE}/{g}/alarms/{alarm_id}", doc))
    return out


def send(port: int, messages: list[tuple[str, dict[str, Any]]], rate: float | None) -> float:
    """Publish from 10 clients, stamping raised_at just before each publish; seconds taken."""
    publishers = [Publisher(port) for _ in range(10)]
    t0 = time.monotonic()
    infos = []
    for i, (topic, doc) in enumerate(messages):
        if rate is not None:
            while time.monotonic() < t0 + i / rate:
                time.sleep(0.001)
        now = format_ts(datetime.now(UTC))
        doc["raised_at"] = doc["updated_at"] = doc["last_seen_at"] = now
        infos.append(publishers[i % 10].client.publish(topic, json.dumps(doc), qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(60)
    took = time.monotonic() - t0
    for p in publishers:
        p.stop()
    return took


def found(db: str | Path, tag: str) -> list[tuple[str, float, float]]:
    store = TicketStore(db)
    try:
        return [
            (t.alarm_id, t.raised_ts, t.opened_ts)
            for t in store.tickets()
            if t.alarm_id.startswith(f"{tag}-")
        ]
    finally:
        store.close()


def phase(
    db: str | Path, port: int, prefix: str, tag: str, n: int, gateways: int, rate: float | None
) -> dict[str, Any]:
    took = send(port, alarms(prefix, tag, n, gateways), rate)
    wait_for(lambda: len(found(db, tag)) >= n, timeout=180, interval=0.25)
    time.sleep(0.5)  # a doubled ticket would have had time to appear
    rows = found(db, tag)
    ids = [a for a, _, _ in rows]
    lat = [(o - r) * 1000 for _, r, o in rows]
    span = max(o for *_, o in rows) - min(r for _, r, _ in rows) if rows else 0.0
    return {
        "alarms": n,
        "missing": n - len(set(ids)),
        "doubled": len(ids) - len(set(ids)),
        "publish_s": round(took, 2),
        "p50_ms": round(pct(lat, 0.5), 1),
        "p99_ms": round(pct(lat, 0.99), 1),
        "tickets_per_s": round(len(rows) / span, 1) if span else None,
    }


def baseline(port: int, n: int, rate: float) -> dict[str, float]:
    sub = Subscriber(port, "fleet-baseline/#").start()
    messages = [(f"fleet-baseline/{t}", d) for t, d in alarms("x", "base", n, 1000)]
    send(port, messages, rate)
    sub.wait(lambda ms: len(ms) >= n, timeout=60)
    sub.stop()
    offset = time.time() - time.monotonic()
    lat = [
        (m.at + offset - parse_ts(json.loads(m.payload)["raised_at"])) * 1000
        for m in sub.snapshot()
    ]
    return {"p50_ms": round(pct(lat, 0.5), 1), "p99_ms": round(pct(lat, 0.99), 1)}


def run_config(
    broker: Mosquitto, db: str | Path, workers: int, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    group = f"g{uuid.uuid4().hex[:6]}"
    # A topic tree of each configuration's own: no retained alarm of an earlier one.
    prefix = f"fleet-{group}/v1"
    fleet = Fleet(broker.port, prefix, args.gateways, args.telemetry_rate).start()
    procs = [
        TicketServiceProc(
            broker.url,
            db,
            prefix,
            client_id=f"{group}-{i}",
            group=group,
            logdir=work,
            # The fleet's own rate limits are not what is measured here.
            extra=["--gateway-rate", "1000", "--gateway-burst", "1000"],
        ).start()
        for i in range(workers)
    ]
    tag = group
    try:
        port, n = broker.port, args.gateways
        steady = phase(db, port, prefix, f"{tag}s", args.steady, n, args.steady_rate)
        sustained = phase(db, port, prefix, f"{tag}u", args.sustained, n, None)

        def kill() -> None:
            procs[0].kill()
            if workers == 1:  # systemd's Restart= brings a lone worker back
                procs[0].start(ready=False)

        killer = threading.Timer(0.3, kill)
        killer.start()
        burst = phase(db, port, prefix, f"{tag}k", 200, n, None)
        killer.join()
        return {"steady": steady, "sustained": sustained, "kill9": burst, "sent": fleet.sent}
    finally:
        for p in procs:
            if p.running():
                p.terminate()
        fleet.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gateways", type=int, default=1000)
    parser.add_argument("--telemetry-rate", type=float, default=1000.0, help="msg/s, all gateways")
    parser.add_argument("--steady", type=int, default=28, help="alarms at --steady-rate")
    parser.add_argument("--steady-rate", type=float, default=2.8, help="10x one/gateway/hour")
    parser.add_argument("--sustained", type=int, default=1000)
    parser.add_argument("--configs", default="pg1,pg2,pg4,sqlite1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker", persistence=False)
        broker.start()
        pg = PostgresServer(fsync=True).start()
        try:
            base = baseline(broker.port, args.steady, args.steady_rate)
            print(
                f"(F) fleet: {args.gateways} gateways, telemetry {args.telemetry_rate:.0f} msg/s,"
                f" baseline MQTT publish -> subscriber p50 {base['p50_ms']} ms"
                f" p99 {base['p99_ms']} ms"
            )
            for config in args.configs.split(","):
                kind, workers = config.rstrip("0123456789"), int(config.lstrip("pgsqlite"))
                db: str | Path = (
                    pg.new_database() if kind == "pg" else work / f"{uuid.uuid4().hex[:6]}.db"
                )
                r = run_config(broker, db, workers, work, args)
                s, u, k = r["steady"], r["sustained"], r["kill9"]
                name = "PostgreSQL" if kind == "pg" else "SQLite"
                print(
                    f"    {name:10} {workers} worker(s): steady {args.steady_rate}/s p50"
                    f" {s['p50_ms']} ms p99 {s['p99_ms']} ms; sustained {u['tickets_per_s']}"
                    f" tickets/s (p99 {u['p99_ms']} ms, missing {u['missing']}, doubled"
                    f" {u['doubled']}); kill -9 mid-burst of 200: missing {k['missing']},"
                    f" doubled {k['doubled']}, {k['tickets_per_s']} tickets/s;"
                    f" telemetry sent {r['sent']}",
                    flush=True,
                )
        finally:
            pg.stop()
            broker.remove()


if __name__ == "__main__":
    main()
