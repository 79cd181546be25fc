"""Latency benchmark: a physical event to its normalised event at a central subscriber.

One gateway runtime runs in this process with four drivers, each fed at its transport
boundary the way the hardware would: a GPIO edge injected into the gpio driver's chip
interface (the fake chip: this machine has no GPIO), a line written on a pty as a
433 MHz receiver prints it, a zigbee2mqtt state message published on the local
Mosquitto, and a card presented by a libosdp peripheral on a pty (secure channel, the
card on the reader's allow list).  The gateway stores each event in its real outbox
(sync full) and publishes it to a second Mosquitto, the central broker, where a
subscriber receives it.  Latency = received at the subscriber - the physical event,
both on this machine's monotonic clock.

Events are sent one at a time, each after the previous one arrived plus a gap, so the
figures are those of an idle gateway meeting one alarm.  The baseline, measured in the
same run, is a plain paho QoS 1 publish to the same subscriber on the central broker.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

import gateway.process.runtime
from drivers.gpio import DRIVER as GPIO
from drivers.gpio import GpioDriver
from drivers.gpio.tests.fakechip import FakeChip, Opener
from gateway.config import load_config
from gateway.process.runtime import Gateway
from gateway.sdk.driver import DeviceSpec, DriverContext
from gateway.sdk.model import DeviceRef
from gateway.sdk.registry import available_drivers
from scripts.bench_core import pct
from tests.harness import Subscriber, topic_base, write_config
from tests.peers import Mosquitto, PtyPair, pty_pair

__all__ = ["main"]

TARGET_P99_MS = 100.0
GPIO_LINE = 23
GPIO_DEBOUNCE_MS = 20  # the driver's default: part of the latency, by design
SERIAL_LINE = b"RX 1A2B3C SOS\r\n"
Z2M_NAME = "bench/sos"
OSDP_KEY = bytes(range(16))
OSDP_SECRET = "bench-site-secret-0123456789abcdef"


@dataclasses.dataclass
class Result:
    """Latencies (ms) of one source, and the events that never arrived."""

    source: str
    latencies: list[float]
    missed: int = 0
    note: str = ""
    # ms until the driver's emit returned: the event is durable and the observers were
    # told; the uplink may already have published it (it reads the outbox on commit).
    durable: list[float] = dataclasses.field(default_factory=list)

    def row(self) -> str:
        lat = self.latencies
        return (
            f"  {self.source:<36} {len(lat):6d} {pct(lat, 0.5):8.1f} {pct(lat, 0.99):8.1f}"
            f" {max(lat, default=float('nan')):8.1f} {pct(self.durable, 0.5):9.1f}"
            f" {pct(self.durable, 0.99):9.1f}"
            f" {self.missed:6d}  {self.note}"
        )

    def as_dict(self) -> dict[str, Any]:
        lat = self.latencies
        return {
            "events": len(lat),
            "missed": self.missed,
            "p50_ms": round(pct(lat, 0.5), 2),
            "p99_ms": round(pct(lat, 0.99), 2),
            "max_ms": round(max(lat, default=float("nan")), 2),
            "emitted_p50_ms": round(pct(self.durable, 0.5), 2),
            "emitted_p99_ms": round(pct(self.durable, 0.99), 2),
        }


class Arrivals:
    """Waits for the next message of one device on the subscriber, without copying all."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.seen = 0

    async def next(self, device_id: str, timeout: float = 2.0) -> float | None:
        """Monotonic arrival time of the next message of `device_id`, or None on timeout."""
        suffix = f"/devices/{device_id}/events"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.sub.messages  # appended by paho's thread; we only read
            while self.seen < len(messages):
                m = messages[self.seen]
                self.seen += 1
                if m.topic.endswith(suffix):
                    return m.at
            await asyncio.sleep(0.0005)
        return None


