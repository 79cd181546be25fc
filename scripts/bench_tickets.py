"""Ticket service benchmark: alarm raised → ticket opened, while telemetry flows.

1,000 contract-shaped alarm documents are published (QoS 1, retained, as gateways
publish them) on the alarm topics of 100 gateways, paced, while a few hundred telemetry
messages a second flow through the same broker to a subscriber; then 1,000 more as fast
as the publishers go, for throughput.  One `community-central serve` process tickets
them.  Latency is the ticket's `opened` time minus the alarm's `raised_at` (both this
machine's clock; `raised_at` has millisecond resolution, so figures read up to 1 ms
high).  The baseline, in the same run and under the same telemetry: plain paho publish
→ subscriber latency measured the same way.  Every alarm must have exactly one ticket.

Then fairness (issue 18): alarms of 100 well-behaved gateways, paced at 20 a second
for 20 s, while the service is otherwise idle, and again while one more gateway floods
1,000 alarm documents a second (1,000 alarm ids, QoS 1, retained).  The well-behaved
gateways' raised → opened p99 with the flood must stay within 2x of the idle one.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from community_central.contract import format_ts
from community_central.documents import parse_ts

from central.tests.tickets_harness import Publisher, TicketServiceProc, alarm_doc, tickets_cli
from scripts.bench_core import pct
from tests.harness import Subscriber
from tests.peers import Mosquitto, wait_for

PREFIX = "bench/v1"
SITE = "bench-site"
GATEWAYS = 100
TYPES = ("fire", "care", "wellness", "security", "maintenance")


class Telemetry:
    """A thread publishing `rate` telemetry messages a second on the gateways' topics."""

    def __init__(self, port: int, rate: float) -> None:
        self.rate = rate
        self.sent = 0
        self.stop = threading.Event()
        self.sub = Subscriber(port, f"{PREFIX}/+/+/devices/+/telemetry").start()
        self.publisher = Publisher(port)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        payload = json.dumps({"values": {"power": {"value": 1.0, "unit": "W"}}, "pad": "x" * 120})
        t0 = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.sent < due:
                gw = self.sent % GATEWAYS
                topic = f"{PREFIX}/{SITE}/gw-{gw:03d}/devices/m{self.sent % 7}/telemetry"
                self.publisher.client.publish(topic, payload, qos=1)
                self.sent += 1
            time.sleep(0.005)

    def start(self) -> Telemetry:
        self.thread.start()
        return self

    def received_rate(self, seconds: float) -> float:
        n0 = len(self.sub.snapshot())
        time.sleep(seconds)
        return (len(self.sub.snapshot()) - n0) / seconds

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.publisher.stop()
        self.sub.stop()


def _send(port: int, messages: list[tuple[str, dict[str, Any]]], rate: float | None) -> float:
    """Publish (topic, document) pairs from 10 clients, round robin by gateway; seconds taken.

    Each document's times are stamped just before its publish, so what is measured is
    the way from the publisher's call to the ticket, not the building of the document.
    """
    publishers = [Publisher(port) for _ in range(10)]
    t0 = time.monotonic()
    infos = []
    for i, (topic, doc) in enumerate(messages):
        if rate is not None:
            while time.monotonic() < t0 + i / rate:
                time.sleep(0.001)
        now = format_ts(datetime.now(UTC))
        doc["raised_at"] = doc["updated_at"] = doc["last_seen_at"] = now
        client = publishers[(i % GATEWAYS) % len(publishers)].client
        infos.append(client.publish(topic, json.dumps(doc), qos=1, retain=True))
    for info in infos:
        info.wait_for_publish(30)
    took = time.monotonic() - t0
    for p in publishers:
        p.stop()
    return took


def _alarms(first: int, n: int) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in range(first, first + n):
        gw, alarm_id = f"gw-{i % GATEWAYS:03d}", f"bench{first}-{i}"
        doc = alarm_doc(SITE, gw, alarm_id, type=TYPES[i % len(TYPES)])
        out.append((f"{PREFIX}/{SITE}/{gw}/alarms/{alarm_id}", doc))
    return out


