"""`gateway scan dlt645`: the broadcast address read an installer runs at commissioning."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from drivers.dlt645.cli import scan
from drivers.dlt645.tests.responder import Bus, SimMeter
from tests.peers import PtyPair

# The installed program beside this interpreter (tests.harness has the same; importing it
# would pull paho into this folder's type check).
GATEWAY = str(Path(sys.executable).parent / "gateway")


def test_scan_prints_the_address_as_on_the_label(ptys: PtyPair) -> None:
    with Bus(ptys.b, [SimMeter("000012345678")]) as bus:
        result = CliRunner().invoke(scan, ["--port", str(ptys.a), "--baud", "2400"])
    assert result.exit_code == 0, result.output
    assert "meter address 000012345678" in result.output
    assert "on the wire: 78 56 34 12 00 00" in result.output
    assert 'address: "000012345678"' in result.output
    assert [r.address for r in bus.requests] == ["aaaaaaaaaaaa"]


def test_scan_with_two_meters_says_to_connect_one(ptys: PtyPair) -> None:
    with Bus(ptys.b, [SimMeter("000012345678"), SimMeter("000087654321")]):
        result = CliRunner().invoke(scan, ["--port", str(ptys.a), "--timeout", "0.5"])
    assert result.exit_code == 1
    # Colliding replies are bytes that form no frame: garbled, not silence.
    assert "within 0.5 s but no valid reply (bad checksum or garbage)" in result.output
    assert "only ONE meter connected" in result.output


def test_scan_of_a_missing_port() -> None:
    result = CliRunner().invoke(scan, ["--port", "/dev/nonexistent-dlt645"])
    assert result.exit_code == 1
    assert "cannot open /dev/nonexistent-dlt645" in result.output


def test_registered_gateway_command_scans_the_bus(ptys: PtyPair) -> None:
    # Through the installed `gateway` program: the entry point and the scan group wiring.
    with Bus(ptys.b, [SimMeter("210400001234")]):
        done = subprocess.run(
            [GATEWAY, "scan", "dlt645", "--port", str(ptys.a)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 0, done.stderr
    assert "meter address 210400001234" in done.stdout


def test_registered_gateway_validates_the_sample() -> None:
    sample = Path(__file__).parent.parent / "sample.yaml"
    done = subprocess.run(
        [GATEWAY, "validate", "-c", str(sample)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "OK (3 devices)" in done.stdout
