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
