"""The driver against simulated meters answering on the far end of a socat pty pair."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from drivers.dlt645 import DRIVER
from drivers.dlt645.driver import read_once
from drivers.dlt645.tests.responder import Bus, SimMeter, bcd_value
from gateway.config import load_config
from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import EventType, Telemetry, Unit, ValueType
from tests.driverkit import config_with_devices, events, running
from tests.peers import PtyPair
from tests.recording import RecordingContext

FLAT_101 = "000012345678"
FLAT_102 = "000012345679"
SILENT = "000012340000"

ENERGY, TARIFF_1, VOLTAGE_A, CURRENT_A = 0x00010000, 0x00010100, 0x02010100, 0x02020100
POWER, PF, VOLTAGE_B = 0x02030000, 0x02060000, 0x02010200
READINGS = [
    "energy_total",
    "energy_t1",
    "voltage_a",
    "current_a",
    "power_total",
    "power_factor_total",
]


def meter(address: str, kwh: int) -> SimMeter:
    """A single-phase meter: no phase B, so it refuses voltage_b as real ones do."""
    return SimMeter(
        address,
        {
            ENERGY: bcd_value(kwh, 4),  # hundredths of a kWh
            TARIFF_1: bcd_value(kwh // 2, 4),
            VOLTAGE_A: bcd_value(2301, 2),  # 230.1 V
            CURRENT_A: bcd_value(5250, 3),  # 5.250 A
            POWER: bcd_value(12075, 3, negative=True),  # -1.2075 kW: exporting
            PF: bcd_value(985, 2),  # 0.985
        },
    )


def specs(
    tmp_path: Path, port: Path, addresses: dict[str, str], parity: str = "E", **driver: Any
) -> list[DeviceSpec]:
    """Devices loaded through the real config loader, as the runtime gets them."""
    devices = [
        {
            "id": device_id,
            "kind": "meter",
            "location": {"building": "1", "unit": device_id},
            "driver": {
                "type": "dlt645",
                "bus": {"port": str(port), "baud": 2400, "parity": parity},
                "address": address,
                "poll_interval_s": 0.3,
                "timeout_s": 0.25,
                "offline_after": 2,
                "readings": READINGS,
                **driver,
            },
        }
        for device_id, address in addresses.items()
    ]
    path = config_with_devices(tmp_path, devices)
    return list(load_config(path, drivers={"dlt645": DRIVER}).devices)


def telemetry(ctx: RecordingContext, device_id: str) -> list[Telemetry]:
    return [m for m in ctx.messages if isinstance(m, Telemetry) and m.device.id == device_id]


def run_until(
    driver_specs: list[DeviceSpec],
    ctx: RecordingContext,
    done: Callable[[], bool],
    timeout: float = 10.0,
    during: Callable[[], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Run the driver until `done()` is true; fail the test after `timeout` seconds."""

    async def main() -> None:
        driver = DRIVER.factory(driver_specs, ctx)
        async with running(driver) as task:
            if during is not None:
                await during()
            async with asyncio.timeout(timeout):
                while not done():
                    assert not task.done(), task
                    await asyncio.sleep(0.02)
        ctx.health = driver.health()  # type: ignore[attr-defined]

    asyncio.run(main())


