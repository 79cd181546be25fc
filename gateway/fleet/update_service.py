"""The software update feature of a running gateway: the `update` command, the health gate, the audit.

Plugged in through `gateway.host.Host` (docs/fleet.md, "Software updates"):

- `cmd/update` with `{"manifest": {...signed...}, "url": "..."}`: the manifest and the
  databases are checked at once (a refusal is the reply's error and changes nothing);
  an accepted update is fetched and built beside the running release in a thread,
  then switched to, and the gateway stops so that systemd starts it again through the
  launcher (`gateway.fleet.launch`).  Each outcome is a `gateway.update` event.
- a release on trial passes its health gate when its `testing` event reached the
  broker (the uplink's ack: connected, birth published) and every configured device
  reported available, within `deadline_s`; then it is committed.  Otherwise the
  previous release is switched back and the gateway stops to run it.
- the `update` part of every health message: the running version, a trial, the last
  result.

Updates need the launcher: it passes the state folder in COMMUNITY_GATEWAY_RELEASES.
A gateway started otherwise (a developer's `gateway run`) refuses updates, saying so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from community_protocol.enums import GatewayEventType, UpdateResult
from community_protocol.topics import CommandPath
from gateway.host import Host
from gateway.mqtt.commands import Command, CommandFailed
from gateway.sdk.model import DeviceRef

from . import launch
from .events import gateway_event
from .update import UpdateRefused, check_manifest, local_databases, schema_problems
from .update_install import Layout, commit, fetch, install_release, rollback, switch

__all__ = ["ENV_FACTORY", "ENV_RELEASES", "UpdateService", "attach", "running_version"]

log = logging.getLogger(__name__)

ENV_RELEASES = "COMMUNITY_GATEWAY_RELEASES"
ENV_FACTORY = "COMMUNITY_GATEWAY_FACTORY"
UPLINK = "mqtt"  # gateway.mqtt.uplink.CONSUMER


def running_version() -> str:
    """The installed version of the program that runs."""
    try:
        return version("community-gateway")
    except PackageNotFoundError:
        return "0+unknown"


class UpdateService:
    """The `update` command, the health gate of a release on trial, and their audit events."""

    def __init__(
        self,
        host: Host,
        layout: Layout | None,
        keys: list[Any],
        *,
        max_starts: int,
        deadline_s: float,
    ) -> None:
        self.host = host
        self.layout = layout
        self.keys = keys
        self.max_starts = max_starts
        self.deadline_s = deadline_s
        self.version = running_version()
        self._busy = False
        self._seen_up: set[DeviceRef] = set()
        self._up = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- the command -------------------------------------------------------------------

    async def command(self, cmd: Command) -> tuple[str, Any]:
        """Check an update now; fetch, build and switch to it in the background."""
        try:
            manifest, url = self._check(cmd.args)
        except UpdateRefused as exc:
            claimed = cmd.args.get("manifest")
            named = claimed.get("version") if isinstance(claimed, dict) else None
            await self.audit(UpdateResult.REFUSED, str(named or "?"), str(exc))
            raise CommandFailed(str(exc), status="refused") from None
        self._busy = True
        task = asyncio.get_running_loop().create_task(self._install(manifest, url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return "accepted", {"version": manifest.version, "running": self.version}

    def _check(self, args: Any) -> tuple[Any, str]:
        if self.layout is None:
            raise UpdateRefused(
                f"this gateway was not started by the launcher ({ENV_RELEASES} unset): updates need it"
            )
        if self._busy:
            raise UpdateRefused("an update is being installed already")
        trial = self.layout.state().get("trial")
        if isinstance(trial, dict):
            raise UpdateRefused(f"version {trial.get('version')} is on trial; wait for its result")
        url = args.get("url")
        if not isinstance(url, str):
            raise UpdateRefused("the command needs 'url', where the bundle is")
        manifest = check_manifest(args.get("manifest"), self.keys)
        if manifest.version == self.version:
            raise UpdateRefused(f"version {manifest.version} runs already")
        problems = schema_problems(manifest, local_databases(self.host.config))
        if problems:
            raise UpdateRefused("; ".join(problems))
        return manifest, url

    async def _install(self, manifest: Any, url: str) -> None:
        assert self.layout is not None
        layout = self.layout
        python = getattr(sys, "_base_executable", sys.executable)

        def work() -> Path:
            archive = fetch(url, manifest, layout.download)
            try:
                return install_release(layout, manifest, archive, python)
            finally:
                archive.unlink(missing_ok=True)

        started = time.monotonic()
        try:
            venv = await asyncio.to_thread(work)
            log.info(
                "version %s fetched, checked and built in %.1f s",
                manifest.version,
                time.monotonic() - started,
            )
            switch(layout, manifest, venv, max_starts=self.max_starts, deadline_s=self.deadline_s)
        except (UpdateRefused, OSError) as exc:
            self._busy = False
            log.error("update to version %s refused: %s", manifest.version, exc)
            await self.audit(UpdateResult.REFUSED, manifest.version, str(exc))
            return
        await self.audit(UpdateResult.SWITCHED, manifest.version, "", signed_by=manifest.key_id)
        self.restart(f"to try version {manifest.version}")

    def restart(self, why: str) -> None:
        """Stop as systemd would; its Restart= starts the launcher again."""
        log.warning("stopping %s (systemd starts the gateway again through the launcher)", why)
        os.kill(os.getpid(), signal.SIGTERM)

    # ---- the health gate ---------------------------------------------------------------

    def on_availability(self, ref: DeviceRef, available: bool | None, reason: str) -> None:
        if available:
            self._seen_up.add(ref)
            if len(self._seen_up) >= len(self.host.devices):
                self._up.set()

    async def run(self) -> None:
        """Audit what the launcher did before this start; judge a trial of this version."""
        if self.layout is None:
            return
        state = self.layout.state()
        last = state.get("last")
        if isinstance(last, dict) and not last.get("audited"):
            # Written by the launcher, which rolled back a release before this start.
            result = str(last.get("result"))
            known = result in {str(r) for r in UpdateResult}
            await self.audit(
                UpdateResult(result) if known else UpdateResult.ROLLED_BACK,
                str(last.get("version")),
                str(last.get("reason", "")),
            )
            last["audited"] = True
            launch.write_state(self.layout.state_dir, state)
        trial = state.get("trial")
        if isinstance(trial, dict) and trial.get("version") == self.version:
            await self._judge(float(trial.get("deadline_s", self.deadline_s)))

    async def _judge(self, deadline_s: float) -> None:
        assert self.layout is not None
        started = time.monotonic()
        if not self.host.devices:
            self._up.set()
        seq = await self.audit(UpdateResult.TESTING, self.version, "")
        why = ""
        try:
            async with asyncio.timeout(deadline_s):
                while self.host.outbox.stats().lowest_seq.get(UPLINK, 0) <= seq:
                    await asyncio.sleep(0.2)  # the stats refresh a few times a second
                await self._up.wait()
        except TimeoutError:
            up = (
                "the broker never acknowledged it"
                if self.host.outbox.stats().lowest_seq.get(UPLINK, 0) <= seq
                else "not every device came up"
            )
            why = f"version {self.version} failed its health gate within {deadline_s:g} s: {up}"
        if not why:
            commit(self.layout)
            log.info("version %s committed after %.1f s", self.version, time.monotonic() - started)
            await self.audit(UpdateResult.COMMITTED, self.version, "")
            return
        trial = rollback(self.layout, why)
        log.error("%s; switching back to %s", why, trial.get("previous") if trial else "?")
        await self.audit(UpdateResult.ROLLED_BACK, self.version, why)
        self.restart("to run the previous version")

    # ---- audit and health --------------------------------------------------------------

    async def audit(
        self, result: str, new_version: str, reason: str, *, signed_by: str = ""
    ) -> int:
        """A `gateway.update` event, once durable in the outbox; its seq."""
        data: dict[str, Any] = {
            "result": result,
            "version": new_version,
            "running_version": self.version,
        }
        if reason:
            data["reason"] = reason
        if signed_by:
            data["key_id"] = signed_by
        item = gateway_event(self.host, GatewayEventType.UPDATE, data)
        return await self.host.outbox.aput(item)

    def health(self) -> dict[str, Any]:
        state = self.layout.state() if self.layout is not None else {}
        return {"version": self.version, "trial": state.get("trial"), "last": state.get("last")}


def attach(host: Host) -> UpdateService:
    """Plug the update feature into `host`; updates are refused while no update key is trusted."""
    sec = host.config.security
    keys: list[Any] = []
    if sec.update_keys:
        from gateway.security.signing import load_public_key

        for path in sec.update_keys:
            try:
                keys.append(load_public_key(path))
            except ValueError as exc:  # `gateway validate` says so too
                log.error("security.update_keys: %s", exc)
    releases = os.environ.get(ENV_RELEASES)
    layout = None
    if releases:
        factory = os.environ.get(ENV_FACTORY) or "/opt/community-gateway/venv"
        layout = Layout(Path(releases), Path(factory))
    svc = UpdateService(
        host, layout, keys, max_starts=sec.update_max_starts, deadline_s=sec.update_trial_s
    )
    host.add_command_route(CommandPath.UPDATE, svc.command)
    host.add_availability_observer(svc.on_availability)
    host.add_service("update", svc.run)
    host.add_health_part("update", svc.health)
    return svc
