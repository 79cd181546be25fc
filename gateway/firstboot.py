"""First boot of a flashed SD card: install the config folder left on the boot partition.

An installer writes Raspberry Pi OS to a card and copies a `community-gateway/` folder
(`gateway.yaml`, `secrets/`) onto its boot partition.  On first boot this:

1. validates `gateway.yaml` with the gateway's own validation (the lines are those of
   `gateway validate`), plus two rules of the installed service: the outbox lives in
   /var/lib/community-gateway, and files the config names in the folder are in secrets/;
2. if anything is wrong, moves nothing and leaves FIRSTBOOT-REPORT.txt in the folder,
   so the installer reads it on any computer, fixes the card and boots again;
3. otherwise copies the config and secrets into /etc/community-gateway (files 0600,
   folders 0700, owned by the service user), deletes the secrets from the FAT
   partition, keeps the config there as gateway.yaml.installed for reference (it holds
   no secrets), writes the report, and enables the gateway service.

`root` prefixes every path, so tests run it on a temporary tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from gateway.config import ConfigError, LoadedConfig, load_config
from gateway.files import write_private
from gateway.yamlsource import YamlSyntaxError, load_located

__all__ = [
    "BOOT_FOLDERS",
    "KEPT_CONFIG",
    "REPORT",
    "Outcome",
    "Result",
    "enable_service",
    "find_folder",
    "run",
]

BOOT_FOLDERS = ("boot/firmware/community-gateway", "boot/community-gateway")
CONFIG_DIR = "etc/community-gateway"
STATE_DIR = Path("/var/lib/community-gateway")
UNIT_DIR = "etc/systemd/system"
UNIT = "community-gateway.service"
SERVICE_USER = "community-gateway"
REPORT = "FIRSTBOOT-REPORT.txt"
KEPT_CONFIG = "gateway.yaml.installed"


class Outcome(StrEnum):
    NOTHING = "nothing to do"
    INSTALLED = "installed"
    REFUSED = "refused"


@dataclass(slots=True)
class Result:
    """What happened, and the report's lines."""

    outcome: Outcome
    folder: Path | None = None
    lines: list[str] = field(default_factory=list)


def find_folder(root: Path) -> Path | None:
    """The boot partition's config folder: /boot/firmware (Bookworm) first, then /boot."""
    for rel in BOOT_FOLDERS:
        folder = root / rel
        if (folder / "gateway.yaml").is_file():
            return folder
    return None


def _service_rules(config: Path, loaded: LoadedConfig, folder: Path) -> list[str]:
    """Problems that `gateway validate` cannot know: where the installed service runs."""
    src = load_located(config)
    problems = []
    outbox = loaded.config.outbox.path
    if not outbox.is_relative_to(STATE_DIR):
        problems.append(
            src.problem(
                ("outbox", "path"),
                f"{outbox} is outside {STATE_DIR}, the only folder the service may write; "
                f"use {STATE_DIR}/outbox.db",
            )
        )
    broker = loaded.config.broker
    named = [(("broker", "password", "file"), broker.password.file if broker.password else None)]
    if broker.tls is not None:
        named += [
            (("broker", "tls", k), getattr(broker.tls, k))
            for k in ("ca_file", "cert_file", "key_file")
        ]
    secrets = folder / "secrets"
    for key, path in named:
        if path is not None and path.is_relative_to(folder) and not path.is_relative_to(secrets):
            problems.append(
                src.problem(
                    key, f"{path.name} must be in the secrets/ folder: write secrets/{path.name}"
                )
            )
    return [str(p) for p in problems]


def _problems(config: Path, folder: Path) -> list[str]:
    try:
        loaded = load_config(config)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    try:
        return _service_rules(config, loaded, folder)
    except (OSError, YamlSyntaxError) as exc:  # validated a moment ago; be safe anyway
        return [f"{config}: {exc}"]


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
    # Copy, not rename: the FAT partition and /etc are different file systems.
    write_private(dst, src.read_bytes(), owner=owner)


def enable_service(root: Path) -> str:
    """Enable (and, on a running system, start) the service; returns what was done."""
    live = root == Path("/") and Path("/run/systemd/system").is_dir()
    if live:
        # --no-block: this oneshot is ordered before the service; waiting would deadlock.
        subprocess.run(["systemctl", "enable", "--now", "--no-block", UNIT], check=True)
        return f"systemctl enable --now {UNIT}"
    # Not booted with systemd (an image being built, a test): make the link ourselves.
    wants = root / UNIT_DIR / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / UNIT
    target = Path("/") / UNIT_DIR / UNIT
    if not (link.is_symlink() and os.readlink(link) == str(target)):
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return f"enabled {UNIT} ({link} -> {target})"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _write_report(folder: Path, title: str, lines: list[str]) -> None:
    text = "\r\n".join([title, "", *lines, ""])  # CRLF: read on Windows laptops too
    (folder / REPORT).write_text(text, encoding="utf-8", newline="")


def run(root: Path = Path("/")) -> Result:
    """Install the boot partition's config folder, or refuse it with a report."""
    folder = find_folder(root)
    if folder is None:
        return Result(Outcome.NOTHING)
    config = folder / "gateway.yaml"
    problems = _problems(config, folder)
    unit = root / UNIT_DIR / UNIT
    if not unit.is_file():
        problems.append(f"{unit} is missing: the gateway is not installed on this image")
    if problems:
        lines = [
            "The config in this folder has problems; nothing was installed and the",
            "gateway service was not enabled. Fix them on this card and boot again:",
            "",
            *problems,
            "",
            "Check a config on any computer with:  gateway validate -c gateway.yaml",
        ]
        _write_report(folder, f"community-gateway first boot {_now()}: REFUSED", lines)
        return Result(Outcome.REFUSED, folder, problems)

    owner = _owner(root)
    etc = root / CONFIG_DIR
    _private_dir(etc, owner)
    done = []
    secrets = folder / "secrets"
    moved_secrets = sorted(p for p in secrets.rglob("*") if p.is_file()) if secrets.is_dir() else []
    for src in moved_secrets:
        dst = etc / src.relative_to(folder)
        for parent in reversed(dst.relative_to(etc).parents[:-1]):
            _private_dir(etc / parent, owner)
        _copy_private(src, dst, owner)
        done.append(f"installed {Path('/') / CONFIG_DIR / src.relative_to(folder)}")
    _copy_private(config, etc / "gateway.yaml", owner)
    done.append(f"installed {Path('/') / CONFIG_DIR / 'gateway.yaml'}")
    # Only now, with everything safely in /etc, the secrets leave the FAT partition.
    if secrets.is_dir():
        shutil.rmtree(secrets)
        done.append("deleted secrets/ from the boot partition")
    config.replace(folder / KEPT_CONFIG)
    done.append(f"kept the config here as {KEPT_CONFIG} (it holds no secrets)")
    done.append(enable_service(root))
    _write_report(folder, f"community-gateway first boot {_now()}: INSTALLED", done)
    return Result(Outcome.INSTALLED, folder, done)
