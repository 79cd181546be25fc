"""The central service's systemd unit verifies and scores as hardened (PID 1 is not
systemd here, so it is checked, not started)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "community-central.service"
# Measured: 1.2 (no capabilities, no devices, only inet and unix sockets).
MAX_EXPOSURE = 1.5

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _tree(root: Path) -> Path:
    """A root tree with the unit installed and a stand-in for its program."""
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system" / UNIT.name)
    program = root / "opt/community-central/venv/bin/community-central"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    return root


def test_the_unit_verifies_and_scores_as_hardened(tmp_path: Path) -> None:
    root = _tree(tmp_path / "root")
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--recursive-errors=yes", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True, text=True
    )
    found = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout)
    assert found, security.stdout + security.stderr
    assert float(found.group(1)) <= MAX_EXPOSURE, security.stdout


def test_a_broken_unit_is_caught(tmp_path: Path) -> None:
    # The check above can fail: a misspelt directive makes verify exit non-zero.
    root = _tree(tmp_path / "root")
    installed = root / "etc/systemd/system" / UNIT.name
    installed.write_text(installed.read_text().replace("Restart=always", "Restart=sometimes"))
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--recursive-errors=yes", f"--root={root}", UNIT.name],
        capture_output=True,
        text=True,
    )
    assert verify.returncode != 0
