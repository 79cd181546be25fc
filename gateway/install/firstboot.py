"""First boot of a flashed SD card: install the config folder left on the boot partition.

An installer writes the gateway image to a card and copies a `community-gateway/` folder
(`gateway.yaml`, `secrets/`) onto its boot partition.  On first boot this:

1. refuses at once when first boot is locked (`gateway firstboot --lock`): anyone who
   holds the card could otherwise re-provision the gateway with a broker of their own;
2. checks the folder's files without reading them (regular files, bounded sizes), then
   validates `gateway.yaml` in a child process that has dropped to the service user and
   runs under memory, CPU and time limits, because the file comes from a FAT partition
   that anyone with the card can write.  The lines are those of `gateway validate`, plus
   the rules of the installed service: the outbox lives in /var/lib/community-gateway,
   and every file the config names on the boot partition is in secrets/ and written
   relative to gateway.yaml (an absolute path would point at the secrets first boot
   deletes);
3. if anything is wrong, moves nothing and leaves FIRSTBOOT-REPORT.txt in the folder,
   so the installer reads it on any computer, fixes the card and boots again; the
   gateway service (enabled in the image) goes on with the config it already had;
4. otherwise copies the config and secrets into /etc/community-gateway (files 0600,
   folders 0700, owned by the service user), deletes the secrets from the FAT
   partition, keeps the config there as gateway.yaml.installed for reference (it holds
   no secrets), writes the report, makes sure the gateway service is enabled, and locks
   first boot when the folder holds a file named LOCK.

The report is written in every outcome, a crash or a stop by systemd included.
`root` prefixes every path, so tests run it on a temporary tree.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from types import FrameType

from gateway.install.firstboot_check import (
    CHECK_CPU_S,
    CHECK_MEMORY_BYTES,
    CHECK_TIMEOUT_S,
    file_problems,
)

__all__ = [
    "BOOT_FOLDERS",
    "KEPT_CONFIG",
    "LOCK_FILE",
    "LOCK_REQUEST",
    "REPORT",
    "Outcome",
    "Result",
    "enable_service",
    "find_folder",
    "lock",
    "locked_since",
    "run",
    "unlock",
]

BOOT_FOLDERS = ("boot/firmware/community-gateway", "boot/community-gateway")
BOOT = "boot"
CONFIG_DIR = "etc/community-gateway"
# Root's own folder (the unit's StateDirectory=): the service user cannot remove the lock.
LOCK_FILE = "var/lib/community-gateway-firstboot/locked"
# An empty file of this name in the boot folder locks first boot after installing it.
LOCK_REQUEST = "LOCK"
UNIT_DIR = "etc/systemd/system"
UNIT = "community-gateway.service"
SERVICE_USER = "community-gateway"
REPORT = "FIRSTBOOT-REPORT.txt"
KEPT_CONFIG = "gateway.yaml.installed"


class Outcome(StrEnum):
    NOTHING = "nothing to do"
    INSTALLED = "installed"
    REFUSED = "refused"
    LOCKED = "locked"
    FAILED = "failed"


@dataclass(slots=True)
class Result:
    """What happened, and the report's lines."""

    outcome: Outcome
    folder: Path | None = None
    lines: list[str] = field(default_factory=list)


class _Stopped(Exception):
    """systemd stopped the unit (TimeoutStartSec=, shutdown) while first boot ran."""


def find_folder(root: Path) -> Path | None:
    """The boot partition's config folder: /boot/firmware (Bookworm) first, then /boot."""
    for rel in BOOT_FOLDERS:
        folder = root / rel
        if (folder / "gateway.yaml").is_file():
            return folder
    return None


# ---- locking --------------------------------------------------------------------------


def locked_since(root: Path = Path("/")) -> str | None:
    """When first boot was locked (the lock file's text), or None while it is open."""
    try:
        return (root / LOCK_FILE).read_text(encoding="utf-8").strip() or "a while ago"
    except FileNotFoundError:
        return None


