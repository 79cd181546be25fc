"""Devices-only remote changes, end to end: applied in process, only the drivers concerned restart.

Real `gateway run` with simulated devices, a real Mosquitto as the platform's broker
and as zigbee2mqtt's local broker.  A device added on another driver is applied with
the same PID, the simulated meter's driver never restarts and its seqs have no gap,
and the new device publishes; removed again, its driver stops.  A device whose driver
fails to start is rolled back in process, the old devices still running.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.publish as publish
import pytest

from tests.fleet_harness import Platform, config_status, running_site, signed_desired
from tests.harness import GatewayProc, Received, Subscriber, simulated_meter
from tests.peers import Mosquitto, wait_for
from tests.test_fleet_e2e import _missing, _no_gap, _telemetry_seqs, _wait_result

pytestmark = pytest.mark.broker

TRIAL_S = 5

# A driver that cannot start (its bus is missing), installed beside the gateway for
# these tests only, through the same entry point group as every driver.
FAILING = """
from pathlib import Path
from pydantic import BaseModel, ConfigDict
from gateway.sdk.driver import Driver, DriverHealth, DriverInfo
from gateway.sdk.model import Kind


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FailingDriver(Driver):
    async def run(self) -> None:
        raise RuntimeError("the test driver cannot open its bus")

    def health(self) -> DriverHealth:
        return DriverHealth()