def baseline(port: int, n: int, rate: float, tag: str = "main") -> list[float]:
    """Plain paho publish → subscriber latency in ms: the same documents, clients and pace."""
    # A topic tree of its own: the retained messages of an earlier run are not measured.
    sub = Subscriber(port, f"bench/baseline-{tag}/#").start()
    messages = [(f"bench/baseline-{tag}/{t}", doc) for t, doc in _alarms(10 * n, n)]
    _send(port, messages, rate)
    sub.wait(lambda ms: len(ms) >= n, timeout=60)
    sub.stop()
    offset = time.time() - time.monotonic()
    return [
        (m.at + offset - parse_ts(json.loads(m.payload)["raised_at"])) * 1000
        for m in sub.snapshot()
    ]


def rows(db: Path, like: str) -> list[tuple[str, str, float, float]]:
    with sqlite3.connect(db, timeout=30) as conn:
        return list(
            conn.execute(
                "SELECT gateway, alarm_id, raised_ts, opened_ts FROM tickets WHERE alarm_id LIKE ?",
                (like,),
            )
        )


def phase(db: Path, port: int, first: int, n: int, rate: float | None) -> dict[str, Any]:
    took = _send(port, _alarms(first, n), rate)
    like = f"bench{first}-%"
    wait_for(lambda: len(rows(db, like)) >= n, timeout=120, interval=0.2)
    time.sleep(0.5)  # a doubled ticket would have had time to appear
    found = rows(db, like)
    keys = {(g, a) for g, a, _, _ in found}
    expected = {(f"gw-{i % GATEWAYS:03d}", f"bench{first}-{i}") for i in range(first, first + n)}
    lat = [(opened - raised) * 1000 for _, _, raised, opened in found]
    span = max(o for *_, o in found) - min(r for _, _, r, _ in found) if found else float("nan")
    return {
        "alarms": n,
        "tickets": len(found),
        "missing": len(expected - keys),
        "doubled": len(found) - len(keys),
        "publish_s": round(took, 2),
        "p50_ms": round(pct(lat, 0.5), 1),
        "p99_ms": round(pct(lat, 0.99), 1),
        "max_ms": round(max(lat), 1) if lat else None,
        "tickets_per_s": round(len(found) / span, 1) if span else None,
    }


class Flood:
    """One gateway publishing `rate` alarm documents a second on 1,000 alarm ids."""

    def __init__(self, port: int, rate: float) -> None:
        self.rate, self.sent = rate, 0
        self.stop = threading.Event()
        self.publisher = Publisher(port)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        docs = [json.dumps(alarm_doc(SITE, "gw-noisy", f"flood-{i}")) for i in range(1000)]
        t0 = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.sent < due:
                i = self.sent % len(docs)
                topic = f"{PREFIX}/{SITE}/gw-noisy/alarms/flood-{i}"
                self.publisher.client.publish(topic, docs[i], qos=1, retain=True)
                self.sent += 1
            time.sleep(0.002)

    def __enter__(self) -> Flood:
        self.t0 = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.achieved = self.sent / (time.monotonic() - self.t0)
        self.publisher.stop()