def lock(root: Path = Path("/")) -> Path:
    """Lock first boot: later folders on the boot partition are refused, not installed."""
    path = root / LOCK_FILE
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(f"{_now()}\n", encoding="utf-8")
    return path


def unlock(root: Path = Path("/")) -> bool:
    """Open first boot again; False when it was not locked."""
    try:
        (root / LOCK_FILE).unlink()
    except FileNotFoundError:
        return False
    return True


# ---- checking the folder (the rules: firstboot_check) ---------------------------------


def _validate(root: Path, folder: Path) -> list[str]:
    """Every problem of the folder's config, found by a child as the service user."""
    config = folder / "gateway.yaml"
    owner = _owner(root)
    args = [str(config), str(folder), str(root / BOOT)]
    if owner is not None:
        args += [str(owner[0]), str(owner[1])]
    try:
        child = subprocess.run(
            [sys.executable, "-I", "-m", "gateway.install.firstboot_check", *args],
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            cwd="/",
        )
    except subprocess.TimeoutExpired:
        return [
            f"{config}: checking it took longer than {CHECK_TIMEOUT_S:.0f} s; is it the config?"
        ]
    try:
        problems = json.loads(child.stdout)["problems"]
    except (ValueError, KeyError, TypeError):
        last = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        if child.returncode < 0 or "MemoryError" in last:
            why = f"it needed more than {CHECK_MEMORY_BYTES >> 20} MB or {CHECK_CPU_S} s of CPU"
        else:
            why = last
        return [f"{config}: could not be checked ({why}); run gateway validate -c gateway.yaml"]
    return [str(p) for p in problems]


# ---- installing -----------------------------------------------------------------------


def _owner(root: Path) -> tuple[int, int] | None:
    # The service user of the tree being installed (root's own passwd file).
    try:
        lines = (root / "etc/passwd").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":")
        if len(parts) >= 4 and parts[0] == SERVICE_USER:
            return int(parts[2]), int(parts[3])
    return None


def _private_dir(path: Path, owner: tuple[int, int] | None) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    if owner is not None:
        os.chown(path, *owner)


def _copy_private(src: Path, dst: Path, owner: tuple[int, int] | None) -> None:
    from gateway.sdk.files import write_private

    # Copy, not rename: the FAT partition and /etc are different file systems.
    write_private(dst, src.read_bytes(), owner=owner)


def enable_service(root: Path) -> str:
    """Make sure the service is enabled; returns what was done.

    The image has it enabled already (install.sh), and it is ordered after first boot,
    so it starts with the new config by itself: no systemctl, which the sandbox of the
    first-boot unit would not allow.  Only a tree without the link gets it made here.
    """
    wants = root / UNIT_DIR / "multi-user.target.wants"
    link = wants / UNIT
    target = Path("/") / UNIT_DIR / UNIT
    if link.is_symlink() and os.readlink(link) == str(target):
        return f"{UNIT} is enabled and starts with this config"
    try:
        wants.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    except OSError as exc:  # the unit's sandbox keeps /etc/systemd read-only
        return f"could not enable {UNIT} ({exc.strerror}): sudo systemctl enable --now {UNIT}"
    return f"enabled {UNIT} ({link} -> {target})"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _write_report(folder: Path, outcome: Outcome, lines: list[str]) -> None:
    title = f"community-gateway first boot {_now()}: {outcome.upper()}"
    text = "\r\n".join([title, "", *lines, ""])  # CRLF: read on Windows laptops too
    tmp = folder / f".{REPORT}.tmp"
    tmp.write_text(text, encoding="utf-8", newline="")
    tmp.replace(folder / REPORT)


def _current(root: Path) -> str:
    config = Path("/") / CONFIG_DIR / "gateway.yaml"
    return (
        f"the config it had, {config}" if (root / config.relative_to("/")).exists() else "no config"
    )


def _refuse(root: Path, folder: Path, problems: list[str]) -> Result:
    lines = [
        "The config in this folder has problems, so nothing was installed. The gateway",
        f"service goes on with {_current(root)}.",
        "Fix the problems on this card and boot again:",
        "",
        *problems,
        "",
        "Check a config on any computer with:  gateway validate -c gateway.yaml",
    ]
    _write_report(folder, Outcome.REFUSED, lines)
    return Result(Outcome.REFUSED, folder, problems)


