"""Which remote changes are applied in process, and which drivers they restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.config import LoadedConfig, load_config
from gateway.fleet.devicechange import device_change
from tests.harness import simulated_meter, write_config

BROKER = "mqtt://127.0.0.1:1883"


def _z2m(device_id: str) -> dict[str, Any]:
    return {
        "id": device_id,
        "kind": "smoke",
        "location": {"building": "1", "floor": 1, "unit": device_id},
        "driver": {"type": "zigbee2mqtt", "friendly_name": device_id},
    }


def _loaded(path: Path, devices: list[dict[str, Any]], **sections: Any) -> LoadedConfig:
    write_config(path, BROKER, devices, **sections)
    return load_config(path)


def test_only_the_drivers_whose_devices_differ_restart(tmp_path: Path) -> None:
    running = _loaded(tmp_path / "a.yaml", [simulated_meter("m1", 1), _z2m("z1")])
    doc = (tmp_path / "a.yaml").read_text()
    candidate = tmp_path / "b.yaml"
    candidate.write_text(doc.replace("friendly_name: z1", "friendly_name: z1-renamed"))
    change = device_change(running, candidate)
    assert change is not None and change.drivers == {"zigbee2mqtt"}
    assert change.previous is running
    # The same meaning, written differently: in process, and nothing restarts.
    candidate.write_text(yaml.safe_dump(yaml.safe_load(doc), sort_keys=True, indent=4))
    same = device_change(running, candidate)
    assert same is not None and same.drivers == set()


def test_anything_but_devices_keeps_the_restart(tmp_path: Path) -> None:
    running = _loaded(tmp_path / "a.yaml", [simulated_meter("m1", 1)])
    doc = (tmp_path / "a.yaml").read_text()
    candidate = tmp_path / "b.yaml"
    candidate.write_text(doc.replace("interval_s: 1", "interval_s: 2"))
    assert device_change(running, candidate) is None
    candidate.write_text(doc.replace(BROKER, "mqtt://127.0.0.1:1884"))
    assert device_change(running, candidate) is None
    candidate.write_text("devices: [")  # does not load: the restart's start judges it
    assert device_change(running, candidate) is None


def _sos(device_id: str) -> dict[str, Any]:
    return {
        "id": device_id,
        "kind": "elderly_alarm",
        "location": {"building": "1", "floor": 2, "unit": device_id},
        "driver": {"type": "simulated"},
    }


def _variant(running: LoadedConfig, path: Path, **changes: Any) -> Path:
    """The running config file with some top-level sections replaced."""
    doc = yaml.safe_load(running.path.read_text())
    path.write_text(yaml.safe_dump({**doc, **changes}))
    return path


def test_the_web_console_and_wellness_checks_follow_devices_in_process(tmp_path: Path) -> None:
    check = {"checks": [{"device": "sos-1", "window": "12h"}]}
    web = {"enabled": True, "port": 18080}
    devices = [simulated_meter("m1", 1), _sos("sos-1"), _sos("sos-2")]
    running = _loaded(tmp_path / "a.yaml", devices, web=web, wellness=check)
    added = _variant(running, tmp_path / "b.yaml", devices=[*devices, simulated_meter("m2", 1)])
    change = device_change(running, added)
    assert change is not None and change.drivers == {"simulated"}
    # A flat's alarm device removed with its check: the wellness feature runs, in process.
    gone = _variant(running, tmp_path / "c.yaml", devices=devices[::2], wellness={"checks": []})
    change = device_change(running, gone)
    assert change is not None and change.drivers == {"simulated"}


def test_new_wellness_checks_on_a_gateway_without_any_keep_the_restart(tmp_path: Path) -> None:
    running = _loaded(tmp_path / "a.yaml", [simulated_meter("m1", 1), _sos("sos-1")])
    check = {"checks": [{"device": "sos-1", "window": "12h"}]}
    assert device_change(running, _variant(running, tmp_path / "b.yaml", wellness=check)) is None
