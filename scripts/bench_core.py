"""Core benchmark: baseline paho rate, gateway end-to-end rate, alarm latency, peak RSS.

Everything runs on this machine against a Mosquitto started here: the broker, the
gateway process and the subscriber share the cores, as they share them in the
baseline, so the ratio is fair.  The gateway runs with the shipped outbox defaults
(`shipped_outbox`), not the short linger the tests use.  "Sustained" is the highest
offered rate at which every message given a seq in the timed window reaches the
subscriber, none is dropped and the backlog stays flat.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from scripts.bench_storage import SeqSubscriber
from tests.harness import GatewayProc, Subscriber, topic_base, write_config
from tests.peers import Mosquitto, wait_for

PAYLOAD = b"x" * 200


def baseline(port: int, n: int) -> float:
    """Plain paho QoS 1 publish loop, 100 in flight, to a subscriber: messages per second."""
    sub = Subscriber(port, "bench/base/#").start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-base", protocol=mqtt.MQTTv5)
    pub.max_inflight_messages_set(100)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    t0 = time.monotonic()
    for i in range(n):
        pub.publish(f"bench/base/{i % 50}", PAYLOAD, qos=1)
    sub.wait(lambda ms: len(ms) >= n, timeout=120)
    rate = len(sub.snapshot()) / (time.monotonic() - t0)
    pub.disconnect()
    pub.loop_stop()
    sub.stop()
    return rate


def _meters(n: int, rate_hz: float) -> list[dict[str, Any]]:
    return [
        {
            "id": f"m{i}",
            "kind": "meter",
            "location": {"building": str(1 + i % 4), "floor": i % 10, "unit": f"{i}"},
            "driver": {
                "type": "simulated",
                "profile": "household_electricity",
                "rate_hz": rate_hz,
                "seed": i,
            },
        }
        for i in range(n)
    ]


def _alarms(n: int, every_s: float) -> list[dict[str, Any]]:
    return [
        {
            "id": f"sos{i}",
            "kind": "elderly_alarm",
            "location": {"building": "1", "floor": i, "unit": f"{i}01"},
            "driver": {
                "type": "simulated",
                "events": [
                    {"type": "elderly.sos", "every_s": every_s, "start_s": 1 + i * every_s / n}
                ],
            },
        }
        for i in range(n)
    ]


def _rss_kb(pid: int) -> tuple[int, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def shipped_outbox(config: Path, **tuned: Any) -> Path:
    """Rewrite a test config's outbox section to the shipped defaults (plus `tuned`).

    tests.harness.write_config shortens the commit linger for tests; a benchmark must
    measure what an installed gateway runs with.
    """
    doc = yaml.safe_load(config.read_text())
    doc["outbox"] = {"path": doc["outbox"]["path"], **tuned}
    config.write_text(yaml.safe_dump(doc, sort_keys=False))
    return config


@dataclass
class Step:
    """One offered rate: what the subscriber got and whether the gateway kept up."""

    offered: float
    received: float
    missing: int  # seqs given during the window that never reached the subscriber
    dropped: int  # dropped_telemetry growth during the window
    depth_growth: int  # outbox depth at the end minus at the start

    @property
    def kept_up(self) -> bool:
        # Every message of the window received, none dropped, the backlog flat (a
        # quarter of a second of messages: one commit and one in-flight window).
        return (
            self.missing == 0
            and self.dropped == 0
            and self.depth_growth <= max(50, self.offered / 4)
            and self.received >= 0.98 * self.offered  # the drivers did offer it
        )


def _health(sub: Subscriber) -> dict[str, Any]:
    doc: dict[str, Any] = sub.snapshot()[-1].json()["outbox"]
    return doc


def _offer(work: Path, broker: Mosquitto, offered: float, seconds: float) -> Step:
    """Run the gateway (shipped defaults) with `offered` msg/s of telemetry for a window."""
    n = 100
    config = shipped_outbox(
        write_config(work / f"rate-{offered:.0f}" / "gw.yaml", broker.url, _meters(n, offered / n))
    )
    sub = SeqSubscriber(broker.port, f"{topic_base(config)}/devices/+/telemetry").start()
    health = Subscriber(broker.port, f"{topic_base(config)}/health").start()
    gw = GatewayProc(config).start()
    try:
        wait_for(lambda: len(sub.seqs) > offered and health.snapshot(), timeout=30)
        time.sleep(1)
        h0, seq0, t0 = _health(health), max(sub.seqs), time.monotonic()
        n0 = len(sub.seqs)
        time.sleep(seconds)
        h1, seq1, n1 = _health(health), max(sub.seqs), len(sub.seqs)
        rate = (n1 - n0) / (time.monotonic() - t0)
        # Whatever was given a seq in the window must arrive (at least once) soon after.
        wait_for(lambda: all(s in sub.seqs for s in range(seq0, seq1 + 1)), timeout=3)
        missing = sum(1 for s in range(seq0, seq1 + 1) if s not in sub.seqs)
    finally:
        gw.terminate()
        sub.stop()
        health.stop()
    return Step(
        offered,
        rate,
        missing,
        h1["dropped_telemetry"] - h0["dropped_telemetry"],
        h1["depth"] - h0["depth"],
    )


def gateway_rate(work: Path, broker: Mosquitto, seconds: float, base: float) -> tuple[float, float]:
    """The highest offered rate the gateway sustains: (offered, received) msg/s.

    Sustained means every message of the window reaches the subscriber, none is
    dropped, and the outbox backlog stays flat.  Offering more than that measures a
    growing backlog (the saturation point), not a sustained rate.
    """
    best = (0.0, 0.0)
    for fraction in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        step = _offer(work, broker, base * fraction, seconds)
        print(
            f"    offered {step.offered:6.0f} msg/s: received {step.received:6.0f} msg/s,"
            f" missing {step.missing}, dropped {step.dropped}, backlog {step.depth_growth:+d}"
            f"  {'kept up' if step.kept_up else 'fell behind'}"
        )
        if not step.kept_up:
            break
        best = (step.offered, step.received)
    return best


def alarm_latency(
    work: Path, broker: Mosquitto, telemetry_rate: float, seconds: float
) -> list[float]:
    """Event created (its `ts`) to subscriber received, in ms, while telemetry flows.

    Like (2), the window starts once the gateway runs: 1 s after the first alarm
    arrived (its start-up, which holds the GIL for imports and a first full garbage
    collection, is not what an alarm meets on a running gateway).
    """
    n_meters = 50
    devices = _meters(n_meters, telemetry_rate / n_meters) + _alarms(10, 1.0)
    config = shipped_outbox(write_config(work / "latency" / "gw.yaml", broker.url, devices))
    sub = Subscriber(broker.port, f"{topic_base(config)}/devices/+/events").start()
    gw = GatewayProc(config).start()
    try:
        wait_for(lambda: sub.snapshot(), timeout=30)
        time.sleep(1)
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        time.sleep(0.5)  # the window's last alarms on their way
    finally:
        gw.terminate()
        sub.stop()
    latencies = []
    for m in sub.snapshot():
        doc = m.json()
        created = datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp()
        if not start <= created < end:
            continue
        # m.at is monotonic; the offset to wall time was measured at start (same machine).
        latencies.append((m.at + _MONO_TO_WALL - created) * 1000)
    return latencies


_MONO_TO_WALL = time.time() - time.monotonic()


def rss_devices() -> list[dict[str, Any]]:
    """500 simulated devices at normal rates: 250 meters, 100 doors, 75 smoke, 75 SOS."""
    devices: list[dict[str, Any]] = []
    for i in range(250):
        devices.append(
            {
                "id": f"meter{i}",
                "kind": "meter",
                "location": {"building": str(1 + i % 5), "floor": i % 12, "unit": f"u{i}"},
                "driver": {
                    "type": "simulated",
                    "profile": "household_electricity",
                    "telemetry_interval_s": 1,
                    "seed": i,
                },
            }
        )
    for i in range(100):
        devices.append(
            {
                "id": f"door{i}",
                "kind": "door",
                "location": {"building": str(1 + i % 5)},
                "driver": {
                    "type": "simulated",
                    "events": [
                        {
                            "type": "door.opened",
                            "every_s": 5,
                            "then": "door.closed",
                            "then_after_s": 2,
                        }
                    ],
                },
            }
        )
    for i in range(75):
        devices.append(
            {
                "id": f"smoke{i}",
                "kind": "smoke",
                "location": {"building": str(1 + i % 5)},
                "driver": {
                    "type": "simulated",
                    "events": [
                        {
                            "type": "smoke.alarm",
                            "every_s": 30,
                            "then": "smoke.cleared",
                            "then_after_s": 10,
                        }
                    ],
                },
            }
        )
    for i in range(75):
        devices.append(
            {
                "id": f"sos{i}",
                "kind": "elderly_alarm",
                "location": {"building": str(1 + i % 5)},
                "driver": {"type": "simulated", "events": [{"type": "elderly.sos", "every_s": 20}]},
            }
        )
    return devices


def peak_rss(work: Path, broker: Mosquitto, seconds: float) -> tuple[int, int]:
    """Peak RSS (kB) of the gateway process with 500 simulated devices at normal rates."""
    config = shipped_outbox(write_config(work / "rss" / "gw.yaml", broker.url, rss_devices()))
    gw = GatewayProc(config).start()
    assert gw.proc is not None
    try:
        time.sleep(seconds)
        return _rss_kb(gw.proc.pid)
    finally:
        gw.terminate()


def paho_age(port: int, n: int, size: int) -> list[float]:
    """Baseline: publish -> subscriber latency (ms) of plain paho QoS 1, one at a time."""
    got: list[float] = []
    sub = Subscriber(port, "bench/age/#")
    sub.client.on_message = lambda _c, _u, m: got.append(time.time() - json.loads(m.payload)["t"])
    sub.start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-age", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        for i in range(n):
            body = json.dumps({"t": time.time()}).ljust(size).encode()
            pub.publish(f"bench/age/{i}", body, qos=1)
            wait_for(lambda i=i: len(got) > i, timeout=5, interval=0.001)
            time.sleep(0.01)  # one at a time, like readings or alarms of an idle gateway
    finally:
        pub.disconnect()
        pub.loop_stop()
        sub.stop()
    return [g * 1000 for g in got]


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15, help="length of each timed phase")
    parser.add_argument("--baseline-messages", type=int, default=50_000)
    # 10 alarms a second: 300 in 30 s, so p99 is the third slowest, not the second
    # (one stall of the machine decided it in 15 s).
    parser.add_argument("--alarm-seconds", type=float, default=30, help="length of (3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker", persistence=False)
        broker.start()
        try:
            # This VM's paho rate moved by 40 % between runs minutes apart (8,817 and
            # 6,215 msg/s): (1) is the median of runs before and after (2), all printed.
            bases = [baseline(broker.port, args.baseline_messages) for _ in range(2)]
            print(
                "(1) baseline paho QoS 1 publish loop:"
                f" {statistics.fmean(bases):8.0f} msg/s (runs {', '.join(f'{b:.0f}' for b in bases)})"
            )
            print("(2) gateway end to end, simulated drivers -> outbox -> broker -> subscriber:")
            offered, rate = gateway_rate(work, broker, args.seconds / 2, statistics.fmean(bases))
            bases.append(baseline(broker.port, args.baseline_messages))
            base = statistics.median(bases)
            print(
                f"    paho again after (2): {bases[-1]:.0f} msg/s; (1) is the median of the"
                f" three, {base:.0f} msg/s"
            )
            print(
                f"    sustained (shipped defaults): {rate:6.0f} msg/s = {rate / base:.0%} of (1)"
                "  [target >= 80%]"
            )
            # Half the sustained rate; on a machine too busy to sustain even the first
            # step, half of that step, so the alarm figure is still measured.
            half = (rate or base * 0.3) / 2
            lat = alarm_latency(work, broker, half, args.alarm_seconds)
            p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
            base_lat = paho_age(broker.port, 200, 500)
            print(
                f"(3) alarm latency at {half:.0f} msg/s telemetry, gateway running (shipped defaults):"
                f" p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(lat)} alarms"
                f"  (baseline paho QoS 1 publish: p50 {pct(base_lat, 0.5):.1f} ms,"
                f" p99 {pct(base_lat, 0.99):.1f} ms)  [target p99 < 10 ms]"
            )
            rss, hwm = peak_rss(work, broker, args.seconds)
            print(
                f"(4) 500 simulated devices: RSS {rss / 1024:.1f} MB, peak {hwm / 1024:.1f} MB  [target < 80 MB]"
            )
        finally:
            broker.kill()
    result = {
        "baseline_msg_s": round(base),
        "baseline_runs": [round(b) for b in bases],
        "gateway_msg_s": round(rate),
        "gateway_offered_msg_s": round(offered),
        "ratio": round(rate / base, 3),
        "alarm_p50_ms": round(p50, 1),
        "alarm_p99_ms": round(p99, 1),
        "alarms": len(lat),
        "alarm_mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        "peak_rss_mb": round(hwm / 1024, 1),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    threading.excepthook = lambda a: None  # paho's loop threads end noisily at exit
    main()