def _install(root: Path, folder: Path, done: list[str]) -> Result:
    since = locked_since(root)
    if since is not None:
        lines = [
            f"First boot of this gateway was locked on {since}: nothing on this card was",
            f"installed or deleted. The gateway goes on with {_current(root)}.",
            "To provision it again, log in on the gateway and run:",
            "  sudo gateway firstboot --unlock",
            "then boot with this card again.",
        ]
        _write_report(folder, Outcome.LOCKED, lines)
        return Result(Outcome.LOCKED, folder, lines)
    problems = file_problems(folder)
    if not problems:
        problems = _validate(root, folder)
    unit = root / UNIT_DIR / UNIT
    if not unit.is_file():
        problems.append(f"{unit} is missing: the gateway is not installed on this image")
    if problems:
        return _refuse(root, folder, problems)

    config = folder / "gateway.yaml"
    owner = _owner(root)
    etc = root / CONFIG_DIR
    _private_dir(etc, owner)
    secrets = folder / "secrets"
    moved_secrets = sorted(p for p in secrets.rglob("*") if p.is_file()) if secrets.is_dir() else []
    for src in moved_secrets:
        dst = etc / src.relative_to(folder)
        for parent in reversed(dst.relative_to(etc).parents[:-1]):
            _private_dir(etc / parent, owner)
        _copy_private(src, dst, owner)
        done.append(f"installed {Path('/') / CONFIG_DIR / src.relative_to(folder)}")
    # The config last: until it is in place, the service runs on with the old one.
    _copy_private(config, etc / "gateway.yaml", owner)
    done.append(f"installed {Path('/') / CONFIG_DIR / 'gateway.yaml'}")
    # Only now, with everything safely in /etc, the secrets leave the FAT partition.
    if secrets.is_dir():
        shutil.rmtree(secrets)
        done.append("deleted secrets/ from the boot partition")
    config.replace(folder / KEPT_CONFIG)
    done.append(f"kept the config here as {KEPT_CONFIG} (it holds no secrets)")
    done.append(enable_service(root))
    request = folder / LOCK_REQUEST
    if request.is_file():
        lock(root)
        request.unlink()
        done.append("locked first boot (LOCK was in this folder): unlock with")
        done.append("  sudo gateway firstboot --unlock")
    else:
        done.append("first boot is not locked: anyone with this card can provision the")
        done.append("gateway again; lock it with  sudo gateway firstboot --lock")
    _write_report(folder, Outcome.INSTALLED, done)
    return Result(Outcome.INSTALLED, folder, done)


def _stop(signum: int, _frame: FrameType | None) -> None:
    raise _Stopped(f"stopped by signal {signal.Signals(signum).name}")


def run(root: Path = Path("/")) -> Result:
    """Install the boot partition's config folder, or refuse it; always with a report."""
    root = root.absolute()  # the validating child runs in /
    folder = find_folder(root)
    if folder is None:
        return Result(Outcome.NOTHING)
    done: list[str] = []
    previous = signal.signal(signal.SIGTERM, _stop)  # TimeoutStartSec=, shutdown
    try:
        return _install(root, folder, done)
    except Exception as exc:  # whatever happened, the installer must read it
        lines = [
            f"First boot stopped with an error: {type(exc).__name__}: {exc}",
            "",
            "Done before the error:" if done else "Nothing was installed before the error.",
            *done,
            "",
            f"The gateway service goes on with {_current(root)}. Boot again to retry;",
            "if it happens again, send this report and journalctl -b -u "
            "community-gateway-firstboot to the platform team.",
        ]
        try:
            _write_report(folder, Outcome.FAILED, lines)
        except OSError as report_error:
            lines.append(f"(this report could not be written to {folder}: {report_error})")
        return Result(Outcome.FAILED, folder, lines)
    finally:
        signal.signal(signal.SIGTERM, previous)
