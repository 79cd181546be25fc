"""The driver on an RTU line: a pymodbus RTU server on one end of a socat pty pair,
several unit ids on the same line, a meter that dies, noise, an unplugged port, a scan."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from pathlib import Path

import pytest

from drivers.modbus.profile import Table
from gateway.sdk.model import EventType
from tests.peers import PtyPair, pty_pair
from tests.recording import HistoryContext

from .helpers import events, meter_unit, readings, running, specs, telemetry, wait_until
from .peers import JunkWriter, ModbusPeer, PeerUnit


def device(dev_id: str, profile: str, unit: int, port: Path, extra: str = "") -> str:
    return f"""\
- id: {dev_id}
  kind: meter
  location: {{building: A}}
  driver:
    type: modbus
    bus: {{port: {port}, baud: 9600, timeout_s: 0.15}}
    unit_id: {unit}
    profile: {profile}
    poll_interval_s: 0.25
    offline_after: 3
    backoff_max_s: 0.5
{extra}"""


def test_three_unit_ids_share_one_line(tmp_path: Path, ptys: PtyPair, ctx: HistoryContext) -> None:
    peer = ModbusPeer(
        [
            meter_unit(1, "eastron_sdm120", voltage=229.5, energy_import=10.5),
            meter_unit(2, "eastron_sdm120", voltage=231.25, energy_import=20.25),
            meter_unit(7, "dynaflox_ultrad", flow=1250, volume_forward=123, run_time=86400),
        ]
    )
    peer.units[7].set(Table.HOLDING, 4, [0x0007, 0xA120])  # decimal part 500 000 mL
    devices = (
        device("flat-1", "eastron_sdm120", 1, ptys.a)
        + device("flat-2", "eastron_sdm120", 2, ptys.a)
        + device("flat-1-water", "dynaflox_ultrad", 7, ptys.a)
    )
    ids = ["flat-1", "flat-2", "flat-1-water"]

    async def scenario() -> None:
        await peer.start_rtu(ptys.b)
        try:
            async with running(specs(tmp_path, devices), ctx) as driver:
                await wait_until(lambda: all(len(telemetry(ctx.messages, d)) >= 3 for d in ids))
                assert len(driver._links) == 1  # one connection for the three meters
        finally:
            await peer.stop()

    asyncio.run(scenario())
    for t in telemetry(ctx.messages, "flat-1"):
        assert readings(t)["voltage"] == (229.5, "V", "gauge")
        assert readings(t)["energy_import"] == (10.5, "kWh", "counter")
    for t in telemetry(ctx.messages, "flat-2"):
        assert readings(t)["voltage"] == (231.25, "V", "gauge")
    water = readings(telemetry(ctx.messages, "flat-1-water")[0])
    assert water["flow"] == (1.25, "m³/h", "gauge")
    assert water["volume_forward"] == (123.5, "m³", "counter")
    assert water["run_time"] == (86400, "s", "counter")
    assert {d for d, up, _ in ctx.changes if up} == set(ids)


def test_a_dead_meter_goes_offline_alone_and_comes_back(
    tmp_path: Path, ptys: PtyPair, ctx: HistoryContext, caplog: pytest.LogCaptureFixture
) -> None:
    peer = ModbusPeer([meter_unit(u, "eastron_sdm120", voltage=230.0 + u) for u in (1, 2, 3)])
    devices = "".join(device(f"m{u}", "eastron_sdm120", u, ptys.a) for u in (1, 2, 3))
    window: dict[str, float] = {}

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        await peer.start_rtu(ptys.b)
        try:
            async with running(specs(tmp_path, devices), ctx):
                await wait_until(lambda: all(telemetry(ctx.messages, f"m{u}") for u in (1, 2, 3)))
                peer.silent.add(2)  # meter 2 loses power
                window["start"] = loop.time()
                window["before"] = len(telemetry(ctx.messages, "m1"))
                await wait_until(lambda: ("m2", False) in [(d, up) for d, up, _ in ctx.changes])
                await asyncio.sleep(2.0)
                window["end"] = loop.time()
                window["after"] = len(telemetry(ctx.messages, "m1"))
                window["m3"] = len(telemetry(ctx.messages, "m3"))
                peer.silent.discard(2)  # power back
                await wait_until(lambda: ctx.changes[-1][:2] == ("m2", True), timeout=5)
                n = len(telemetry(ctx.messages, "m2"))
                await wait_until(lambda: len(telemetry(ctx.messages, "m2")) > n)
        finally:
            await peer.stop()

    with caplog.at_level(logging.INFO, logger="test.driver"):
        asyncio.run(scenario())
    # The healthy meters kept their 0.25 s rhythm while meter 2 was silent: its failed
    # attempts cost the line one 0.15 s timeout each, and became rarer with backoff.
    elapsed = window["end"] - window["start"]
    assert window["after"] - window["before"] >= 0.8 * elapsed / 0.25
    (fault,) = events(ctx.messages, "m2", EventType.DEVICE_FAULT)
    assert fault.data["fault"] == "no_response"
    assert fault.data["failures"] == 3
    assert "A to A" in fault.data["hint"]
    assert [c for c in ctx.changes if c[0] == "m2"][1][2].startswith(
        "no reply from unit 2 within 0.15 s (input 0+32)"
    )
    assert not events(ctx.messages, "m1") and not events(ctx.messages, "m3")
    assert all(up for d, up, _ in ctx.changes if d != "m2")
    m2_logs = [r.getMessage() for r in caplog.records if "m2 " in r.getMessage()]
    # once what happened with what to check, once offline, once back: not every poll
    assert len([m for m in m2_logs if "no reply" in m and "check:" in m]) == 1
    assert len([m for m in m2_logs if "is offline" in m]) == 1
    assert len([m for m in m2_logs if "answering normally again" in m]) == 1


def test_noise_on_the_line_never_becomes_a_published_value(
    tmp_path: Path, ptys: PtyPair, ctx: HistoryContext
) -> None:
    peer = ModbusPeer(
        [
            meter_unit(1, "eastron_sdm120", voltage=230.5, energy_import=10.0),
            meter_unit(2, "eastron_sdm120", voltage=231.5, energy_import=20.0),
        ]
    )
    devices = device("m1", "eastron_sdm120", 1, ptys.a) + device("m2", "eastron_sdm120", 2, ptys.a)
    stats: dict[str, float | int | str] = {}

    async def scenario() -> None:
        await peer.start_rtu(ptys.b)
        try:
            async with running(specs(tmp_path, devices), ctx) as driver:
                await wait_until(lambda: bool(telemetry(ctx.messages, "m1")))
                # junk on the line, as the gateway hears it (writing to B reaches A)
                with JunkWriter(ptys.b, every_s=0.004, seed=3).running() as junk:
                    await asyncio.sleep(4.0)
                assert junk.written > 1000
                n1, n2 = len(telemetry(ctx.messages, "m1")), len(telemetry(ctx.messages, "m2"))
                await wait_until(
                    lambda: (
                        len(telemetry(ctx.messages, "m1")) > n1
                        and len(telemetry(ctx.messages, "m2")) > n2
                    )
                )
                stats.update(driver.health().extra)
        finally:
            await peer.stop()

    asyncio.run(scenario())
    # Replies broken by noise were dropped (CRC errors), none was believed, and the
    # meters kept publishing through it and after it.
    assert int(stats["garbled"]) > 0
    expected = {"m1": (230.5, 10.0), "m2": (231.5, 20.0)}
    for dev, (volts, kwh) in expected.items():
        ts = telemetry(ctx.messages, dev)
        assert len(ts) >= 3
        for t in ts:
            got = readings(t)
            assert got["voltage"][0] == volts
            assert got.get("energy_import", (kwh,))[0] == kwh
            assert all(v[0] == 0.0 for k, v in got.items() if k not in ("voltage", "energy_import"))
    assert not events(ctx.messages, "m1", EventType.METER_COUNTER_ANOMALY)


def test_an_unplugged_adapter_takes_its_meters_offline_until_it_is_back(
    tmp_path: Path, ctx: HistoryContext, caplog: pytest.LogCaptureFixture
) -> None:
    line = tmp_path / "line"
    line.mkdir()
    port = line / "ttyA"
    devices = device("m1", "eastron_sdm120", 1, port) + device("m2", "eastron_sdm120", 2, port)

    def down(dev: str) -> bool:
        return any(d == dev and not up for d, up, _ in ctx.changes)

    async def scenario() -> None:
        with pty_pair(line) as pair:
            peer = ModbusPeer([meter_unit(u, "eastron_sdm120", voltage=230.0) for u in (1, 2)])
            await peer.start_rtu(pair.b)
            async with running(specs(tmp_path, devices), ctx):
                await wait_until(lambda: bool(telemetry(ctx.messages, "m2")))
                await peer.stop()
                pair.proc.terminate()  # the USB adapter is pulled: the port vanishes
                pair.proc.wait(timeout=5)
                await wait_until(lambda: down("m1") and down("m2"), timeout=10)
                with pty_pair(line) as again:  # plugged back in
                    peer = ModbusPeer(
                        [meter_unit(u, "eastron_sdm120", voltage=230.0) for u in (1, 2)]
                    )
                    await peer.start_rtu(again.b)
                    try:
                        await wait_until(
                            lambda: (
                                [c[:2] for c in ctx.changes][-2:]
                                in (
                                    [("m1", True), ("m2", True)],
                                    [("m2", True), ("m1", True)],
                                )
                            ),
                            timeout=15,
                        )
                    finally:
                        await peer.stop()

    with caplog.at_level(logging.INFO, logger="test.driver"):
        asyncio.run(scenario())
    reasons = [r for d, up, r in ctx.changes if not up]
    assert reasons and all(r for r in reasons)
    logs = [r.getMessage() for r in caplog.records]
    bus_faults = [m for m in logs if m.startswith("modbus bus ") and "check:" in m]
    assert len(bus_faults) == 1, bus_faults  # one line for the port, not one per meter per poll
    assert "dialout" in bus_faults[0] or "does not exist" in bus_faults[0]
    assert any("connected again" in m for m in logs)


def test_scan_finds_exactly_the_unit_ids_on_the_line(tmp_path: Path, ptys: PtyPair) -> None:
    gateway = shutil.which("gateway", path=str(Path(sys.executable).parent))
    assert gateway is not None, "the gateway program is not installed in this venv"
    no_holding_0 = PeerUnit(9).set(Table.INPUT, 0, [1])  # answers with exception 2
    peer = ModbusPeer(
        [
            PeerUnit(2).set(Table.HOLDING, 0, [0x1234]),
            PeerUnit(5).set(Table.HOLDING, 0, [7]),
            no_holding_0,
        ]
    )

    async def scenario() -> tuple[int, str, str]:
        await peer.start_rtu(ptys.b)
        try:
            proc = await asyncio.create_subprocess_exec(
                gateway,
                "scan",
                "modbus",
                "--port",
                str(ptys.a),
                "--baud",
                "9600",
                "--ids",
                "1-12",
                "--timeout",
                "0.1",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
            return proc.returncode or 0, out.decode(), err.decode()
        finally:
            await peer.stop()

    code, out, err = asyncio.run(scenario())
    assert code == 0, err
    assert out.splitlines() == [
        "unit 2: answered holding 0 = 0x1234",
        "unit 5: answered holding 0 = 0x0007",
        "unit 9: answered exception 2 (a device is there)",
        f"3 devices found on {ptys.a} 9600 8N1: 2, 5, 9",
    ]


def test_scan_through_a_pipe_prints_each_unit_as_found_and_its_progress(
    tmp_path: Path, ptys: PtyPair
) -> None:
    # Through a pipe or into a log (a terminal gets a bar): an installer watching a
    # one-minute scan sees each meter the moment it answers, and where the scan stands.
    gateway = shutil.which("gateway", path=str(Path(sys.executable).parent))
    assert gateway is not None, "the gateway program is not installed in this venv"
    peer = ModbusPeer([PeerUnit(2).set(Table.HOLDING, 0, [0x1234])])

    async def scenario() -> tuple[float, list[str]]:
        await peer.start_rtu(ptys.b)
        try:
            proc = await asyncio.create_subprocess_exec(
                gateway, "scan", "modbus", "--port", str(ptys.a), "--ids", "1-12",
                "--timeout", "0.5",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            assert proc.stdout is not None and proc.stderr is not None
            first = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            seen = time.monotonic()
            assert first.decode().strip() == "unit 2: answered holding 0 = 0x1234"
            await asyncio.wait_for(proc.wait(), timeout=60)
            err = (await proc.stderr.read()).decode()
            return time.monotonic() - seen, err.splitlines()
        finally:
            await peer.stop()

    # Ten silent ids of 0.5 s each follow unit 2: printed at the end, it would come last.
    before_the_end, err = asyncio.run(scenario())
    assert before_the_end > 2.5, "unit 2 was printed when found, not when the scan ended"
    assert err[0] == f"scanning {ptys.a} 9600 8N1: 12 ids, up to 6 s"
    progress = [line for line in err[1:] if line.startswith(f"scanning {ptys.a} 9600 8N1: ")]
    assert len(progress) >= 9 and progress[-1].endswith(": 12/12 ids (up to 12), 1 found")
    assert progress[0].endswith(": 2/12 ids (up to 2), 1 found"), progress