def baseline(port: int, n: int, gap_s: float) -> Result:
    """Plain paho QoS 1 publish -> subscriber on the central broker, one at a time."""
    sub = Subscriber(port, "bench/latency/#").start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-lat", protocol=mqtt.MQTTv5)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    out = Result("baseline: paho QoS 1 pub -> sub", [])
    for _ in range(n):
        before = len(sub.messages)
        t0 = time.monotonic()
        pub.publish("bench/latency/x", b"x" * 300, qos=1)
        if not sub.wait(lambda ms, k=before: len(ms) > k, timeout=2):
            out.missed += 1
            continue
        out.latencies.append((sub.messages[before].at - t0) * 1000)
        time.sleep(gap_s)
    pub.disconnect()
    pub.loop_stop()
    sub.stop()
    return out


def _devices(
    work: Path, local: Mosquitto, serial: PtyPair, osdp_ptys: PtyPair, osdp2_ptys: PtyPair
) -> list[Any]:
    from drivers.osdp.pseudonym import card_pseudonym
    from drivers.osdp.wiegand import encode

    (work / "osdp.secret").write_text(OSDP_SECRET + "\n")
    (work / "osdp.scbk").write_text(OSDP_KEY.hex() + "\n")
    card = encode(12, 34567)
    (work / "allow.txt").write_text(card_pseudonym(OSDP_SECRET.encode(), card, 26) + "\n")
    flat = {"building": "1", "floor": 1, "unit": "101"}

    def reader(port: Path, **extra: Any) -> dict[str, Any]:
        return {
            "type": "osdp",
            "port": str(port),
            "baudrate": 115200,
            "address": 1,
            "secure_channel": "scbk",
            "scbk": {"file": str(work / "osdp.scbk")},
            "site_secret": {"file": str(work / "osdp.secret")},
            "allow_list": str(work / "allow.txt"),
            **extra,
        }

    return [
        {
            "id": "sos-gpio",
            "kind": "elderly_alarm",
            "location": flat,
            "driver": {"type": "gpio", "line": GPIO_LINE, "role": "sos_button"},
        },
        {
            "id": "sos-433",
            "kind": "elderly_alarm",
            "location": flat,
            # dedupe_s 0: every line is a press here; a real pendant's repeats are merged.
            "driver": {
                "type": "serial_line",
                "port": str(serial.a),
                "code": "1A2B3C",
                "dedupe_s": 0,
            },
        },
        {
            "id": "sos-zigbee",
            "kind": "elderly_alarm",
            "location": flat,
            "driver": {"type": "zigbee2mqtt", "broker_url": local.url, "friendly_name": Z2M_NAME},
        },
        {
            "id": "reader-lobby",
            "kind": "door",
            "location": {"building": "1", "floor": 0, "unit": "lobby"},
            "driver": reader(osdp_ptys.a),
        },
        {
            # The same reader on a bus of its own, without LED and buzzer feedback: the
            # feedback runs beside the emit, but its commands queue ahead of the next
            # card's poll, so this shows what that costs.
            "id": "reader-bikes",
            "kind": "door",
            "location": {"building": "1", "floor": -1, "unit": "bike-room"},
            "driver": reader(osdp2_ptys.a, feedback="none"),
        },
    ]


