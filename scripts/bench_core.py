"""Core benchmark: baseline paho rate, gateway end-to-end rate, alarm latency, peak RSS.

Everything runs on this machine against a Mosquitto started here: the broker, the
gateway process and the subscriber share the cores, as they share them in the
baseline, so the ratio is fair.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.harness import GatewayProc, Subscriber, topic_base, write_config
from tests.peers import Mosquitto

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


def _offer(work: Path, broker: Mosquitto, offered: float, seconds: float) -> tuple[float, int]:
    """Run the gateway with `offered` msg/s of telemetry; (received msg/s, final outbox depth)."""
    n = 100
    config = write_config(
        work / f"rate-{offered:.0f}" / "gw.yaml", broker.url, _meters(n, offered / n)
    )
    sub = Subscriber(broker.port, f"{topic_base(config)}/devices/+/telemetry").start()
    health = Subscriber(broker.port, f"{topic_base(config)}/health").start()
    gw = GatewayProc(config).start()
    try:
        sub.wait(lambda ms: len(ms) > offered, timeout=30)
        time.sleep(1)
        n0, t0 = len(sub.snapshot()), time.monotonic()
        time.sleep(seconds)
        rate = (len(sub.snapshot()) - n0) / (time.monotonic() - t0)
        depth = health.snapshot()[-1].json()["outbox"]["depth"]
    finally:
        gw.terminate()
        sub.stop()
        health.stop()
    return rate, depth


def gateway_rate(work: Path, broker: Mosquitto, seconds: float, base: float) -> tuple[float, float]:
    """The highest offered rate the gateway keeps up with: (offered, received) msg/s.

    Keeping up means the subscriber receives at least 95% of what the drivers offer and
    the outbox does not grow beyond half a second of messages. Offering more than that
    only measures a growing backlog, which is not a sustained rate.
    """
    best = (0.0, 0.0)
    for fraction in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        offered = base * fraction
        rate, depth = _offer(work, broker, offered, seconds)
        kept_up = rate >= 0.95 * offered and depth < offered / 2
        print(
            f"    offered {offered:6.0f} msg/s: received {rate:6.0f} msg/s, outbox depth {depth:6d}  {'kept up' if kept_up else 'fell behind'}"
        )
        if not kept_up:
            break
        best = (offered, rate)
    return best


def alarm_latency(
    work: Path, broker: Mosquitto, telemetry_rate: float, seconds: float
) -> list[float]:
    """Event created (its `ts`) to subscriber received, in ms, while telemetry flows."""
    n_meters = 50
    devices = _meters(n_meters, telemetry_rate / n_meters) + _alarms(10, 1.0)
    config = write_config(work / "latency" / "gw.yaml", broker.url, devices)
    sub = Subscriber(broker.port, f"{topic_base(config)}/devices/+/events").start()
    gw = GatewayProc(config).start()
    try:
        time.sleep(seconds)
    finally:
        gw.terminate()
        sub.stop()
    latencies = []
    for m in sub.snapshot():
        doc = m.json()
        created = datetime.fromisoformat(doc["ts"].replace("Z", "+00:00")).timestamp()
        # m.at is monotonic; the offset to wall time was measured at start (same machine).
        latencies.append((m.at + _MONO_TO_WALL - created) * 1000)
    return latencies


_MONO_TO_WALL = time.time() - time.monotonic()


def peak_rss(work: Path, broker: Mosquitto, seconds: float) -> tuple[int, int]:
    """Peak RSS (kB) of the gateway process with 500 simulated devices at normal rates."""
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
    config = write_config(work / "rss" / "gw.yaml", broker.url, devices)
    gw = GatewayProc(config).start()
    assert gw.proc is not None
    try:
        time.sleep(seconds)
        return _rss_kb(gw.proc.pid)
    finally:
        gw.terminate()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15, help="length of each timed phase")
    parser.add_argument("--baseline-messages", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gw-bench-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker", persistence=False)
        broker.start()
        try:
            base = baseline(broker.port, args.baseline_messages)
            print(f"(1) baseline paho QoS 1 publish loop:      {base:8.0f} msg/s")
            print("(2) gateway end to end, simulated drivers -> outbox -> broker -> subscriber:")
            offered, rate = gateway_rate(work, broker, args.seconds / 2, base)
            print(f"    sustained: {rate:8.0f} msg/s  = {rate / base:.0%} of (1)  [target >= 50%]")
            lat = alarm_latency(work, broker, rate / 2, args.seconds)
            p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
            print(
                f"(3) alarm latency at {rate / 2:.0f} msg/s telemetry: p50 {p50:.1f} ms, p99 {p99:.1f} ms over {len(lat)} alarms  [target p99 < 50 ms]"
            )
            rss, hwm = peak_rss(work, broker, args.seconds)
            print(
                f"(4) 500 simulated devices: RSS {rss / 1024:.1f} MB, peak {hwm / 1024:.1f} MB  [target < 80 MB]"
            )
        finally:
            broker.kill()
    result = {
        "baseline_msg_s": round(base),
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
