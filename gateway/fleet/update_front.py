"""The software update feature as every running gateway holds it; the machinery loads when needed.

Most gateways spend their lives with no update in progress, yet the manifest checks,
the installer and the chunk staging (`update_service` and the modules it imports) held
about 0.9 MB of RSS in each of them (docs/benchmarks.md, issue 16).  The front answers
the health message from the launcher's state file and loads the machinery:

- at start, when there is work left: a release on trial, a roll-back the launcher made
  and no event has reported yet, or a transfer a previous run left on disk;
- at the first `update` command.

Without the launcher (no COMMUNITY_GATEWAY_RELEASES) an `update` command still loads
it, to be refused with the reason and audited as before.
"""

from __future__ import annotations

import asyncio
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from community_protocol.topics import CommandPath
from gateway.host import Host
from gateway.mqtt.commands import Command
from gateway.sdk.model import DeviceRef

from . import launch

if TYPE_CHECKING:
    from .update_service import UpdateService

__all__ = ["UpdateFront", "attach", "running_version", "work_left"]


def running_version() -> str:
    """The installed version of the program that runs."""
    try:
        return version("community-gateway")
    except PackageNotFoundError:
        return "0+unknown"


def launcher_dirs() -> tuple[Path, Path] | None:
    """The state folder and the factory venv the launcher named, or None without it."""
    releases = os.environ.get(launch.ENV_RELEASES)
    if not releases:
        return None
    factory = os.environ.get(launch.ENV_FACTORY) or "/opt/community-gateway/venv"
    return Path(releases), Path(factory)


def work_left(state_dir: Path) -> bool:
    """Whether a start finds update work to do before any command asks for it."""
    state = launch.read_state(state_dir)
    if isinstance(state.get("trial"), dict) or launch.unreported(state) is not None:
        return True
    transfer = state_dir.joinpath(*launch.TRANSFER_DIR)
    try:
        return any(transfer.iterdir())
    except OSError:  # no folder: no transfer
        return False


class UpdateFront:
    """Routes the update feature's inputs to the service, loading it on the first that needs it."""

    def __init__(self, host: Host, dirs: tuple[Path, Path] | None) -> None:
        self.host = host
        self.dirs = dirs
        self.version = running_version()
        self._svc: UpdateService | None = None
        self._at_start = False  # loaded at start: its own start-up work runs
        self._loaded = asyncio.Event()

    @property
    def loaded(self) -> bool:
        return self._svc is not None

    def service(self) -> UpdateService:
        if self._svc is None:
            from .update_service import build

            self._svc = build(self.host, self.dirs, self.version)
            self._loaded.set()
        return self._svc

    def load_at_start(self) -> None:
        """Load now if this start has work left (before any device reports availability)."""
        if self.dirs is not None and work_left(self.dirs[0]):
            self.service()
            self._at_start = True

    async def command(self, cmd: Command) -> tuple[str, Any]:
        return await self.service().command(cmd)

    def on_chunk(self, payload: bytes) -> None:
        # The uplink's thread.  No transfer is open before the service is loaded (an
        # announce or a start's resume opens one), so there is nothing to take yet.
        svc = self._svc
        if svc is not None and svc.receiver is not None:
            svc.receiver.on_chunk(payload)

    def on_availability(self, ref: DeviceRef, available: bool | None, reason: str) -> None:
        if self._svc is not None:
            self._svc.on_availability(ref, available, reason)

    async def run(self) -> None:
        """The start-up work: judge a trial, report a roll-back, when it was found."""
        if self._at_start:
            await self.service().run()

    async def receive(self) -> None:
        """The updates over MQTT, once the service is loaded (a transfer left is resumed)."""
        await self._loaded.wait()
        await self.service().receive(resume=self._at_start)

    def health(self) -> dict[str, Any]:
        if self._svc is not None:
            return self._svc.health()
        state = launch.read_state(self.dirs[0]) if self.dirs is not None else {}
        part = {"version": self.version, "trial": state.get("trial"), "last": state.get("last")}
        if self.dirs is not None:
            part["transfer"] = None  # none is open: opening one loads the service
        return part


def attach(host: Host) -> UpdateFront:
    """Plug the update feature into `host`; updates are refused while no update key is trusted."""
    front = UpdateFront(host, launcher_dirs())
    front.load_at_start()
    host.add_command_route(CommandPath.UPDATE, front.command)
    # Chunks are raw bytes, not commands: watched, so the command inbox never sees them.
    host.watch(host.topics.command(CommandPath.UPDATE_CHUNK), front.on_chunk)
    host.add_availability_observer(front.on_availability)
    host.add_service("update", front.run)
    host.add_service("update-transfer", front.receive)
    host.add_health_part("update", front.health)
    return front
