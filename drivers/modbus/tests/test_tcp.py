"""The driver against a real pymodbus server on loopback TCP (Modbus TCP and RTU over TCP)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from drivers.modbus.driver import read_once
from drivers.modbus.profile import Table
from gateway.cli import main as gateway_main
from gateway.sdk.driver import ReadResult
from gateway.sdk.model import EventType
from tests.peers import free_port
from tests.recording import HistoryContext

from .helpers import (
    config_file,
    events,
    meter_unit,
    readings,
    running,
    specs,
    telemetry,
    wait_until,
)
from .peers import ModbusPeer, PeerUnit, float32_words


def device(
    dev_id: str,
    profile: str,
    unit: int,
    bus: str,
    *,
    kind: str = "meter",
    extra: str = "",
    interval: float = 0.1,
) -> str:
    return f"""\
- id: {dev_id}
  kind: {kind}
  location: {{building: A}}
  driver:
    type: modbus
    bus: {bus}
    unit_id: {unit}
    profile: {profile}
    poll_interval_s: {interval}
{extra}"""


def tcp(port: int, framer: str = "socket") -> str:
    return f"{{host: 127.0.0.1, port: {port}, framer: {framer}, timeout_s: 0.3}}"


def test_meters_on_one_tcp_endpoint_publish_values_in_canonical_units(
    tmp_path: Path, ctx: HistoryContext
) -> None:
    port = free_port()
    peer = ModbusPeer(
        [
            meter_unit(
                1,
                "chint_ddsu666",
                voltage=230.2,
                current=5.25,
                power_active=1.2075,
                power_factor=0.98,
                frequency=50.0,
                energy_import=1234.5,
            ),
            meter_unit(2, "eastron_sdm120", voltage=231.7, power_active=-150.25, energy_export=2.5),
        ]
    )
    devices = device("flat-1", "chint_ddsu666", 1, tcp(port)) + device(
        "flat-2", "eastron_sdm120", 2, tcp(port)
    )

    async def scenario() -> None:
        await peer.start_tcp(port)
        try:
            async with running(specs(tmp_path, devices), ctx):
                await wait_until(
                    lambda: bool(
                        telemetry(ctx.messages, "flat-1") and telemetry(ctx.messages, "flat-2")
                    )
                )
        finally:
            await peer.stop()

    asyncio.run(scenario())
    one = readings(telemetry(ctx.messages, "flat-1")[0])
    assert one["voltage"] == (230.2, "V", "gauge")
    assert one["current"] == (5.25, "A", "gauge")
    assert one["power_active"] == (1207.5, "W", "gauge")  # the meter says 1.2075 kW
    assert one["power_factor"] == (0.98, "", "gauge")
    assert one["frequency"] == (50.0, "Hz", "gauge")
    assert one["energy_import"] == (1234.5, "kWh", "counter")
    assert one["energy_export"] == (0.0, "kWh", "counter")
    two = readings(telemetry(ctx.messages, "flat-2")[0])
    assert two["voltage"] == (231.7, "V", "gauge")
    assert two["power_active"] == (-150.25, "W", "gauge")
    assert two["energy_export"] == (2.5, "kWh", "counter")
    assert len(two) == 13
    assert ctx.availability == {"flat-1": (True, ""), "flat-2": (True, "")}


def test_rtu_framing_over_tcp_and_scaled_registers(tmp_path: Path, ctx: HistoryContext) -> None:
    # A CHINT DTSU666 behind a serial server: floats in 0.1 V, 0.001 A, 0.01 Hz.
    port = free_port()
    peer = ModbusPeer(
        [
            meter_unit(
                3,
                "chint_dtsu666",
                voltage_l1=2301.0,
                current_l2=12345.0,
                frequency=4998.0,
                power_active=35000.0,
                power_factor=985.0,
                energy_import=42.25,
            )
        ]
    )

    async def scenario() -> None:
        await peer.start_tcp(port, rtu_framing=True)
        try:
            async with running(
                specs(tmp_path, device("plant", "chint_dtsu666", 3, tcp(port, "rtu"))), ctx
            ):
                await wait_until(lambda: bool(telemetry(ctx.messages, "plant")))
        finally:
            await peer.stop()

    asyncio.run(scenario())
    got = readings(telemetry(ctx.messages, "plant")[0])
    assert got["voltage_l1"] == (230.1, "V", "gauge")
    assert got["current_l2"] == (12.345, "A", "gauge")
    assert got["frequency"] == (49.98, "Hz", "gauge")
    assert got["power_active"] == (3500.0, "W", "gauge")
    assert got["power_factor"] == (0.985, "", "gauge")
    assert got["energy_import"] == (42.25, "kWh", "counter")


def test_an_exception_leaves_out_its_points_and_is_logged_once(
    tmp_path: Path, ctx: HistoryContext, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    unit = meter_unit(1, "chint_dtsu666", voltage_l1=2300.0)
    for a in (0x2044, 0x2045):  # this firmware has no frequency register
        del unit.tables[Table.HOLDING][a]
    empty = PeerUnit(2)  # answers, but has none of the profile's registers
    peer = ModbusPeer([unit, empty])
    extra = "    offline_after: 2\n"
    devices = device("partial", "chint_dtsu666", 1, tcp(port)) + device(
        "wrong-model", "chint_dtsu666", 2, tcp(port), extra=extra
    )

    async def scenario() -> None:
        await peer.start_tcp(port)
        try:
            async with running(specs(tmp_path, devices), ctx):
                await wait_until(lambda: len(telemetry(ctx.messages, "partial")) >= 4)
                await wait_until(lambda: bool(events(ctx.messages, "wrong-model")))
        finally:
            await peer.stop()

    with caplog.at_level(logging.WARNING, logger="test.driver"):
        asyncio.run(scenario())
    for t in telemetry(ctx.messages, "partial"):
        got = readings(t)
        assert "frequency" not in got
        assert got["voltage_l1"] == (230.0, "V", "gauge")
    partial_logs = [r for r in caplog.records if "partial" in r.getMessage()]
    assert len(partial_logs) == 1
    assert "exception 2 (illegal data address) to holding 8260+2" in partial_logs[0].getMessage()
    assert "max_gap" in partial_logs[0].getMessage()
    assert ctx.availability["partial"] == (True, "")
    # A device answering only exceptions gives no data: offline, with the code.
    assert ctx.availability["wrong-model"][0] is False
    (fault,) = events(ctx.messages, "wrong-model", EventType.DEVICE_FAULT)
    assert fault.data["fault"] == "exception"
    assert fault.data["exception_code"] == 2
    assert not telemetry(ctx.messages, "wrong-model")


def test_a_counter_that_runs_backwards_or_jumps_is_not_published(
    tmp_path: Path, ctx: HistoryContext
) -> None:
    port = free_port()
    peer = ModbusPeer([meter_unit(1, "eastron_sdm120", voltage=230.0, energy_import=1000.0)])
    energy = 0x0048

    def published() -> list[float]:
        return [
            float(readings(t)["energy_import"][0])
            for t in telemetry(ctx.messages, "m")
            if "energy_import" in readings(t)
        ]

    def anomalies() -> list[dict[str, object]]:
        return [dict(e.data) for e in events(ctx.messages, "m", EventType.METER_COUNTER_ANOMALY)]

    async def meter_shows(value: float) -> None:
        await peer.set(1, Table.INPUT, energy, float32_words(value))

    async def scenario() -> None:
        await peer.start_tcp(port)
        try:
            spec = specs(tmp_path, device("m", "eastron_sdm120", 1, tcp(port), interval=0.3))
            async with running(spec, ctx):
                await wait_until(lambda: published() == [1000.0])
                # a misread: backwards once, then the right value again
                await meter_shows(999.0)
                await wait_until(lambda: len(anomalies()) == 1)
                await meter_shows(1000.0)
                await wait_until(lambda: published().count(1000.0) == 2)
                # a jump: 500 kWh within a second
                await meter_shows(1500.0)
                await wait_until(lambda: len(anomalies()) == 2)
                await meter_shows(1000.0)
                await wait_until(lambda: published().count(1000.0) == 3)
                # a replaced meter: the new level holds, and is published after three reads
                await meter_shows(5.0)
                await wait_until(lambda: 5.0 in published())
        finally:
            await peer.stop()

    asyncio.run(scenario())
    assert published()[:4] == [1000.0, 1000.0, 1000.0, 5.0]
    assert set(published()[4:]) <= {5.0}
    first, second, third = anomalies()
    assert (first["old"], first["new"], first["reason"]) == (1000.0, 999.0, "backwards")
    assert (second["old"], second["new"], second["reason"]) == (1000.0, 1500.0, "jump")
    assert (third["old"], third["new"], third["reason"]) == (1000.0, 5.0, "backwards")
    assert first["reading"] == "energy_import" and first["unit"] == "kWh"
    assert first["max_rate_per_h"] == 15
    # the other readings kept coming while the counter was withheld (1 + 1 + 2 polls)
    voltages = [t for t in telemetry(ctx.messages, "m") if "voltage" in readings(t)]
    assert len(voltages) >= len(published()) + 4


def test_fire_panel_zone_inputs_become_smoke_events_on_each_change(
    tmp_path: Path, ctx: HistoryContext
) -> None:
    port = free_port()
    # zone 3 is already in alarm when the gateway starts; the fault relay is energised
    panel = meter_unit(1, "moxa_e1210_fire_zones", zone_3=True, panel_fault=True)
    peer = ModbusPeer([panel])

    def kinds() -> list[tuple[str, object]]:
        return [(str(e.type), e.data.get("zone")) for e in events(ctx.messages, "panel")]

    async def scenario() -> None:
        await peer.start_tcp(port)
        try:
            async with running(
                specs(
                    tmp_path, device("panel", "moxa_e1210_fire_zones", 1, tcp(port), kind="smoke")
                ),
                ctx,
            ):
                await wait_until(lambda: len(kinds()) == 1)
                await peer.set(1, Table.DISCRETE, 2, [False])  # zone 3 reset at the panel
                await wait_until(lambda: len(kinds()) == 2)
                await peer.set(1, Table.DISCRETE, 0, [True])  # fire in zone 1
                await wait_until(lambda: len(kinds()) == 3)
                await peer.set(1, Table.DISCRETE, 15, [False])  # the fault relay drops
                await wait_until(lambda: len(kinds()) == 4)
                await asyncio.sleep(0.3)  # unchanged inputs: nothing more
        finally:
            await peer.stop()

    asyncio.run(scenario())
    assert kinds() == [
        ("smoke.alarm", 3),
        ("smoke.cleared", 3),
        ("smoke.alarm", 1),
        ("device.fault", None),
    ]
    assert events(ctx.messages, "panel")[0].data == {"point": "zone_3", "zone": 3}
    assert events(ctx.messages, "panel")[3].data["fault"] == "fire panel fault relay open"
    assert not telemetry(ctx.messages, "panel")


def test_read_once_shows_values_units_raw_registers_or_the_fault(tmp_path: Path) -> None:
    port = free_port()
    unit = meter_unit(1, "chint_dtsu666", voltage_l1=2301.0, energy_import=42.25)
    for a in (0x2044, 0x2045):
        del unit.tables[Table.HOLDING][a]
    peer = ModbusPeer([unit])
    devs = device("plant", "chint_dtsu666", 1, tcp(port)) + device(
        "gone", "chint_dtsu666", 9, tcp(port)
    )
    ok_spec, dead_spec = specs(tmp_path, devs)

    async def scenario() -> tuple[ReadResult, ReadResult]:
        await peer.start_tcp(port)
        try:
            return await read_once(ok_spec), await read_once(dead_spec)
        finally:
            await peer.stop()

    ok, dead = asyncio.run(scenario())
    points = {p.name: p for p in ok.points}
    assert ok.ok
    v = points["voltage_l1"]
    assert (v.value, v.unit, v.raw) == (230.1, "V", "0x450F 0xD000")
    assert "holding 8198 (0x2006) float32" in v.note
    assert points["energy_import"].note.endswith("counter")
    f = points["frequency"]
    assert f.value is None and "exception 2 (illegal data address)" in f.note
    assert dead.fault == "no reply from unit 9 within 0.3 s (holding 4126+12)"
    assert "unit id" in dead.hint


def test_plan_command_shows_the_reads(tmp_path: Path) -> None:
    path = config_file(
        tmp_path,
        device("m", "eastron_sdm630", 2, "{port: /dev/ttyUSB0, baud: 9600}")
        + "- {id: door, kind: door, location: {building: A}, driver: {type: simulated}}\n",
    )
    result = CliRunner().invoke(gateway_main, ["plan", "m", "-c", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(
        "m: profile eastron_sdm630 (Eastron SDM630-Modbus), unit 2 on /dev/ttyUSB0"
    )
    assert lines[2].split()[:5] == ["1", "04", "input", "0", "(0x0000)"]
    assert "4 reads instead of 30 (one per point)" in result.output
    assert "line time per poll at 9600 baud" in result.output
    other = CliRunner().invoke(gateway_main, ["plan", "door", "-c", str(path)])
    assert other.exit_code != 0
    assert "uses the simulated driver, not modbus" in other.output


def test_gateway_read_prints_every_point_or_the_fault_and_what_to_check(tmp_path: Path) -> None:
    gateway = shutil.which("gateway", path=str(Path(sys.executable).parent))
    assert gateway is not None, "the gateway program is not installed in this venv"
    port = free_port()
    peer = ModbusPeer([meter_unit(1, "eastron_sdm120", voltage=230.2, energy_import=1234.5)])
    path = config_file(
        tmp_path,
        device("flat", "eastron_sdm120", 1, tcp(port))
        + device("gone", "eastron_sdm120", 4, tcp(port)),
    )

    async def cli(*args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            gateway, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
        return proc.returncode or 0, out.decode(), err.decode()

    async def scenario() -> list[tuple[int, str, str]]:
        await peer.start_tcp(port)
        try:
            return [
                await cli("read", "flat", "-c", str(path)),
                await cli("read", "gone", "-c", str(path)),
            ]
        finally:
            await peer.stop()

    (code, out, err), (dead_code, _, dead_err) = asyncio.run(scenario())
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert len(rows) == 13
    assert rows["voltage"][:5] == ["voltage", "230.2", "V", "0x4366", "0x3333"]
    assert rows["energy_import"][:5] == ["energy_import", "1234.5", "kWh", "0x449A", "0x5000"]
    assert dead_code == 1
    assert "gone: FAULT no reply from unit 4 within 0.3 s (input 0+32)" in dead_err
    assert "check: " in dead_err


def test_a_point_the_meter_reports_as_nan_is_left_out_and_logged_once(
    tmp_path: Path, ctx: HistoryContext, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    unit = meter_unit(1, "eastron_sdm120", voltage=230.0)
    unit.set(Table.INPUT, 0x0046, [0x7FC0, 0x0000])  # frequency: NaN, "not available"
    peer = ModbusPeer([unit])

    async def scenario() -> None:
        await peer.start_tcp(port)
        try:
            async with running(specs(tmp_path, device("m", "eastron_sdm120", 1, tcp(port))), ctx):
                await wait_until(lambda: len(telemetry(ctx.messages, "m")) >= 4)
                await peer.set(1, Table.INPUT, 0x0046, float32_words(50.0))
                await wait_until(lambda: "frequency" in readings(telemetry(ctx.messages, "m")[-1]))
        finally:
            await peer.stop()

    with caplog.at_level(logging.INFO, logger="test.driver"):
        asyncio.run(scenario())
    published = [readings(t).get("frequency") for t in telemetry(ctx.messages, "m")]
    assert published[:4] == [None] * 4
    assert published[-1] == (50.0, "Hz", "gauge")
    logs = [r.getMessage() for r in caplog.records if "frequency" in r.getMessage()]
    assert len(logs) == 2, logs
    assert "point frequency not published: the meter reports no value (nan)" in logs[0]
    assert "point frequency decodes again" in logs[1]
    assert ctx.availability["m"] == (True, "")


def test_a_restarted_tcp_device_is_reconnected(tmp_path: Path, ctx: HistoryContext) -> None:
    port = free_port()
    extra = "    offline_after: 2\n    backoff_max_s: 0.4\n"

    def changes() -> list[bool | None]:
        return [up for d, up, _ in ctx.changes if d == "m"]

    async def scenario() -> None:
        peer = await ModbusPeer([meter_unit(1, "eastron_sdm120", voltage=230.0)]).start_tcp(port)
        spec = specs(tmp_path, device("m", "eastron_sdm120", 1, tcp(port), extra=extra))
        async with running(spec, ctx):
            await wait_until(lambda: bool(telemetry(ctx.messages, "m")))
            await peer.stop()  # the meter's Ethernet module reboots
            await wait_until(lambda: changes() == [True, False])
            peer = await ModbusPeer([meter_unit(1, "eastron_sdm120", voltage=231.0)]).start_tcp(
                port
            )
            try:
                await wait_until(lambda: changes() == [True, False, True], timeout=15)
                await wait_until(
                    lambda: readings(telemetry(ctx.messages, "m")[-1])["voltage"][0] == 231.0
                )
            finally:
                await peer.stop()

    asyncio.run(scenario())
    (fault,) = events(ctx.messages, "m", EventType.DEVICE_FAULT)
    assert fault.data["fault"] == "port"
    assert f"127.0.0.1:{port}" in fault.data["detail"]
    assert "firewall" in fault.data["hint"]
