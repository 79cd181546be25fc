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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from community_protocol.chunks import ChunkError, Transfer
from community_protocol.enums import GatewayEventType, UpdateResult
from gateway.host import Host
from gateway.mqtt.commands import Command, CommandFailed
from gateway.sdk.model import DeviceRef

from . import launch
from .events import gateway_event
from .update import Manifest, UpdateRefused, check_manifest, local_databases, schema_problems
from .update_chunks import Staged, Staging
from .update_install import Layout, commit, fetch, install_release, rollback, switch
from .update_transfer import ChunkReceiver

__all__ = ["UpdateService", "build"]

log = logging.getLogger(__name__)

UPLINK = "mqtt"  # gateway.mqtt.uplink.CONSUMER


class UpdateService:
    """The `update` command, the health gate of a release on trial, and their audit events."""

    def __init__(
        self,
        host: Host,
        layout: Layout | None,
        keys: list[Any],
        *,
        version: str,
        max_starts: int,
        deadline_s: float,
        receiver: ChunkReceiver | None = None,
    ) -> None:
        self.host = host
        self.layout = layout
        # Updates over MQTT (None without the launcher: every update is refused then).
        self.receiver = receiver
        self.staging = receiver.staging if receiver is not None else None
        self.keys = keys
        self.max_starts = max_starts
        self.deadline_s = deadline_s
        self.version = version
        # The signed manifest being installed (None: no install runs) and the answer its
        # update command got: the same update asked for again meanwhile is answered so,
        # another one refused.
        self._installing: tuple[Any, dict[str, Any]] | None = None
        self._seen_up: set[DeviceRef] = set()
        self._up = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- the command -------------------------------------------------------------------

    async def command(self, cmd: Command) -> tuple[str, Any]:
        """Check an update now; fetch (or receive), build and switch to it in the background."""
        if self._installing is not None and cmd.args.get("manifest") == self._installing[0]:
            # A platform that missed the answer, or announces a finished transfer again.
            return "accepted", {**self._installing[1], "installing": True}
        try:
            progress = await self._resumed(cmd.args)
            if progress is not None:
                return "accepted", progress
            manifest, url = self._check(cmd.args)
            if url is None:
                return "accepted", await self._announce(manifest, cmd.args)
        except UpdateRefused as exc:
            claimed = cmd.args.get("manifest")
            named = claimed.get("version") if isinstance(claimed, dict) else None
            await self.audit(UpdateResult.REFUSED, str(named or "?"), str(exc))
            raise CommandFailed(str(exc), status="refused") from None
        assert self.layout is not None
        download = self.layout.download
        answer = {"version": manifest.version, "running": self.version}
        self._start_install(
            manifest,
            lambda: fetch(url, manifest, download),
            lambda archive: archive.unlink(missing_ok=True),
            (cmd.args["manifest"], answer),
        )
        return "accepted", answer

    def _check(self, args: Any) -> tuple[Any, str | None]:
        """The manifest and the URL (None: the bundle comes over MQTT); UpdateRefused why not."""
        if self.layout is None:
            raise UpdateRefused(
                f"this gateway was not started by the launcher ({launch.ENV_RELEASES} unset): updates need it"
            )
        if self._installing is not None:
            raise UpdateRefused("an update is being installed already")
        staged = self.staging.staged if self.staging is not None else None
        if staged is not None:
            raise UpdateRefused(
                f"the transfer {staged.transfer.id} of version {staged.manifest.get('version')}"
                f" is in progress ({staged.received} of {staged.transfer.chunks} chunks); it"
                f" ends after {self.receiver.idle_s if self.receiver else 0:g} s without chunks"
            )
        trial = self.layout.state().get("trial")
        if isinstance(trial, dict):
            raise UpdateRefused(f"version {trial.get('version')} is on trial; wait for its result")
        url = args.get("url")
        if "transfer" in args:
            url = None
        elif not isinstance(url, str):
            raise UpdateRefused(
                "the command needs 'url', where the bundle is, or 'transfer' (over MQTT)"
            )
        manifest = check_manifest(args.get("manifest"), self.keys)
        if manifest.version == self.version:
            raise UpdateRefused(f"version {manifest.version} runs already")
        problems = schema_problems(manifest, local_databases(self.host.config))
        if problems:
            raise UpdateRefused("; ".join(problems))
        return manifest, url

    async def _resumed(self, args: Any) -> dict[str, Any] | None:
        """The progress of the transfer `args` announces again (a resume), or None."""
        staged = self.staging.staged if self.staging is not None else None
        claimed = args.get("transfer")
        if staged is None or not isinstance(claimed, dict):
            return None
        if claimed.get("id") != staged.transfer.id:
            return None  # another transfer: _check refuses it, saying which runs
        if args.get("manifest") != staged.manifest:
            raise UpdateRefused(
                f"the transfer {staged.transfer.id} was announced for another manifest"
            )
        if self.receiver is not None and not staged.complete:
            self.receiver.touch()
        return self._progress(staged)

    def _progress(self, staged: Staged) -> dict[str, Any]:
        return {
            "version": staged.manifest.get("version"),
            "running": self.version,
            "transfer": staged.transfer.id,
            "received": staged.received,
            "chunks": staged.transfer.chunks,
            "missing": staged.missing(),
        }

    async def _announce(self, manifest: Manifest, args: Any) -> dict[str, Any]:
        """Open the transfer a signed announce names; its progress (nothing received yet)."""
        assert self.staging is not None and self.receiver is not None
        try:
            transfer = Transfer.parse(args.get("transfer"))
        except ChunkError as exc:
            raise UpdateRefused(str(exc)) from None
        staging = self.staging
        staged = await asyncio.to_thread(staging.open, transfer, manifest, args["manifest"])
        self.receiver.opened()
        log.info(
            "receiving version %s over MQTT: %d bytes in %d chunks (transfer %s)",
            manifest.version, transfer.size, transfer.chunks, transfer.id,
        )  # fmt: skip
        return self._progress(staged)

    async def received(self, staged: Staged) -> None:
        """A transfer is complete: check its hash and install it as a fetched bundle would be."""
        assert self.staging is not None
        try:
            manifest = check_manifest(staged.manifest, self.keys)
        except UpdateRefused as exc:  # the keys changed since it was announced
            await asyncio.to_thread(self.staging.discard)
            await self.audit(UpdateResult.REFUSED, str(staged.manifest.get("version")), str(exc))
            return
        staging = self.staging
        self._start_install(
            manifest,
            staging.finish,
            lambda _archive: staging.discard(),
            (staged.manifest, self._progress(staged)),  # complete: nothing missing
        )

    async def expired(self, staged: Staged, reason: str) -> None:
        log.error("%s", reason)
        await self.audit(UpdateResult.REFUSED, str(staged.manifest.get("version")), reason)

    async def resume(self) -> None:
        """A transfer a previous run left: taken up again if its manifest still verifies."""
        if self.staging is None or self.receiver is None:
            return
        staged = await asyncio.to_thread(self.staging.load)
        if staged is None:
            return
        try:
            manifest = check_manifest(staged.manifest, self.keys)
            if manifest.version == self.version:
                raise UpdateRefused(f"version {manifest.version} runs already")
        except UpdateRefused as exc:
            await asyncio.to_thread(self.staging.discard)
            await self.audit(UpdateResult.REFUSED, str(staged.manifest.get("version")), str(exc))
            return
        log.info(
            "resuming the transfer %s of version %s: %d of %d chunks on disk",
            staged.transfer.id, manifest.version, staged.received, staged.transfer.chunks,
        )  # fmt: skip
        self.receiver.opened()

    def _start_install(
        self,
        manifest: Manifest,
        obtain: Callable[[], Path],
        cleanup: Callable[[Path], None],
        asked: tuple[Any, dict[str, Any]],
    ) -> None:
        self._installing = asked
        task = asyncio.get_running_loop().create_task(self._install(manifest, obtain, cleanup))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _install(
        self, manifest: Manifest, obtain: Callable[[], Path], cleanup: Callable[[Path], None]
    ) -> None:
        assert self.layout is not None
        layout = self.layout
        python = getattr(sys, "_base_executable", sys.executable)

        def work() -> Path:
            archive = obtain()
            try:
                return install_release(layout, manifest, archive, python)
            finally:
                cleanup(archive)

        started = time.monotonic()
        log.info("installing version %s beside the running %s", manifest.version, self.version)
        try:
            venv = await asyncio.to_thread(work)
            log.info(
                "version %s fetched, checked and built in %.1f s",
                manifest.version,
                time.monotonic() - started,
            )
            switch(layout, manifest, venv, max_starts=self.max_starts, deadline_s=self.deadline_s)
        except (UpdateRefused, OSError) as exc:
            self._installing = None
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
        last = launch.unreported(state)
        if last is not None:
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

    async def receive(self, *, resume: bool = True) -> None:
        """The updates over MQTT: take up a transfer left by a previous run, then receive."""
        if self.receiver is None:
            return
        if resume:
            await self.resume()
        await self.receiver.run(self.received, self.expired)

    def health(self) -> dict[str, Any]:
        state = self.layout.state() if self.layout is not None else {}
        part = {"version": self.version, "trial": state.get("trial"), "last": state.get("last")}
        if self.receiver is not None:
            part["transfer"] = self.receiver.health()
        return part


def build(host: Host, dirs: tuple[Path, Path] | None, version: str) -> UpdateService:
    """The update service for `host`; `dirs`: the launcher's state folder and factory venv."""
    sec = host.config.security
    keys: list[Any] = []
    if sec.update_keys:
        from gateway.security.signing import load_public_key

        for path in sec.update_keys:
            try:
                keys.append(load_public_key(path))
            except ValueError as exc:  # `gateway validate` says so too
                log.error("security.update_keys: %s", exc)
    layout = Layout(*dirs) if dirs is not None else None
    receiver = None
    if layout is not None:
        staging = Staging(layout.state_dir.joinpath(*launch.TRANSFER_DIR), sec.update_max_bytes)
        receiver = ChunkReceiver(staging, sec.update_transfer_idle_s)
    return UpdateService(
        host, layout, keys, version=version, max_starts=sec.update_max_starts,
        deadline_s=sec.update_trial_s, receiver=receiver,
    )  # fmt: skip
