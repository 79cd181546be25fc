"""scripts/install.sh into a temporary root: layout, idempotence, upgrade, uninstall.

Most tests skip the virtualenv (--skip-venv) to stay quick; one slow test builds it for
real under the root and runs the installed `gateway`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.harness import GATEWAY

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "install.sh"
UNITS = "etc/systemd/system"


def install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path with its type, mode, owner, mtime and content or link target."""
    seen: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            what: object = os.readlink(path)
        elif stat.S_ISREG(st.st_mode):
            what = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            what = None
        seen[str(path.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, what)
    return seen


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_shellcheck_is_clean() -> None:
    result = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_install_lays_out_the_tree_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = install(root, "--skip-venv")
    assert "would create system user community-gateway (groups dialout)" in first.stdout

    for unit in ("community-gateway.service", "community-gateway-firstboot.service"):
        installed = root / UNITS / unit
        assert installed.read_bytes() == (ROOT / "systemd" / unit).read_bytes()
        assert mode(installed) == 0o644
        link = root / UNITS / "multi-user.target.wants" / unit
        assert os.readlink(link) == f"/etc/systemd/system/{unit}"
    command = os.readlink(root / "usr/local/bin/gateway")
    assert command == "/opt/community-gateway/venv/bin/gateway"
    etc = root / "etc/community-gateway"
    assert mode(etc) == 0o700 and mode(etc / "secrets") == 0o700
    assert mode(root / "var/lib/community-gateway") == 0o700
    config = etc / "gateway.yaml"
    assert mode(config) == 0o600
    assert "path: /var/lib/community-gateway/outbox.db" in config.read_text()
    validated = subprocess.run([GATEWAY, "validate", "-c", str(config)], capture_output=True)
    assert validated.returncode == 0, validated.stderr
    assert not (root / UNITS / "community-gateway.service.d").exists(), "Debian: no gpio group"

    before = snapshot(root)
    second = install(root, "--skip-venv")
    assert snapshot(root) == before
    assert "wrote" not in second.stdout and "linked" not in second.stdout


def test_a_gpio_group_gets_a_drop_in_and_the_user_is_given_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text("dialout:x:20:\ngpio:x:997:\n")
    (root / "etc/passwd").write_text(
        "community-gateway:x:4321:4322::/var/lib/community-gateway:/usr/sbin/nologin\n"
    )
    install(root, "--skip-venv")
    dropin = root / UNITS / "community-gateway.service.d/gpio.conf"
    assert "SupplementaryGroups=gpio" in dropin.read_text()
    for path in ("etc/community-gateway", "etc/community-gateway/secrets",
                 "etc/community-gateway/gateway.yaml", "var/lib/community-gateway"):  # fmt: skip
        st = (root / path).stat()
        assert (st.st_uid, st.st_gid) == (4321, 4322), path


def test_upgrade_keeps_config_and_state_and_restores_the_units(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, "--skip-venv")
    config = root / "etc/community-gateway/gateway.yaml"
    config.write_text(config.read_text().replace("my-site", "sunrise-gardens"))
    secret = root / "etc/community-gateway/secrets/broker-password"
    secret.write_text("s3cret\n")
    outbox = root / "var/lib/community-gateway/outbox.db"
    outbox.write_bytes(b"SQLite format 3\0 pretend")
    unit = root / UNITS / "community-gateway.service"
    unit.write_text("# edited by hand\n")
    kept = {p: p.read_bytes() for p in (config, secret, outbox)}

    install(root, "--skip-venv", "--upgrade")
    assert {p: p.read_bytes() for p in kept} == kept
    assert unit.read_bytes() == (ROOT / "systemd/community-gateway.service").read_bytes()


def test_uninstall_keeps_data_unless_purged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, "--skip-venv")
    outbox = root / "var/lib/community-gateway/outbox.db"
    outbox.write_bytes(b"messages waiting")

    result = install(root, "--uninstall")
    assert "kept /etc/community-gateway and /var/lib/community-gateway" in result.stdout
    assert not (root / "opt/community-gateway").exists()
    assert not (root / "usr/local/bin/gateway").is_symlink()
    assert not list((root / UNITS).rglob("community-gateway*"))
    assert (root / "etc/community-gateway/gateway.yaml").exists()
    assert outbox.read_bytes() == b"messages waiting"

    install(root, "--uninstall", "--purge")
    assert not (root / "etc/community-gateway").exists()
    assert not (root / "var/lib/community-gateway").exists()


def test_first_boot_after_install_replaces_the_example_config(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root, "--skip-venv")
    folder = root / "boot/firmware/community-gateway"
    folder.mkdir(parents=True)
    (folder / "gateway.yaml").write_text(
        "version: 1\nsite: {id: s}\ngateway: {id: g}\nbroker: {url: 'mqtt://10.0.0.2:1883'}\n"
        "outbox: {path: /var/lib/community-gateway/outbox.db}\n"
    )
    result = subprocess.run(
        [GATEWAY, "firstboot", "--root", str(root)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    installed = (root / "etc/community-gateway/gateway.yaml").read_text()
    assert "mqtt://10.0.0.2:1883" in installed


@pytest.mark.slow
def test_a_real_install_builds_a_working_venv_that_systemd_accepts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    install(root)
    program = root / "opt/community-gateway/venv/bin/gateway"
    version = subprocess.run([str(program), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("gateway, version "), version
    # The installed package is a copy, not a link to this checkout.
    where = subprocess.run(
        [str(root / "opt/community-gateway/venv/bin/python"), "-c",
         "import gateway; print(gateway.__file__)"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert where.startswith(str(root / "opt/community-gateway/venv/lib/")), where
    validated = subprocess.run(
        [str(program), "validate", "-c", str(root / "etc/community-gateway/gateway.yaml")],
        capture_output=True,
        text=True,
    )
    assert validated.returncode == 0, validated.stderr

    # systemd accepts the units with the real program in place.
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", symlinks=True)
    for unit in ("community-gateway.service", "community-gateway-firstboot.service"):
        verify = subprocess.run(
            ["systemd-analyze", "verify", "--recursive-errors=yes", f"--root={root}", unit],
            capture_output=True,
            text=True,
        )
        assert verify.returncode == 0 and verify.stderr == "", verify.stderr

    before = snapshot(root)
    install(root)
    assert snapshot(root) == before, "a second run does not touch the venv either"