DRIVER = DriverInfo(
    name="failing", summary="fails to start", settings_model=Settings,
    factory=FailingDriver, kinds=frozenset(Kind), folder=Path(__file__).parent,
)
"""


def _plugin(folder: Path) -> Path:
    (folder / "failing_driver").mkdir(parents=True)
    (folder / "failing_driver" / "__init__.py").write_text(textwrap.dedent(FAILING))
    info = folder / "failing_driver-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: failing-driver\nVersion: 0\n")
    (info / "entry_points.txt").write_text(
        "[community_gateway.drivers]\nfailing = failing_driver:DRIVER\n"
    )
    return folder


@pytest.fixture
def site(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[Platform, GatewayProc, Subscriber]]:
    plugins = _plugin(tmp_path / "plugins")
    path = os.pathsep.join(p for p in (str(plugins), os.environ.get("PYTHONPATH", "")) if p)
    devices = [simulated_meter("m1", 20)]
    env = {"PYTHONPATH": path}
    with running_site(tmp_path, broker.url, broker.port, devices, TRIAL_S, env) as site:
        yield site


def _z2m_smoke(broker: Mosquitto) -> dict[str, Any]:
    return {
        "id": "z-smoke",
        "kind": "smoke",
        "location": {"building": "1", "floor": 2, "unit": "kitchen"},
        "driver": {
            "type": "zigbee2mqtt",
            "friendly_name": "b1/kitchen_smoke",
            "broker_url": f"mqtt://127.0.0.1:{broker.port}",
        },
    }


def _health(messages: list[Received]) -> list[dict[str, Any]]:
    return [m.json() for m in messages if m.topic.endswith("/health")]


def _meter_steady(sub: Subscriber, above: int) -> bool:
    seqs = _telemetry_seqs(sub)
    return _no_gap(seqs) and max(seqs) > above


def _running_pid(gw: GatewayProc, sub: Subscriber) -> int:
    """The gateway's PID once the meter's seqs run without a gap."""
    assert gw.proc is not None
    assert sub.wait(lambda ms: _meter_steady(sub, 20)), _missing(sub)
    return gw.proc.pid


def test_a_device_added_then_removed_is_applied_in_process(
    site: tuple[Platform, GatewayProc, Subscriber], broker: Mosquitto
) -> None:
    platform, gw, sub = site
    pid = _running_pid(gw, sub)
    wanted = platform.current()
    wanted["devices"].append(_z2m_smoke(broker))
    platform.publish(signed_desired(platform.key, platform.identity, 1, wanted))
    report = _wait_result(sub, "applied", 1)
    assert report["version"] == 1
    assert config_status(platform.config)["running"]["version"] == 1
    assert "in process" in gw.log() and "starting again" not in gw.log(), gw.log()[-3000:]
    assert gw.running() and gw.proc is not None and gw.proc.pid == pid
    # The new device publishes: zigbee2mqtt reports smoke, the platform gets the alarm.
    seen = len(sub.snapshot())

    def alarm(ms: list[Received]) -> bool:
        publish.single(
            "zigbee2mqtt/b1/kitchen_smoke", json.dumps({"smoke": True}), hostname="127.0.0.1",
            port=broker.port,
        )  # fmt: skip
        return any(
            "/devices/z-smoke/events" in m.topic and m.json()["event"]["type"] == "smoke.alarm"
            for m in ms[seen:]
        )

    assert sub.wait(alarm, timeout=15), gw.log()[-3000:]
    # Removed again: its driver stops, the meter never paused.
    wanted["devices"] = [d for d in wanted["devices"] if d["id"] != "z-smoke"]
    platform.publish(signed_desired(platform.key, platform.identity, 2, wanted))
    _wait_result(sub, "applied", 2)
    at = len(sub.snapshot())
    assert sub.wait(
        lambda ms: any("zigbee2mqtt" not in h["drivers"] for h in _health(ms[at:])), timeout=10
    )
    assert gw.running() and gw.proc is not None and gw.proc.pid == pid
    # Only the zigbee2mqtt driver was started and stopped, both times.
    applied = [line for line in gw.log().splitlines() if "devices applied" in line]
    assert len(applied) == 2 and all("drivers ['zigbee2mqtt'] restarted" in a for a in applied)
    assert "restarting driver simulated" not in gw.log()
    assert all("simulated" in h["drivers"] for h in _health(sub.snapshot()))
    top = max(_telemetry_seqs(sub))
    assert sub.wait(lambda ms: _meter_steady(sub, top + 20)), _missing(sub)


def test_a_device_whose_driver_fails_is_rolled_back_in_process(
    site: tuple[Platform, GatewayProc, Subscriber],
) -> None:
    platform, gw, sub = site
    pid = _running_pid(gw, sub)
    before = platform.current()
    wanted = platform.current()
    wanted["devices"].append(
        {
            "id": "bus-1",
            "kind": "meter",
            "location": {"building": "1", "floor": 0, "unit": "cellar"},
            "driver": {"type": "failing"},
        }
    )
    platform.publish(signed_desired(platform.key, platform.identity, 1, wanted))
    report = _wait_result(sub, "rolled_back", 1, timeout=TRIAL_S + 15)
    assert "cannot open its bus" in report["reason"], report
    assert report["version"] == 0
    assert platform.current() == before
    assert config_status(platform.config)["trial"] is None
    assert (
        gw.running()
        and gw.proc is not None
        and gw.proc.pid == pid
        and "starting again" not in gw.log()
    )
    at = len(sub.snapshot())
    assert wait_for(
        lambda: any("failing" not in h["drivers"] for h in _health(sub.snapshot()[at:])), 10
    )
    top = max(_telemetry_seqs(sub))
    assert sub.wait(lambda ms: _meter_steady(sub, top + 20)), _missing(sub)


def test_a_kill_during_an_in_process_trial_rolls_back_at_the_next_start(
    site: tuple[Platform, GatewayProc, Subscriber], broker: Mosquitto
) -> None:
    platform, gw, sub = site
    _running_pid(gw, sub)
    before = platform.config.read_bytes()
    wanted = platform.current()
    wanted["devices"].append(_z2m_smoke(broker))
    trial = platform.config.with_name(platform.config.name + ".trial.json")

    def started() -> bool:
        try:
            return bool(json.loads(trial.read_bytes())["attempts"] == 1)
        except (OSError, ValueError, KeyError):
            return False

    platform.publish(signed_desired(platform.key, platform.identity, 1, wanted))
    # In process the trial file says attempts 1 at once: a kill before the commit (2 s
    # of drivers running at least) is a start that tried it and did not confirm it.
    assert wait_for(started, 15, interval=0.01), gw.log()[-3000:]
    gw.kill()
    assert trial.exists() and platform.config.read_bytes() != before
    again = GatewayProc(platform.config, extra_env=gw.extra_env).start()
    try:
        report = _wait_result(sub, "rolled_back", 1)
        assert "stopped before the new configuration was confirmed" in report["reason"]
        assert platform.config.read_bytes() == before and not trial.exists()
        top = max(_telemetry_seqs(sub))
        assert sub.wait(lambda ms: _meter_steady(sub, top + 20)), _missing(sub)
    finally:
        again.terminate()
