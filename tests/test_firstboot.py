"""First boot of a flashed card, on a root prefix: the folder on the boot partition is
installed into /etc with owner-only modes, or refused with a report and nothing moved."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.harness import GATEWAY

ROOT = Path(__file__).resolve().parent.parent
UID, GID = 4321, 4322  # the service user of the image, not of this machine

GOOD = """\
version: 1
site: {id: sunrise-gardens}
gateway: {id: gw-07}
broker:
  url: mqtts://broker.example.net:8883
  username: gw-07
  password: {file: secrets/broker-password}
  tls: {ca_file: secrets/ca.crt}
outbox: {path: /var/lib/community-gateway/outbox.db}
devices:
  - id: smoke-1
    kind: smoke
    location: {building: "1"}
    driver: {type: simulated}
"""


def image(tmp_path: Path, config: str, boot: str = "boot/firmware") -> tuple[Path, Path]:
    """A root tree as install.sh leaves it, with a config folder on the boot partition."""
    root = tmp_path / "root"
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for unit in ("community-gateway.service", "community-gateway-firstboot.service"):
        (units / unit).write_bytes((ROOT / "systemd" / unit).read_bytes())
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        f"community-gateway:x:{UID}:{GID}::/var/lib/community-gateway:/usr/sbin/nologin\n"
    )
    folder = root / boot / "community-gateway"
    (folder / "secrets").mkdir(parents=True)
    (folder / "gateway.yaml").write_text(config)
    (folder / "secrets" / "broker-password").write_text("s3cret\n")
    (folder / "secrets" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    return root, folder


def firstboot(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAY, "firstboot", "--root", str(root)], capture_output=True, text=True, timeout=60
    )


def mode_owner(path: Path) -> tuple[int, int, int]:
    st = path.lstat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


@pytest.mark.parametrize("boot", ["boot/firmware", "boot"])
def test_a_good_folder_is_installed_and_its_secrets_leave_the_boot_partition(
    tmp_path: Path, boot: str
) -> None:
    root, folder = image(tmp_path, GOOD, boot)
    result = firstboot(root)
    assert result.returncode == 0, result.stdout + result.stderr

    etc = root / "etc/community-gateway"
    assert (etc / "gateway.yaml").read_text() == GOOD
    assert (etc / "secrets/broker-password").read_text() == "s3cret\n"
    assert mode_owner(etc) == (0o700, UID, GID)
    assert mode_owner(etc / "secrets") == (0o700, UID, GID)
    for name in ("gateway.yaml", "secrets/broker-password", "secrets/ca.crt"):
        assert mode_owner(etc / name) == (0o600, UID, GID), name
    # The installed copy is valid where it now lives: relative secrets moved along.
    validated = subprocess.run(
        [GATEWAY, "validate", "-c", str(etc / "gateway.yaml")], capture_output=True, text=True
    )
    assert validated.returncode == 0, validated.stderr

    assert not (folder / "secrets").exists(), "secrets are deleted from the FAT partition"
    assert not (folder / "gateway.yaml").exists(), "the next boot does not run it again"
    assert (folder / "gateway.yaml.installed").read_text() == GOOD
    report = (folder / "FIRSTBOOT-REPORT.txt").read_text()
    assert report.splitlines()[0].endswith(": INSTALLED")

    link = root / "etc/systemd/system/multi-user.target.wants/community-gateway.service"
    assert os.readlink(link) == "/etc/systemd/system/community-gateway.service"

    again = firstboot(root)
    assert again.returncode == 0 and "nothing to do" in again.stdout


@pytest.mark.parametrize(
    ("change", "expected_extra"),
    [
        # The gateway's own validation: exactly `gateway validate`'s lines.
        (lambda c: c.replace("mqtts://broker.example.net:8883", "broker.example.net"), []),
        (lambda c: c.replace("{type: simulated}", "{type: simulated, bogus: 1}"), []),
        (lambda c: c.replace("secrets/ca.crt", "secrets/missing.crt"), []),
        # A rule of the installed service, which `validate` cannot know.
        (
            lambda c: c.replace("/var/lib/community-gateway/outbox.db", "/home/pi/outbox.db"),
            [":9 outbox.path: /home/pi/outbox.db is outside /var/lib/community-gateway"],
        ),
    ],
    ids=["url", "unknown key", "missing secret", "outbox outside the state dir"],
)
def test_a_wrong_folder_is_refused_with_the_exact_lines_and_nothing_moves(
    tmp_path: Path, change: object, expected_extra: list[str]
) -> None:
    config = change(GOOD)  # type: ignore[operator]
    root, folder = image(tmp_path, config)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))

    result = firstboot(root)
    assert result.returncode == 1

    report = (folder / "FIRSTBOOT-REPORT.txt").read_text()
    lines = report.splitlines()
    assert lines[0].endswith(": REFUSED")
    validated = subprocess.run(
        [GATEWAY, "validate", "-c", str(folder / "gateway.yaml")], capture_output=True, text=True
    )
    expected = [line for line in validated.stderr.splitlines() if line.startswith(str(folder))]
    expected = [line for line in expected if "nothing was started" not in line]
    for line in expected:
        assert line in lines, f"{line!r} missing from the report:\n{report}"
    for fragment in expected_extra:
        assert any(fragment in line for line in lines), report
    assert expected or expected_extra, "the test must name at least one problem"
    assert b"\r\n" in (folder / "FIRSTBOOT-REPORT.txt").read_bytes(), "for Notepad users too"

    after = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert after == sorted([*before, folder.relative_to(root) / "FIRSTBOOT-REPORT.txt"])
    assert not (root / "etc/community-gateway").exists()
    assert (folder / "secrets/broker-password").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants").exists()
