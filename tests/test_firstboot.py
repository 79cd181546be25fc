"""First boot of a flashed card, on a root prefix: the folder on the boot partition is
installed into /etc with owner-only modes, or refused with a report and nothing moved."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.certs import ca_pem
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


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder the service user may traverse, as a FAT boot partition is readable by all:
    first boot checks the config as that user (pytest's own tmp_path is root's alone)."""
    work = Path(tempfile.mkdtemp(prefix="firstboot-"))
    work.chmod(0o755)
    yield work
    shutil.rmtree(work, ignore_errors=True)


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
    (folder / "secrets" / "ca.crt").write_bytes(ca_pem())  # validate parses it
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


def report_of(folder: Path) -> list[str]:
    return (folder / "FIRSTBOOT-REPORT.txt").read_text(encoding="utf-8").splitlines()


@pytest.mark.parametrize("key", ["secrets/ca.crt", "secrets/broker-password"])
def test_an_absolute_path_to_a_secret_on_the_boot_partition_is_refused(
    tmp_path: Path, key: str
) -> None:
    # The file exists now, so `gateway validate` passes; but first boot deletes secrets/
    # from the card, and the installed service would then exit 2 on every start.
    root, folder = image(tmp_path, GOOD)
    absolute = GOOD.replace(key, str(folder / key))
    (folder / "gateway.yaml").write_text(absolute)
    result = firstboot(root)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = report_of(folder)
    assert lines[0].endswith(": REFUSED")
    line = next(line for line in lines if "is on the boot partition" in line)
    name = key.split("/")[1]
    assert f"write it relative to gateway.yaml, as secrets/{name}" in line
    assert (folder / key).exists() and not (root / "etc/community-gateway").exists()


def test_a_path_that_walks_out_of_secrets_is_refused(tmp_path: Path) -> None:
    root, folder = image(tmp_path, GOOD)
    (folder / "ca.crt").write_bytes(ca_pem())
    (folder / "gateway.yaml").write_text(GOOD.replace("secrets/ca.crt", "secrets/../ca.crt"))
    assert firstboot(root).returncode == 1
    assert any("ca.crt must be in the secrets/ folder" in line for line in report_of(folder))


def test_a_link_in_secrets_is_refused_and_not_followed(tmp_path: Path) -> None:
    root, folder = image(tmp_path, GOOD)
    (folder / "secrets" / "shadow").symlink_to("/etc/shadow")
    assert firstboot(root).returncode == 1
    assert any("shadow: not a plain file" in line for line in report_of(folder))
    assert not (root / "etc/community-gateway").exists()

    (folder / "secrets" / "shadow").unlink()
    elsewhere = tmp_path / "gateway.yaml"
    (folder / "gateway.yaml").rename(elsewhere)
    (folder / "gateway.yaml").symlink_to(elsewhere)
    assert firstboot(root).returncode == 1
    assert f"{folder / 'gateway.yaml'}: a link; copy the config itself onto the card" in (
        report_of(folder)
    )


def test_on_the_installed_image_a_refusal_says_the_gateway_goes_on_as_before(
    tmp_path: Path,
) -> None:
    # The image as docs/install.md builds it: install.sh enabled the service and wrote
    # the example config.  A refused card changes none of that.
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(
        ["bash", str(ROOT / "scripts/install.sh"), "--root", str(root), "--skip-venv"],
        check=True,
        capture_output=True,
    )
    folder = root / "boot/firmware/community-gateway"
    folder.mkdir(parents=True)
    (folder / "gateway.yaml").write_text(GOOD.replace("mqtts://", "http://"))
    installed = (root / "etc/community-gateway/gateway.yaml").read_bytes()

    assert firstboot(root).returncode == 1
    report = "\n".join(report_of(folder))
    assert "goes on with the config it had, /etc/community-gateway/gateway.yaml" in report
    assert "not enabled" not in report
    wants = root / "etc/systemd/system/multi-user.target.wants/community-gateway.service"
    assert wants.is_symlink(), "the service stays enabled"
    assert (root / "etc/community-gateway/gateway.yaml").read_bytes() == installed


def test_a_crash_while_installing_still_leaves_a_report(tmp_path: Path) -> None:
    root, folder = image(tmp_path, GOOD)
    (root / "etc/community-gateway").write_text("a file where the folder goes\n")
    result = firstboot(root)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = report_of(folder)
    assert lines[0].endswith(": FAILED"), lines
    assert any(line.startswith("First boot stopped with an error: ") for line in lines)
    assert (folder / "secrets/broker-password").exists(), "secrets stay until installed"
    assert (folder / "gateway.yaml").exists(), "the next boot tries again"


def test_the_config_is_checked_as_the_service_user(tmp_path: Path) -> None:
    # A file the service user cannot read: root could, the checking child cannot.
    root, folder = image(tmp_path, GOOD)
    (folder / "gateway.yaml").chmod(0o600)
    assert firstboot(root).returncode == 1
    assert f"{folder / 'gateway.yaml'}: cannot read: Permission denied" in report_of(folder)


def test_a_config_that_explodes_in_memory_is_refused_within_the_limits(tmp_path: Path) -> None:
    # A 9**9-element alias bomb: whatever the parser does, the child's limits hold.
    levels = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    root, folder = image(tmp_path, "version: 1\n" + "\n".join(levels) + "\n")
    started = time.monotonic()
    result = firstboot(root)
    assert result.returncode == 1, result.stdout + result.stderr
    assert time.monotonic() - started < 20
    lines = report_of(folder)
    assert lines[0].endswith(": REFUSED")
    assert any(line.startswith(str(folder / "gateway.yaml")) for line in lines), lines


def test_a_locked_gateway_refuses_the_next_card_until_unlocked(tmp_path: Path) -> None:
    root, folder = image(tmp_path, GOOD)
    (folder / "LOCK").touch()  # the installer asks for the lock on this card
    assert firstboot(root).returncode == 0
    assert not (folder / "LOCK").exists()
    assert any("locked first boot" in line for line in report_of(folder))

    # Someone with the card writes a config of their own onto it.
    hostile = GOOD.replace("broker.example.net", "evil.example.com")
    (folder / "gateway.yaml").write_text(hostile)
    (folder / "secrets").mkdir()
    (folder / "secrets" / "broker-password").write_text("theirs\n")
    (folder / "secrets" / "ca.crt").write_bytes(ca_pem())
    result = firstboot(root)
    assert result.returncode == 1
    lines = report_of(folder)
    assert lines[0].endswith(": LOCKED")
    assert "  sudo gateway firstboot --unlock" in lines
    etc = root / "etc/community-gateway"
    assert (etc / "gateway.yaml").read_text() == GOOD
    assert (etc / "secrets/broker-password").read_text() == "s3cret\n"

    unlocked = subprocess.run(
        [GATEWAY, "firstboot", "--root", str(root), "--unlock"], capture_output=True, text=True
    )
    assert unlocked.stdout.strip() == "first boot is open again"
    assert firstboot(root).returncode == 0
    assert (etc / "gateway.yaml").read_text() == hostile
    assert any("not locked" in line for line in report_of(folder))

    locked = subprocess.run(
        [GATEWAY, "firstboot", "--root", str(root), "--lock"], capture_output=True, text=True
    )
    assert locked.returncode == 0 and "first boot is locked" in locked.stdout
    assert mode_owner(root / "var/lib/community-gateway-firstboot") == (0o700, 0, 0)
