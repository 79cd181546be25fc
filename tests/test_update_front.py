"""The update feature's front: what decides that a start loads the update machinery.

A start without work left must not load it (tests/test_cli_startup.py checks the
modules of a running gateway); a start with work left must, or a release on trial is
never judged and a transfer on disk never resumed (tests/test_update_e2e.py runs
those through the launcher).
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.config import load_config
from gateway.fleet import launch
from gateway.fleet.update_front import UpdateFront, work_left
from gateway.host import Host
from tests.harness import simulated_meter, write_config

TRIAL = {"version": "9.9.9", "previous": "/v/1.0.0", "starts": 1, "deadline_s": 60}


@pytest.mark.parametrize(
    ("state", "left"),
    [
        (None, False),
        ({}, False),
        ({"trial": None, "last": {"result": "committed", "version": "1", "audited": True}}, False),
        ({"trial": TRIAL}, True),
        ({"last": {"result": "rolled_back", "version": "9.9.9", "reason": "crash loop"}}, True),
    ],
)
def test_a_start_loads_the_update_service_only_for_work_left(
    tmp_path: Path, state: dict[str, Any] | None, left: bool
) -> None:
    if state is not None:
        launch.write_state(tmp_path, state)
    assert work_left(tmp_path) is left


def test_a_transfer_left_on_disk_is_work_an_empty_folder_is_not(tmp_path: Path) -> None:
    folder = tmp_path.joinpath(*launch.TRANSFER_DIR)
    folder.mkdir(parents=True)
    assert not work_left(tmp_path)
    (folder / "transfer.json").write_text("{}")
    assert work_left(tmp_path)


def test_the_health_part_is_the_same_before_and_after_the_service_loads(tmp_path: Path) -> None:
    config = write_config(tmp_path / "gw.yaml", "mqtt://127.0.0.1:1", [simulated_meter("m1", 1.0)])
    host = cast(Host, SimpleNamespace(config=load_config(config).config))
    last = {"result": "committed", "version": "1.0.0", "audited": True}
    launch.write_state(tmp_path / "state", {"trial": None, "last": last})
    for dirs in ((tmp_path / "state", tmp_path / "factory"), None):
        front = UpdateFront(host, dirs)
        front.load_at_start()
        assert not front.loaded
        before = front.health()
        front.service()
        assert front.loaded and front.health() == before
    assert before == {"version": front.version, "trial": None, "last": None}
    assert "gateway.fleet.update_service" in sys.modules