def test_meters_on_one_bus_publish_canonical_units_and_a_silent_one_goes_offline(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    devices = specs(
        tmp_path, ptys.a, {"flat-101": FLAT_101, "flat-102": FLAT_102, "flat-103": SILENT}
    )
    with Bus(ptys.b, [meter(FLAT_101, 12345678), meter(FLAT_102, 500)]) as bus:
        run_until(
            devices,
            ctx,
            lambda: (
                len(telemetry(ctx, "flat-101")) >= 3
                and len(telemetry(ctx, "flat-102")) >= 3
                and ctx.availability.get("flat-103", (True, ""))[0] is False
            ),
        )
    first = telemetry(ctx, "flat-101")[0].body()["values"]
    assert first == {
        "energy_total": {"value": 123456.78, "unit": "kWh", "type": "counter"},
        "energy_t1": {"value": 61728.39, "unit": "kWh", "type": "counter"},
        "voltage_a": {"value": 230.1, "unit": "V", "type": "gauge"},
        "current_a": {"value": 5.25, "unit": "A", "type": "gauge"},
        "power_total": {"value": -1207.5, "unit": "W", "type": "gauge"},
        "power_factor_total": {"value": 0.985, "unit": "", "type": "gauge"},
    }
    assert telemetry(ctx, "flat-102")[0].body()["values"]["energy_total"]["value"] == 5.0
    assert ctx.availability["flat-101"] == (True, "")
    assert ctx.availability["flat-102"] == (True, "")
    available, reason = ctx.availability["flat-103"]
    assert not available and "no reply from meter 000012340000" in reason

    faults = events(ctx, of_type=EventType.DEVICE_FAULT)
    assert [e.device.id for e in faults] == ["flat-103"]
    assert "matches the meter's label" in faults[0].data["check"]
    assert faults[0].data["failures"] == 2
    # The silent meter was asked for its first value only, then given up on for that poll.
    assert all(
        r.data[:4] == ENERGY.to_bytes(4, "little") for r in bus.requests if r.address == SILENT
    )
    health = ctx.health  # type: ignore[attr-defined]
    assert health.devices_total == 3 and health.devices_online == 2
    assert health.extra["timeouts"] >= 2


def test_fault_is_logged_once_with_what_to_check(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = recording_ctx
    devices = specs(tmp_path, ptys.a, {"flat-103": SILENT}, poll_interval_s=0.1, backoff_max_s=0.2)
    caplog.set_level(logging.DEBUG, logger="test.driver")
    with Bus(ptys.b, [meter(FLAT_101, 1)]) as bus:
        run_until(
            devices, ctx, lambda: bus.meters[FLAT_101].requests == 0 and len(bus.requests) >= 5
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "offline after 2 failed polls" in warnings[0] and "A/B wires" in warnings[0]
    assert len(events(ctx, of_type=EventType.DEVICE_FAULT)) == 1


def test_garbage_and_echo_on_the_line_do_not_corrupt_readings(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    # Noise with false frame starts, a wrong-checksum frame, and the request echoed back.
    noise = bytes.fromhex("00 ff 68 68 16 fe fe") + bytes.fromhex(
        "68 12 10 78 56 34 12 68 91 00 00 16"
    )
    devices = specs(tmp_path, ptys.a, {"flat-101": FLAT_101})
    with Bus(ptys.b, [meter(FLAT_101, 12345678)], noise=noise, echo=True):
        run_until(devices, ctx, lambda: len(telemetry(ctx, "flat-101")) >= 2)
    for message in telemetry(ctx, "flat-101"):
        values = message.body()["values"]
        assert values["energy_total"]["value"] == 123456.78
        assert values["voltage_a"]["value"] == 230.1
    assert ctx.availability["flat-101"] == (True, "")
    assert ctx.health.extra["noise_bytes"] > 0  # type: ignore[attr-defined]


def test_counter_going_backwards_raises_an_anomaly_and_is_not_published(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    devices = specs(tmp_path, ptys.a, {"flat-101": FLAT_101})
    with Bus(ptys.b, [meter(FLAT_101, 100000)]) as bus:

        def energies() -> list[float | None]:
            return [
                t.body()["values"].get("energy_total", {}).get("value")
                for t in telemetry(ctx, "flat-101")
            ]

        async def change_counter() -> None:
            while len(energies()) < 2:
                await asyncio.sleep(0.02)
            bus.set_value(FLAT_101, ENERGY, bcd_value(99000, 4))  # 990.00 kWh < 1000.00
            n = len(energies())
            while len(energies()) < n + 3:
                await asyncio.sleep(0.02)
            bus.set_value(FLAT_101, ENERGY, bcd_value(100100, 4))

        run_until(devices, ctx, lambda: 1001.0 in energies(), during=change_counter)
    seen = energies()
    assert 990.0 not in seen
    assert None in seen  # the other readings were still published meanwhile
    anomalies = events(ctx, of_type=EventType.METER_COUNTER_ANOMALY)
    assert len(anomalies) == 1
    assert anomalies[0].data == {
        "reading": "energy_total",
        "previous": 1000.0,
        "current": 990.0,
        "unit": "kWh",
    }


def test_late_reply_is_not_taken_for_the_next_reading(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    sim = meter(FLAT_101, 12345678)
    sim.slow[VOLTAGE_A] = 0.35  # answers after the driver stopped waiting (0.25 s)
    devices = specs(
        tmp_path, ptys.a, {"flat-101": FLAT_101}, readings=["energy_total", "voltage_a"]
    )
    with Bus(ptys.b, [sim]):
        run_until(devices, ctx, lambda: len(telemetry(ctx, "flat-101")) >= 3)
    # Each poll's energy request is answered after the previous poll's late voltage
    # reply has arrived: taking that for the energy reply would lose the counter.
    for message in telemetry(ctx, "flat-101"):
        assert message.body()["values"] == {
            "energy_total": {"value": 123456.78, "unit": "kWh", "type": "counter"}
        }
    assert ctx.health.errors >= 3  # type: ignore[attr-defined]
    assert "bad value" not in ctx.health.last_error  # type: ignore[attr-defined]


def test_refused_reading_is_skipped_and_others_published(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = recording_ctx
    caplog.set_level(logging.WARNING, logger="test.driver")
    devices = specs(tmp_path, ptys.a, {"flat-101": FLAT_101}, readings=["voltage_a", "voltage_b"])
    with Bus(ptys.b, [meter(FLAT_101, 1)]):
        run_until(devices, ctx, lambda: len(telemetry(ctx, "flat-101")) >= 3)
    for message in telemetry(ctx, "flat-101"):
        assert list(message.body()["values"]) == ["voltage_a"]
    refusals = [r.getMessage() for r in caplog.records if "voltage_b" in r.getMessage()]
    assert len(refusals) == 1 and "no requested data" in refusals[0]
    assert ctx.availability["flat-101"] == (True, "")


@pytest.mark.parametrize("damage", ["checksum", "garbage"])
def test_one_garbled_reply_costs_that_value_only_and_the_poll_goes_on(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext, damage: str
) -> None:
    ctx = recording_ctx
    sim = meter(FLAT_101, 12345678)
    sim.garble[TARIFF_1] = damage  # the second of six values, every poll
    devices = specs(tmp_path, ptys.a, {"flat-101": FLAT_101})
    with Bus(ptys.b, [sim]):
        run_until(devices, ctx, lambda: len(telemetry(ctx, "flat-101")) >= 2)
    for message in telemetry(ctx, "flat-101"):
        assert list(message.body()["values"]) == [r for r in READINGS if r != "energy_t1"]
    assert ctx.availability["flat-101"] == (True, "")
    health = ctx.health  # type: ignore[attr-defined]
    assert health.extra["garbled"] >= 2
    assert health.extra["timeouts"] == 0
    assert "garbled reply from meter 000012345678 to energy_t1" in health.last_error


def test_a_meter_whose_replies_all_arrive_garbled_is_offline_for_the_line_not_silence(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    sim = meter(FLAT_101, 12345678)
    sim.garble = {di: "checksum" for di in sim.values}
    devices = specs(tmp_path, ptys.a, {"flat-101": FLAT_101})
    with Bus(ptys.b, [sim]) as bus:
        run_until(devices, ctx, lambda: "flat-101" in ctx.availability)
    available, reason = ctx.availability["flat-101"]
    assert not available
    assert reason.startswith("garbled replies: check termination, shielding, parity")
    assert "no reply within" not in reason
    faults = events(ctx, of_type=EventType.DEVICE_FAULT)
    assert len(faults) == 1 and "termination" in faults[0].data["check"]
    # Every value was asked for in each poll: a garbled reply is no reason to give up.
    assert len(bus.requests) >= 2 * len(READINGS)


def test_meter_that_comes_back_is_online_again(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    devices = specs(tmp_path, ptys.a, {"flat-101": FLAT_101}, backoff_max_s=0.3)
    sim = meter(FLAT_101, 1)
    with Bus(ptys.b, [sim]) as bus:

        async def unplug_and_replug() -> None:
            while not telemetry(ctx, "flat-101"):
                await asyncio.sleep(0.02)
            with bus.lock:
                del bus.meters[FLAT_101]
            while ctx.availability["flat-101"][0]:
                await asyncio.sleep(0.02)
            ctx.messages.clear()
            with bus.lock:
                bus.meters[FLAT_101] = sim

        run_until(devices, ctx, lambda: bool(telemetry(ctx, "flat-101")), during=unplug_and_replug)
    assert ctx.availability["flat-101"] == (True, "")


def test_missing_port_marks_meters_offline_with_the_reason(
    tmp_path: Path, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    devices = specs(tmp_path, tmp_path / "ttyUSB9", {"flat-101": FLAT_101})
    run_until(devices, ctx, lambda: "flat-101" in ctx.availability)
    available, reason = ctx.availability["flat-101"]
    assert not available and f"cannot open {tmp_path / 'ttyUSB9'}" in reason


def test_meters_on_one_port_with_different_bus_settings_are_refused(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    devices = specs(tmp_path, ptys.a, {"flat-101": FLAT_101})
    devices += [
        DeviceSpec(
            d.ref.__class__(d.id + "-b", d.ref.kind, d.ref.location),
            d.settings.model_copy(update={"bus": d.settings.bus.model_copy(update={"baud": 9600})}),  # type: ignore[attr-defined]
            "dlt645",
        )
        for d in specs(tmp_path, ptys.a, {"flat-102": FLAT_102})
    ]
    with Bus(ptys.b, [meter(FLAT_101, 1), meter(FLAT_102, 1)]):
        run_until(devices, ctx, lambda: bool(telemetry(ctx, "flat-101")))
    available, reason = ctx.availability["flat-102-b"]
    assert not available and "bus.baud is 9600, but flat-101 on the same bus" in reason
    assert not telemetry(ctx, "flat-102-b")


def test_read_once_prints_every_point_or_the_fault(tmp_path: Path, ptys: PtyPair) -> None:
    devices = specs(
        tmp_path,
        ptys.a,
        {"flat-101": FLAT_101, "flat-103": SILENT},
        readings=["energy_total", "power_total", "voltage_b"],
        # A pty has no parity: Linux drops PARENB on the first open and refuses it with
        # EINVAL when it is the only change on a reopen, so this test, opening twice, uses N.
        parity="N",
    )
    with Bus(ptys.b, [meter(FLAT_101, 12345678)]):
        good = asyncio.run(read_once(devices[0]))
        silent = asyncio.run(read_once(devices[1]))
    assert good.ok
    points = {p.name: p for p in good.points}
    assert points["energy_total"].value == 123456.78 and points["energy_total"].unit == "kWh"
    assert points["energy_total"].raw == "78 56 34 12"
    assert points["power_total"].value == -1207.5 and points["power_total"].unit == str(Unit.W)
    assert points["power_total"].note == "-1.2075 kW on the wire"
    assert points["voltage_b"].value is None and "no requested data" in points["voltage_b"].note
    assert not silent.ok
    assert "no reply from meter 000012340000" in silent.fault
    assert "A/B wires" in silent.hint


def test_counter_type_is_published_for_energy_only(
    tmp_path: Path, ptys: PtyPair, recording_ctx: RecordingContext
) -> None:
    ctx = recording_ctx
    devices = specs(tmp_path, ptys.a, {"flat-101": FLAT_101})
    with Bus(ptys.b, [meter(FLAT_101, 1)]):
        run_until(devices, ctx, lambda: bool(telemetry(ctx, "flat-101")))
    kinds = {r.name: r.type for r in telemetry(ctx, "flat-101")[0].readings}
    assert {n for n, k in kinds.items() if k is ValueType.COUNTER} == {"energy_total", "energy_t1"}
