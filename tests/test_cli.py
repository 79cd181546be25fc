"""The installer-facing commands, run as the installed `gateway` program."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.harness import GATEWAY, demo_config
from tests.peers import free_port, wait_for

ROOT = Path(__file__).resolve().parent.parent
DEMO = str(ROOT / "config" / "demo.yaml")


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GATEWAY, *args], capture_output=True, text=True, timeout=60)


def test_devices_lists_every_configured_device() -> None:
    out = gateway("devices", "-c", DEMO)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "KIND", "DRIVER", "BUILDING", "FLOOR", "UNIT", "NAME"]
    assert any(
        line.split()[:4] == ["smoke-b2-stair-1", "smoke", "simulated", "2"] for line in lines
    )
    assert len(lines) == 1 + 26  # the devices of config/demo.yaml


def test_read_prints_every_point_or_names_the_unknown_device() -> None:
    out = gateway("read", "meter-b1-101-elec", "-c", DEMO)
    assert out.returncode == 0, out.stderr
    points = {line.split()[0]: line.split()[1:3] for line in out.stdout.splitlines()[1:]}
    assert points["energy_import"][1] == "kWh" and float(points["energy_import"][0]) > 0
    assert points["power"][1] == "W"
    missing = gateway("read", "nope", "-c", DEMO)
    assert missing.returncode == 2 and "no device 'nope'" in missing.stderr


def test_outbox_reports_an_empty_new_outbox(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    out = gateway("outbox", "-c", str(config))
    assert out.returncode == 0, out.stderr
    assert "depth       0 (0 events, 0 telemetry)" in out.stdout
    assert "dropped     0 telemetry" in out.stdout


def test_version() -> None:
    assert gateway("--version").stdout.strip() == "gateway, version 0.1.0"


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    config = demo_config(tmp_path)
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [
                GATEWAY,
                "--log-format",
                "json",
                "run",
                "-c",
                str(config),
                "--broker-url",
                f"mqtt://127.0.0.1:{free_port()}",
            ],
            stderr=err,
            text=True,
        )
    try:
        # Stopped once it has started and met the missing broker, however long that takes.
        assert wait_for(lambda: "connection refused" in log.read_text(), timeout=30), (
            log.read_text()
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any("connection refused" in r["msg"] for r in records), "the broker fault is logged"