def fairness(db: Path, port: int, first: int, flood_rate: float) -> dict[str, Any]:
    """Well-behaved gateways' raised → opened, alone and beside a flooding gateway."""
    n, rate = 400, 20.0
    idle = phase(db, port, first, n, rate)
    base_idle = baseline(port, n, rate, "idle")
    with Flood(port, flood_rate) as flood:
        time.sleep(1.0)  # the flood is under way, the noisy gateway's burst spent
        flooded = phase(db, port, first + n, n, rate)
        # What the flood costs the machine and the broker, without the service.
        base_flooded = baseline(port, n, rate, "flooded")
    return {
        "idle": idle,
        "flooded": flooded,
        "flood_msgs_s": round(flood.achieved),
        "p99_ratio": round(flooded["p99_ms"] / idle["p99_ms"], 2),
        "baseline_p99_idle_ms": round(pct(base_idle, 0.99), 1),
        "baseline_p99_flooded_ms": round(pct(base_flooded, 0.99), 1),
    }


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alarms", type=int, default=1000)
    parser.add_argument("--alarm-rate", type=float, default=100.0, help="alarms/s, paced phase")
    parser.add_argument("--telemetry-rate", type=float, default=300.0, help="telemetry msg/s")
    parser.add_argument("--flood-rate", type=float, default=1000.0, help="alarms/s, one gateway")
    parser.add_argument(
        "--broker-nodelay", action="store_true", help="mosquitto's set_tcp_nodelay true"
    )
    parser.add_argument(
        "--gateway-rate", type=float, default=None, help="the service's per-gateway alarm budget"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-bench-tickets-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(
            work / "broker",
            persistence=False,
            extra="set_tcp_nodelay true" if args.broker_nodelay else "",
        )
        broker.start()
        telemetry = Telemetry(broker.port, args.telemetry_rate).start()
        budget = [] if args.gateway_rate is None else ["--gateway-rate", str(args.gateway_rate)]
        svc = TicketServiceProc(
            broker.url, work / "tickets.db", PREFIX, client_id="bench-tickets", extra=budget
        )
        try:
            svc.start()
            tele_rate = telemetry.received_rate(2.0)
            base = baseline(broker.port, args.alarms, args.alarm_rate)
            print(
                f"(T) ticket service, {GATEWAYS} gateways, telemetry {tele_rate:.0f} msg/s received"
            )
            print(
                f"    baseline paho publish -> subscribe, {len(base)} msgs at {args.alarm_rate:.0f}/s:"
                f" p50 {pct(base, 0.5):.1f} ms, p99 {pct(base, 0.99):.1f} ms"
            )
            paced = phase(svc.db, broker.port, 0, args.alarms, args.alarm_rate)
            print(
                f"    paced {args.alarm_rate:.0f} alarms/s: raised -> ticket opened p50 {paced['p50_ms']} ms,"
                f" p99 {paced['p99_ms']} ms, max {paced['max_ms']} ms;"
                f" {paced['tickets']} tickets, missing {paced['missing']}, doubled {paced['doubled']}"
            )
            burst = phase(svc.db, broker.port, args.alarms, args.alarms, None)
            print(
                f"    burst ({burst['publish_s']} s to publish): {burst['tickets_per_s']} tickets/s,"
                f" raised -> opened p50 {burst['p50_ms']} ms, p99 {burst['p99_ms']} ms;"
                f" {burst['tickets']} tickets, missing {burst['missing']}, doubled {burst['doubled']}"
            )
            fair = fairness(svc.db, broker.port, 3 * args.alarms, args.flood_rate)
            print(
                f"    fairness, 100 gateways at 20 alarms/s: raised -> opened idle p50"
                f" {fair['idle']['p50_ms']} ms, p99 {fair['idle']['p99_ms']} ms; beside one gateway"
                f" flooding {fair['flood_msgs_s']} alarms/s: p50 {fair['flooded']['p50_ms']} ms,"
                f" p99 {fair['flooded']['p99_ms']} ms (x{fair['p99_ratio']} of idle);"
                f" missing {fair['idle']['missing'] + fair['flooded']['missing']}"
            )
            print(
                f"    baseline paho publish -> subscribe at 20/s: p99 idle"
                f" {fair['baseline_p99_idle_ms']} ms, beside the flood {fair['baseline_p99_flooded_ms']} ms"
            )
            counters = json.loads(
                tickets_cli("stats", "--db", str(svc.db), "--json", check=True).stdout
            )["counters"]
            print(f"    counters: {counters}")
        finally:
            if svc.running():
                svc.terminate()
            telemetry.close()
            broker.kill()
    ok = all(
        p["missing"] == 0 and p["doubled"] == 0
        for p in (paced, burst, fair["idle"], fair["flooded"])
    )
    result = {
        "telemetry_msg_s": round(tele_rate),
        "baseline_p50_ms": round(pct(base, 0.5), 1),
        "baseline_p99_ms": round(pct(base, 0.99), 1),
        "paced": paced,
        "burst": burst,
        "fairness": fair,
        "counters": counters,
        "exactly_one_ticket_each": ok,
    }
    print(json.dumps(result))
    if not ok:
        raise SystemExit("tickets missing or doubled")
    return result


if __name__ == "__main__":
    threading.excepthook = lambda a: None  # paho's loop threads end noisily at exit
    main()
