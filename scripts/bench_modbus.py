"""Modbus benchmark: 32 meters of 20 points on one 9600-baud RTU line.

The meters are played by a paced responder on the far end of a socat pty pair.  A pty
moves bytes instantly, so the responder waits, for every request, as long as the line
would have taken: the request's bytes, the 3.5 characters of silence that end it, and
the reply's bytes, at 11 bits per character (8N2) and 9600 baud.  The driver keeps its
own 3.5-character silence before each request.

Printed and returned by `main()`:
- requests per poll cycle, against one request per point;
- the measured poll cycle (every meter read once), against the line-time lower bound
  computed from the bytes the responder saw: requests + replies + 2 x 3.5 characters
  per transaction.  Target: cycle within 1.5x of the bound.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import statistics
import struct
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import serial

from drivers.modbus.driver import ModbusDriver
from drivers.modbus.plan import plan_device
from drivers.modbus.profile import load_profile
from gateway.config import load_config
from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import Message
from tests.peers import pty_pair

BAUD = 9600
BITS_PER_CHAR = 11  # start, 8 data, 2 stop (8N2; a pty refuses parity settings)
CHAR_S = BITS_PER_CHAR / BAUD
T35_CHARS = 3.5

# A three-phase meter's usual 20 points, laid out as on an Eastron SDM630.
PROFILE = """\
model: Bench meter (SDM630 layout, 20 points)
kind: meter
source: Eastron SDM630 Modbus protocol, input register table (first 20 parameters used)
max_registers_per_read: 60
points:
"""
_POINTS = [
    *(f"voltage_l{i}" for i in (1, 2, 3)),
    *(f"current_l{i}" for i in (1, 2, 3)),
    *(f"power_active_l{i}" for i in (1, 2, 3)),
    *(f"power_apparent_l{i}" for i in (1, 2, 3)),
    *(f"power_reactive_l{i}" for i in (1, 2, 3)),
    *(f"power_factor_l{i}" for i in (1, 2, 3)),
]


def _profile_text() -> str:
    lines = [
        f"  - {{name: {name}, table: input, address: {2 * i}, decode: float32}}"
        for i, name in enumerate(_POINTS)
    ]
    lines.append("  - {name: frequency, table: input, address: 0x46, decode: float32, unit: Hz}")
    lines.append(
        "  - {name: energy_import, table: input, address: 0x48, decode: float32, unit: kWh, "
        "type: counter, max_rate: 90}"
    )
    return PROFILE + "\n".join(lines) + "\n"


# ---- the paced responder: a minimal RTU codec of its own --------------------------------


def crc16(data: bytes) -> int:
    """Modbus CRC-16 (polynomial 0xA001, initial 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def frame(body: bytes) -> bytes:
    return body + struct.pack("<H", crc16(body))


class PacedResponder:
    """Meters on the far end of the line, answering function 3/4 reads at wire speed."""

    def __init__(self, port: Path, units: set[int]) -> None:
        self.port = port
        self.units = units
        self.log: list[tuple[float, int, int, int]] = []  # (t, unit, request, reply bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="responder", daemon=True)

    def registers(self, unit: int, start: int, count: int) -> bytes:
        values = [230.0 + unit + a / 1000 for a in range(start, start + count, 2)]
        raw = b"".join(struct.pack(">f", v) for v in values)
        return raw[: 2 * count]

    def _run(self) -> None:
        with serial.Serial(str(self.port), BAUD, stopbits=2, timeout=0.05) as line:
            buf = b""
            while not self._stop.is_set():
                # Wait for a byte (up to the timeout), then take what has arrived.
                buf += line.read(max(1, line.in_waiting))
                while len(buf) >= 8:
                    req = buf[:8]
                    if struct.unpack("<H", req[6:])[0] != crc16(req[:6]) or req[1] not in (3, 4):
                        buf = buf[1:]  # not a request start: hunt for one
                        continue
                    buf = buf[8:]
                    unit, fc, start, count = struct.unpack(">BBHH", req[:6])
                    if unit not in self.units:
                        continue  # another meter's request: stay silent
                    data = self.registers(unit, start, count)
                    reply = frame(bytes([unit, fc, len(data)]) + data)
                    # The request took its bytes and 3.5 characters to end; the reply
                    # takes its bytes.  Only then has its last byte reached the master.
                    time.sleep((len(req) + T35_CHARS + len(reply)) * CHAR_S)
                    line.write(reply)
                    self.log.append((time.monotonic(), unit, len(req), len(reply)))

    @contextlib.contextmanager
    def running(self) -> Any:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


# ---- the gateway side --------------------------------------------------------------------


class _Context:
    """The driver's view of the runtime: messages are counted, not stored."""

    def __init__(self) -> None:
        self.logger = logging.getLogger("bench.modbus")
        self.telemetry = 0

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def emit(self, message: Message) -> None:
        self.telemetry += 1

    def set_available(self, device_id: str, available: bool | None, reason: str = "") -> None:
        if not available:
            self.logger.warning("%s offline: %s", device_id, reason)


def _config(workdir: Path, port: Path, profile: Path, meters: int) -> Path:
    lines = [
        "version: 1",
        "site: {id: bench}",
        "gateway: {id: gw-bench}",
        "broker: {url: 'mqtt://127.0.0.1:1883'}",
        "devices:",
    ]
    for unit in range(1, meters + 1):
        lines += [
            f"  - id: meter-{unit}",
            "    kind: meter",
            f"    location: {{building: '1', unit: '{unit}'}}",
            "    driver:",
            "      type: modbus",
            f"      bus: {{port: {port}, baud: {BAUD}, stopbits: 2, timeout_s: 0.5}}",
            f"      unit_id: {unit}",
            f"      profile: {profile}",
            "      poll_interval_s: 0.05",  # always due: the line is the limit
        ]
    path = workdir / "bench.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _poll(devices: list[DeviceSpec], responder: PacedResponder, replies: int) -> None:
    """Run the driver until the responder has sent `replies` replies."""
    driver = ModbusDriver(devices, _Context())
    task = asyncio.create_task(driver.run())
    try:
        while len(responder.log) < replies:
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the figures and return them (argv: this script's options)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=32)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = parser.parse_args([] if argv is None else argv)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        profile = workdir / "bench_meter.yaml"
        profile.write_text(_profile_text())
        prof = load_profile(str(profile))
        plan = plan_device(prof.points, max_gap=prof.max_gap, profile=prof)
        per_cycle = len(plan.reads) * args.meters
        with pty_pair(workdir) as pair:
            devices = list(load_config(_config(workdir, pair.a, profile, args.meters)).devices)
            responder = PacedResponder(pair.b, set(range(1, args.meters + 1)))
            with responder.running():
                asyncio.run(_poll(devices, responder, (args.cycles + 1) * per_cycle))
            log = list(responder.log)

    # Cycles measured after a warm-up cycle: from the last reply of cycle 0 to the last
    # reply of cycle n, where a cycle is every meter's reads once.
    done = log[per_cycle - 1 :: per_cycle]
    cycle_times = [b[0] - a[0] for a, b in itertools.pairwise(done)][: args.cycles]
    one_cycle = log[per_cycle : 2 * per_cycle]
    wire_chars = sum(req + reply + 2 * T35_CHARS for _, _, req, reply in one_cycle)
    bound_s = wire_chars * CHAR_S
    naive_chars = args.meters * len(prof.points) * (8 + 9 + 2 * T35_CHARS)
    cycle_s = statistics.median(cycle_times)
    figures: dict[str, Any] = {
        "meters": args.meters,
        "points_per_meter": len(prof.points),
        "baud": BAUD,
        "bits_per_char": BITS_PER_CHAR,
        "requests_per_cycle": per_cycle,
        "requests_per_cycle_one_per_point": args.meters * len(prof.points),
        "cycle_s": round(cycle_s, 3),
        "cycle_s_all": [round(c, 3) for c in cycle_times],
        "wire_bound_s": round(bound_s, 3),
        "cycle_over_bound": round(cycle_s / bound_s, 3),
        "wire_bound_one_per_point_s": round(naive_chars * CHAR_S, 3),
        "target_over_bound": 1.5,
    }
    if args.json:
        print(json.dumps(figures))
    else:
        print(
            f"modbus: {args.meters} meters x {len(prof.points)} points, one RTU line, {BAUD} baud 8N2"
        )
        print(
            f"  requests per poll cycle   {per_cycle} "
            f"(one per point: {figures['requests_per_cycle_one_per_point']})"
        )
        print(
            f"  poll cycle                {cycle_s:.3f} s (median of {len(cycle_times)}: "
            f"{', '.join(f'{c:.3f}' for c in cycle_times)})"
        )
        print(
            f"  line-time lower bound     {bound_s:.3f} s "
            f"(one request per point: {figures['wire_bound_one_per_point_s']:.3f} s)"
        )
        print(f"  cycle / bound             {cycle_s / bound_s:.3f} (target <= 1.5)")
    return figures


if __name__ == "__main__":
    main(sys.argv[1:])
