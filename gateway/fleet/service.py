"""The remote configuration feature of a running gateway: desired in, reported out, trial judged.

Plugged in through `gateway.host.Host` (docs/fleet.md):

- at start it publishes the reported document (retained, again at every connection)
  and records the audit event of a rollback `gateway run` did before the start;
- in a trial (the config was just switched), it publishes a `testing` report and
  commits once the broker hands that very report back (the gateway reached the broker,
  published its birth, and its subscriptions work), else at the deadline it restores
  the previous config and restarts;
- otherwise each desired document is checked (in a thread: loading a config imports
  drivers) and either refused (reported, audited, nothing changes) or switched to,
  then the process restarts to try it; a candidate that changes devices only is
  tried in process instead (only the drivers concerned restart, `devicechange`).

Only the newest desired document waits (a deque of one), so a flood costs nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from community_protocol.documents import config_reported_document, dumps
from community_protocol.enums import ConfigResult, GatewayEventType
from gateway.host import Host

from .devicechange import DeviceChange, device_change
from .events import gateway_event
from .state import FleetFiles, Outcome, State, Trial, sha256_of

__all__ = ["MAX_DESIRED_BYTES", "FleetService", "attach"]

log = logging.getLogger(__name__)

# A config with a few hundred devices is well under this; a bigger payload is refused
# unread.
MAX_DESIRED_BYTES = 1024 * 1024
# A document nobody trusted signed costs a state write, a report and an audit event at
# most this often; in between they are only counted: a broker account flooding the
# topic must not wear the SD card or fill the outbox.
UNTRUSTED_EVERY_S = 10.0
# A devices-only change commits once its restarted drivers ran this long without a
# crash (and the broker echoed the report), within the trial time.
DRIVERS_SETTLE_S = 2.0


class FleetService:
    """Remote configuration for one running gateway (see the module docstring)."""

    def __init__(self, host: Host, files: FleetFiles, trial: Trial | None) -> None:
        self.host = host
        self.files = files
        self.trial = trial
        self.identity = host.config.identity
        self.started = time.monotonic()
        self._desired: deque[bytes] = deque(maxlen=1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._testing: bytes | None = None  # the trial's report, awaited back from the broker
        self._echoed = False
        self._seen_reported: bytes | None = None
        self._untrusted_at: float | None = None  # monotonic time of the last one recorded
        self.untrusted_skipped = 0

    # ---- the uplink thread ------------------------------------------------------------

    def on_desired(self, payload: bytes) -> None:
        self._desired.append(payload[: MAX_DESIRED_BYTES + 1])
        self._poke()

    def on_reported(self, payload: bytes) -> None:
        # In process the echo can come back before `report` returned: kept for the check.
        self._seen_reported = payload
        if self._testing is not None and payload == self._testing:
            self._echoed = True
            self._poke()

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            loop.call_soon_threadsafe(wake.set)

    # ---- documents ---------------------------------------------------------------------

    def report(self, state: State, *, testing: Trial | None = None) -> bytes:
        """Publish the reported document of `state` (or of the trial); its bytes."""
        try:
            sha = sha256_of(self.files.config_bytes())
        except OSError:
            sha = state.running.sha256 or "0" * 64
        running, last = state.running, state.last
        if testing is not None:
            doc = self._doc(
                testing.version, sha, None, testing.signed_by, ConfigResult.TESTING,
                testing.version, testing.previous.version, [], "",
            )  # fmt: skip
        else:
            version = running.version
            reason = last.reason if last is not None else ""
            if running.sha256 and sha != running.sha256:
                version, reason = 0, "the config file was changed on site since it was applied"
            doc = self._doc(
                version,
                sha,
                running.applied_at,
                running.signed_by,
                last.result if last is not None else ConfigResult.APPLIED,
                last.desired_version if last is not None else None,
                last.previous_version if last is not None else running.previous_version,
                list(last.problems) if last is not None else [],
                reason,
            )
        payload = dumps(doc)
        self.host.publish_document(self.host.topics.config_reported, payload)
        return payload

    def _doc(
        self,
        version: int,
        sha: str,
        applied_at: str | None,
        signed_by: str | None,
        result: ConfigResult,
        desired: int | None,
        previous: int | None,
        problems: list[dict[str, str]],
        reason: str,
    ) -> dict[str, Any]:
        return config_reported_document(
            self.identity,
            version=version,
            sha256=sha,
            applied_at=applied_at,
            signed_by=signed_by,
            result=result,
            desired_version=desired,
            previous_version=previous,
            problems=problems,
            ts=datetime.now(UTC),
            clock=self.host.clock.state(),
            reason=reason,
        )

    async def audit(self, outcome: Outcome, running_version: int) -> None:
        """The `gateway.config` event of `outcome`, once it is durable in the outbox."""
        data: dict[str, Any] = {
            "result": str(outcome.result),
            "version": outcome.desired_version,
            "running_version": running_version,
            "previous_version": outcome.previous_version,
            "signed_by": outcome.signed_by,
            "key_id": outcome.key_id,
        }
        if outcome.reason:
            data["reason"] = outcome.reason
        if outcome.problems:
            data["problems"] = list(outcome.problems)
        item = gateway_event(self.host, GatewayEventType.CONFIG, data)
        await self.host.outbox.aput(item)

    # ---- the event loop ----------------------------------------------------------------

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        state = self.files.read_state()
        if self.trial is not None:
            if not await self._judge_trial(self.trial):
                return  # rolled back: the process restarts
            state = self.files.read_state()
        else:
            self.report(state)
            await self._audit_pending(state)
        while True:
            if not self._desired:
                await self._wake.wait()
                self._wake.clear()
                continue
            payload = self._desired.popleft()
            if await self._apply(payload):
                return  # switched: the process restarts to try it

    async def _audit_pending(self, state: State) -> None:
        # A rollback `gateway run` did before this start is audited now, once.
        if state.last is not None and not state.last.audited:
            await self.audit(state.last, state.running.version)
            self.files.write_state(replace(state, last=replace(state.last, audited=True)))

    async def _judge_trial(self, trial: Trial, undo: DeviceChange | None = None) -> bool:
        """Commit the trial when the broker echoes our report in time; else roll back.

        In process (`undo`: the devices to restore), the drivers it restarted must also
        run for DRIVERS_SETTLE_S without a crash; a rollback then restores the devices
        in process too, and the gateway runs on.
        """
        from .trial import commit, rollback

        assert self._wake is not None
        self._echoed = False
        self._testing = self.report(self.files.read_state(), testing=trial)
        if self._seen_reported == self._testing:
            self._echoed = True
        deadline = self.started + trial.trial_s
        settled = min(deadline, self.started + DRIVERS_SETTLE_S)
        failure = ""
        while not (self._echoed and (undo is None or time.monotonic() >= settled)):
            left = deadline - time.monotonic()
            if undo is not None:
                failure = _failure(self.host.driver_failures, undo.drivers)
                if failure:
                    break
                left = min(left, 0.2)  # a driver's crash wakes nobody: look again soon
            if deadline - time.monotonic() <= 0:
                break
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    await self._wake.wait()
            except TimeoutError:
                continue
            self._wake.clear()
        self._testing = None
        if undo is not None and not failure:
            failure = _failure(self.host.driver_failures, undo.drivers)
        if self._echoed and not failure:
            state = await asyncio.to_thread(commit, self.files, trial)
            self.trial = None
            self.report(state)
            assert state.last is not None
            await self.audit(state.last, state.running.version)
            self.files.write_state(replace(state, last=replace(state.last, audited=True)))
            return True
        if failure:
            reason = f"a driver of the new devices failed: {failure}"
        else:
            problem = self.host.broker_problem() or "no answer from the broker"
            reason = f"not back at the broker within {trial.trial_s:g} s: {problem}"
        state = await asyncio.to_thread(rollback, self.files, trial, reason)
        assert state.last is not None
        # Recorded now (the outbox survives the restart), reported after it.
        await self.audit(state.last, state.running.version)
        self.files.write_state(replace(state, last=replace(state.last, audited=True)))
        self.trial = None
        if undo is not None:
            await self.host.apply_devices(undo.previous, undo.drivers)
            self.report(self.files.read_state())
            return False
        self.host.request_restart(f"configuration version {trial.version} rolled back")
        return False

    async def _apply(self, payload: bytes) -> bool:
        """Check one desired document; True when it was switched to (restart follows)."""
        from .check import Candidate, check_desired
        from .trial import switch

        state = self.files.read_state()
        security = self.host.config.security
        digest = sha256_of(payload)
        last = state.last
        if last is not None and last.document_sha256 == digest:
            return False  # refused already: the retained document came back at a connection
        rolled_back = None
        if last is not None and last.result is ConfigResult.ROLLED_BACK:
            rolled_back = last.desired_version
        if len(payload) > MAX_DESIRED_BYTES:
            doc: Any = None
        else:
            try:
                doc = json.loads(payload)
            except ValueError:
                doc = None
        keys = await asyncio.to_thread(_load_keys, security.config_keys)
        verdict = await asyncio.to_thread(
            check_desired,
            doc,
            identity=self.identity,
            keys=keys,
            running=state.running,
            files=self.files,
            rolled_back=rolled_back,
        )
        if isinstance(verdict, Candidate):
            trial = await asyncio.to_thread(
                switch, self.files, verdict, state.running, security.config_trial_s
            )
            outcome = Outcome(
                ConfigResult.TESTING,
                trial.version,
                signed_by=trial.signed_by,
                key_id=trial.key_id,
                previous_version=state.running.version,
            )
            await self.audit(outcome, state.running.version)
            change = await asyncio.to_thread(device_change, self.host.loaded, self.files.config)
            if change is None:
                self.host.request_restart(f"trying configuration version {trial.version}")
                return True
            await self._try_in_process(trial, change)
            return False
        if verdict.quiet:
            log.debug("desired configuration ignored: %s", verdict.reason)
            return False
        if verdict.key_id is None:  # no trusted signature: possibly a flood
            now = time.monotonic()
            if self._untrusted_at is not None and now - self._untrusted_at < UNTRUSTED_EVERY_S:
                self.untrusted_skipped += 1
                return False
            self._untrusted_at = now
        log.warning("desired configuration version %s refused: %s", verdict.version, verdict.reason)
        outcome = Outcome(
            ConfigResult.REFUSED,
            verdict.version,
            reason=verdict.reason,
            problems=list(verdict.problems),
            signed_by=verdict.signed_by,
            key_id=verdict.key_id,
            previous_version=state.running.version,
            audited=True,
            document_sha256=digest,
        )
        await self.audit(outcome, state.running.version)
        state = State(state.running, outcome)
        self.files.write_state(state)
        self.report(state)
        return False

    async def _try_in_process(self, trial: Trial, change: DeviceChange) -> None:
        """Try a devices-only candidate without a restart (docs/fleet.md, "What restarts")."""
        # attempts 1: should the process die before the commit, its next start rolls
        # back, as after a crash in a trial of a restarted process.
        trial = replace(trial, attempts=1)
        await asyncio.to_thread(self.files.write_trial, trial)
        log.warning(
            "trying configuration version %d in process: drivers %s restart",
            trial.version,
            ", ".join(sorted(change.drivers)) or "none",
        )
        self.trial = trial
        self.started = time.monotonic()
        await self.host.apply_devices(change.candidate, change.drivers)
        await self._judge_trial(trial, undo=change)

    def health(self) -> dict[str, Any]:
        """The `config` part of the health message."""
        state = self.files.read_state()
        return {
            "version": state.running.version,
            "trial": None if self.trial is None else self.trial.version,
            "last_result": None if state.last is None else str(state.last.result),
            "untrusted_skipped": self.untrusted_skipped,
        }


def _failure(failures: Mapping[str, str], drivers: set[str]) -> str:
    return next((failures[name] for name in sorted(drivers) if name in failures), "")


def _load_keys(paths: list[Any]) -> list[Any]:
    from community_protocol.ed25519 import load_public_key

    out = []
    for path in paths:
        try:
            out.append(load_public_key(path))
        except ValueError as exc:  # validated at start; a file removed since is skipped
            log.error("configuration key %s: %s", path, exc)
    return out


def attach(host: Host) -> FleetService:
    """Plug remote configuration into `host`; a trial `gateway run` started is judged."""
    files = FleetFiles(host.config_path)
    trial = files.read_trial()
    if trial is not None and trial.attempts < 1:
        trial = None  # switched but not started through `gateway run`: it decides next
    service = FleetService(host, files, trial)
    topics = host.topics
    host.watch(topics.config_desired, service.on_desired)
    host.watch(topics.config_reported, service.on_reported)
    host.add_service("fleet", service.run)
    host.add_health_part("config", service.health)
    return service