class CardReader:
    """A libosdp peripheral in a process of its own, as a reader is its own hardware.

    In the gateway's process it would share the GIL with the gateway, the subscriber and
    the publishers; under load its late replies broke the secure channel.  The child
    stamps each card with the monotonic clock, which is the same across processes.
    """

    def __init__(self, port: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.bench_latency", "--reader", str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        if self.stdout.readline().strip() != "ready":
            raise RuntimeError("the OSDP reader process did not start")

    async def present(self) -> float:
        """Present the allowed card; the monotonic time it was handed to libosdp."""
        self.stdin.write("card\n")
        self.stdin.flush()
        return float(await asyncio.to_thread(self.stdout.readline))

    def stop(self) -> None:
        self.stdin.close()
        self.proc.wait(timeout=10)


def reader_process(port: str) -> None:
    """The child side of `CardReader`: a reader with the allowed card, driven by stdin."""
    from drivers.osdp.tests.peer import ReaderPeer, SharedLine
    from drivers.osdp.wiegand import encode

    line = SharedLine(Path(port))
    peer = ReaderPeer(line, 1, OSDP_KEY)
    peer.start()
    card = encode(12, 34567)
    print("ready", flush=True)
    try:
        for command in sys.stdin:
            if command.strip() == "card":
                t0 = time.monotonic()
                peer.card(card, 26)
                print(repr(t0), flush=True)
    finally:
        peer.stop()
        line.close()


def _fake_gpio(chip: FakeChip) -> None:
    """The runtime's driver registry, with the gpio driver on the fake chip."""

    def factory(devices: Sequence[DeviceSpec], ctx: DriverContext) -> GpioDriver:
        return GpioDriver(devices, ctx, opener=Opener(chip))

    patched = {**available_drivers(), "gpio": dataclasses.replace(GPIO, factory=factory)}
    gateway.process.runtime.available_drivers = lambda: patched  # type: ignore[assignment]


async def _measure(
    name: str,
    device_id: str,
    arrivals: Arrivals,
    durable: dict[str, float],
    n: int,
    gap_s: float,
    inject: Callable[[], Awaitable[float]],
    note: str = "",
    online: set[str] | None = None,
) -> Result:
    out = Result(name, [], note=note)
    for _ in range(n):
        if online is not None and device_id not in online:
            # Waiting out every event of an offline device would only add timeouts.
            out.note = f"{note}; STOPPED: {device_id} went offline".lstrip("; ")
            break
        t0 = await inject()
        at = await arrivals.next(device_id)
        if at is None:
            out.missed += 1
        else:
            out.latencies.append((at - t0) * 1000)
            out.durable.append((durable[device_id] - t0) * 1000)
        await asyncio.sleep(gap_s)
    return out


async def run_gateway(
    work: Path, central: Mosquitto, local: Mosquitto, n: int, gap_s: float
) -> list[Result]:
    """The four sources through one in-process gateway to the central subscriber."""
    chip = FakeChip({GPIO_LINE: 1})  # an NO button with the pull-up: 1 at rest
    _fake_gpio(chip)
    for sub_dir in ("serial", "osdp", "osdp2"):
        (work / sub_dir).mkdir()
    with (
        pty_pair(work / "serial") as serial,
        pty_pair(work / "osdp") as osdp_ptys,
        pty_pair(work / "osdp2") as osdp2_ptys,
    ):
        config = write_config(
            work / "gw" / "site.yaml",
            central.url,
            _devices(work, local, serial, osdp_ptys, osdp2_ptys),
            outbox={"sync": "full", "commit_interval_ms": 50},
            health={"interval_s": 60},
        )
        sub = Subscriber(central.port, f"{topic_base(config)}/devices/+/events").start()
        z2m = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-z2m")
        z2m.connect("127.0.0.1", local.port)
        z2m.loop_start()
        z2m.publish(f"zigbee2mqtt/{Z2M_NAME}/availability", b'{"state":"online"}', 1, True)
        reader = CardReader(osdp_ptys.b)
        bikes = CardReader(osdp2_ptys.b)
        serial_fd = os.open(serial.b, os.O_RDWR | os.O_NOCTTY)

        gw = Gateway(load_config(config))
        online: set[str] = set()

        def availability(ref: DeviceRef, available: bool | None, _reason: str) -> None:
            (online.add if available else online.discard)(ref.id)

        gw.availability_observers.append(availability)
        # When each device's last message was durable in the outbox (observers run then).
        durable: dict[str, float] = {}
        gw.message_observers.append(lambda m: durable.__setitem__(m.device.id, time.monotonic()))
        stop = asyncio.Event()
        task = asyncio.create_task(gw.run(stop))
        try:
            everyone = {"sos-gpio", "sos-433", "sos-zigbee", "reader-lobby", "reader-bikes"}
            async with asyncio.timeout(30):
                while online != everyone:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # let start-up messages drain
            arrivals = Arrivals(sub)
            arrivals.seen = len(sub.messages)

            async def gpio_press() -> float:
                chip.set(GPIO_LINE, 1)  # release the previous press (reports nothing)
                await asyncio.sleep(GPIO_DEBOUNCE_MS / 1000 * 2)
                chip.set(GPIO_LINE, 0)
                return chip.last_edge_ns / 1e9  # the edge's stamp, as the kernel's

            async def serial_write() -> float:
                t0 = time.monotonic()
                os.write(serial_fd, SERIAL_LINE)
                return t0

            async def z2m_publish() -> float:
                t0 = time.monotonic()
                z2m.publish(f"zigbee2mqtt/{Z2M_NAME}", b'{"action":"emergency"}', qos=0)
                return t0

            async def osdp_card() -> float:
                return await reader.present()

            async def osdp_card_bikes() -> float:
                return await bikes.present()

            results = [
                await _measure(
                    "GPIO edge (fake chip)",
                    "sos-gpio",
                    arrivals,
                    durable,
                    n,
                    gap_s,
                    gpio_press,
                    f"incl. {GPIO_DEBOUNCE_MS} ms debounce",
                    online,
                ),
                await _measure(
                    "serial line on a pty",
                    "sos-433",
                    arrivals,
                    durable,
                    n,
                    gap_s,
                    serial_write,
                    "",
                    online,
                ),
                await _measure(
                    "zigbee2mqtt msg on local broker",
                    "sos-zigbee",
                    arrivals,
                    durable,
                    n,
                    gap_s,
                    z2m_publish,
                    "",
                    online,
                ),
                await _measure(
                    "OSDP card, libosdp PD on a pty",
                    "reader-lobby",
                    arrivals,
                    durable,
                    n,
                    gap_s,
                    osdp_card,
                    "secure channel, 115200 Bd, LED+buzzer feedback",
                    online,
                ),
                await _measure(
                    "OSDP card, no feedback",
                    "reader-bikes",
                    arrivals,
                    durable,
                    n,
                    gap_s,
                    osdp_card_bikes,
                    "as above, feedback: none",
                    online,
                ),
            ]
        finally:
            stop.set()
            await task
            os.close(serial_fd)
            reader.stop()
            bikes.stop()
            z2m.loop_stop()
            sub.stop()
    return results


def machine() -> str:
    """CPU model and count, for the record."""
    model = "unknown CPU"
    for text in Path("/proc/cpuinfo").read_text().splitlines():
        if text.startswith("model name"):
            model = text.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} CPUs"


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300, help="events per source")
    parser.add_argument("--gap-ms", type=float, default=50, help="pause after each event")
    parser.add_argument("--reader", help=argparse.SUPPRESS)  # the OSDP reader child process
    args = parser.parse_args()
    if args.reader:
        reader_process(args.reader)
        return {}
    gap_s = args.gap_ms / 1000
    with tempfile.TemporaryDirectory(prefix="gw-bench-lat-") as tmp:
        work = Path(tmp)
        central = Mosquitto(work / "central", persistence=False)
        local = Mosquitto(work / "local", persistence=False)
        central.start()
        local.start()
        try:
            print(f"(5) latency, physical event -> central subscriber; {machine()}")
            base = baseline(central.port, args.events, gap_s)
            results = asyncio.run(run_gateway(work, central, local, args.events, gap_s))
        finally:
            central.kill()
            local.kill()
    print(
        f"  {'source':<36} {'events':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'emit p50':>9} {'emit p99':>9} {'missed':>6}"
    )
    for r in [base, *results]:
        print(r.row())
    worst = max((pct(r.latencies, 0.99) for r in results), default=float("nan"))
    missed = sum(r.missed for r in results)
    verdict = "met" if worst < TARGET_P99_MS and missed == 0 else "NOT met"
    print(f"  worst p99 {worst:.1f} ms  [target p99 < {TARGET_P99_MS:.0f} ms: {verdict}]")
    out = {"baseline": base.as_dict(), **{r.source: r.as_dict() for r in results}}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    threading.excepthook = lambda a: None  # paho's loop threads end noisily at exit
    main()
