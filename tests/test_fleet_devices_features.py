"""Devices-only remote changes with the web console and wellness checks on, end to end.

Those features read the device list through the host's device-list hook, so a change of
devices is applied in process for them too: the console (a real HTTP request, signed
in) lists a meter added remotely and forgets it once removed, the process id stays the
same and the other drivers are not restarted; a wellness check whose device is removed
(with its check) is dropped cleanly: its raised inactivity alarm is cleared, never left
active, and the gateway raises nothing more for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fleet_harness import Platform, running_site, signed_desired
from tests.harness import GatewayProc, Received, Subscriber, simulated_meter
from tests.peers import Mosquitto, free_port, wait_for
from tests.test_fleet_devices import _z2m_smoke
from tests.test_fleet_e2e import _alarms, _wait_result
from tests.web_harness import HttpClient, add_staff

pytestmark = pytest.mark.broker

TRIAL_S = 10

Site = tuple[Platform, GatewayProc, Subscriber]


def _sos(device_id: str, unit: str) -> dict[str, Any]:
    return {
        "id": device_id,
        "kind": "elderly_alarm",
        "location": {"building": "1", "floor": 2, "unit": unit},
        "driver": {"type": "simulated"},
    }


@pytest.fixture
def web_site(tmp_path: Path, broker: Mosquitto) -> Iterator[tuple[Site, int]]:
    port = free_port()
    devices = [simulated_meter("m1", 5), _z2m_smoke(broker)]
    web = {"web": {"enabled": True, "port": port}}
    with running_site(
        tmp_path, broker.url, broker.port, devices, TRIAL_S, sections=web, before_start=add_staff
    ) as site:
        yield site, port


def _console_devices(client: HttpClient) -> dict[str, dict[str, Any]]:
    resp = client.get("/console/state")
    assert resp.status == 200, resp.body
    return {d["id"]: d for d in resp.json()["devices"]}


def _pid(gw: GatewayProc) -> int:
    assert gw.proc is not None
    return gw.proc.pid


def test_the_console_shows_a_meter_added_in_process_and_forgets_it_once_removed(
    web_site: tuple[Site, int],
) -> None:
    (platform, gw, sub), port = web_site
    client = HttpClient(port)
    assert wait_for(lambda: _signed_in(client), 15), gw.log()[-3000:]
    assert set(_console_devices(client)) == {"m1", "z-smoke"}
    pid = _pid(gw)
    wanted = platform.current()
    wanted["devices"].append(simulated_meter("m2", 5))
    platform.publish(signed_desired(platform.key, platform.identity, 1, wanted))
    _wait_result(sub, "applied", 1)
    assert gw.running() and _pid(gw) == pid and "starting again" not in gw.log()
    assert "in process" in gw.log(), gw.log()[-3000:]
    # The console lists the new meter, with its readings once they come.
    assert wait_for(lambda: _console_devices(client).get("m2", {}).get("last_value"), 15)
    assert _console_devices(client)["m2"]["kind"] == "meter"
    # Only the simulated driver (the new meter's) restarted; zigbee2mqtt ran on.
    applied = [line for line in gw.log().splitlines() if "devices applied" in line]
    assert len(applied) == 1 and "drivers ['simulated'] restarted" in applied[0], applied
    assert "zigbee2mqtt" not in applied[0] and "restarting driver" not in gw.log()
    # Removed again: gone from the console, the process the same.
    wanted["devices"] = [d for d in wanted["devices"] if d["id"] != "m2"]
    platform.publish(signed_desired(platform.key, platform.identity, 2, wanted))
    _wait_result(sub, "applied", 2)
    assert set(_console_devices(client)) == {"m1", "z-smoke"}
    assert gw.running() and _pid(gw) == pid


def _signed_in(client: HttpClient) -> bool:
    try:
        return client.sign_in().status == 303
    except OSError:
        return False


@pytest.fixture
def wellness_site(tmp_path: Path, broker: Mosquitto) -> Iterator[Site]:
    devices = [simulated_meter("m1", 5), _sos("sos-201", "201"), _sos("sos-202", "202")]
    checks = {"wellness": {"checks": [{"device": "sos-201", "window_s": 1.5}]}}
    with running_site(tmp_path, broker.url, broker.port, devices, TRIAL_S, sections=checks) as site:
        yield site


def _events(messages: list[Received], device: str, kind: str) -> list[dict[str, Any]]:
    return [
        doc
        for m in messages
        if m.topic.endswith(f"/devices/{device}/events")
        and (doc := m.json())["event"]["type"] == kind
    ]


def test_a_wellness_check_on_a_removed_device_is_dropped_and_its_alarm_cleared(
    wellness_site: Site,
) -> None:
    platform, gw, sub = wellness_site
    raised = lambda ms: _events(ms, "sos-201", "elderly.inactivity")  # noqa: E731
    assert sub.wait(raised, timeout=15), gw.log()[-3000:]
    assert wait_for(lambda: "active" in _alarms(sub.snapshot()).values(), 10)
    pid = _pid(gw)
    # The flat is empty now: its alarm device and its check go in one signed change.
    wanted = platform.current()
    wanted["devices"] = [d for d in wanted["devices"] if d["id"] != "sos-201"]
    wanted["wellness"] = {"checks": []}
    platform.publish(signed_desired(platform.key, platform.identity, 1, wanted))
    _wait_result(sub, "applied", 1)
    assert gw.running() and _pid(gw) == pid and "starting again" not in gw.log()
    cleared = _events(sub.snapshot(), "sos-201", "elderly.cleared")
    assert len(cleared) == 1, gw.log()[-3000:]
    assert cleared[0]["event"]["data"]["clears"] == "elderly.inactivity"
    assert "removed" in cleared[0]["event"]["data"]["reason"]
    # No alarm is left active for a device that is gone.
    assert wait_for(lambda: "active" not in _alarms(sub.snapshot()).values(), 10), _alarms(
        sub.snapshot()
    )
    # Three health messages later (two windows): nothing raised again on the removed
    # device, and the gateway runs on.
    at = len(sub.snapshot())
    health = lambda ms: [m for m in ms[at:] if m.topic.endswith("/health")]  # noqa: E731
    assert sub.wait(lambda ms: len(health(ms)) >= 3, timeout=15)
    assert not raised(sub.snapshot()[at:]) and gw.running()
    assert "Traceback" not in gw.log(), gw.log()[-3000:]
