"""Texts the on-call list about alarms through a GSM/4G modem: works with the uplink down.

An alarm listener (`observe`) turns each alarm document into SMS for the people whose
`from_level` the alarm has reached: everyone at level 0 when it is raised, and again,
with the managers, at each escalation.  Acknowledging the alarm cancels what is still
waiting.  Each SMS is recorded before it is tried (`SmsStore`), so a restart neither
loses nor repeats one; a failure is retried with a growing delay, within
`retry_for_s` of running time, and the modem is prepared again after any failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from gateway.host import Host
from gateway.sdk.backoff import doubled

from .modem import Modem, ModemError
from .pdu import encode_submit
from .settings import Recipient, SmsConfig
from .store import SmsRecord, SmsState, SmsStore
from .text import alarm_text

__all__ = ["SmsNotifier", "attach", "recipients_for"]

log = logging.getLogger(__name__)

# Alarm documents waiting for the notifier's loop; an alarm storm beyond this drops the
# oldest (counted in health): they are repeats of alarms already queued.
_MAX_QUEUED_DOCS = 1000
_MAX_DELAY_S = 300.0
_IDLE_WAKE_S = 60.0  # purge and retry even when nothing happens
_MODEM_PROBLEM = "SMS modem not usable"
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one alarm document asks of the notifier."""

    alarm_id: str
    cancel: bool
    level: int
    people: tuple[Recipient, ...]


def recipients_for(doc: dict[str, Any], cfg: SmsConfig) -> _Plan | None:
    """Who is texted for this alarm document, or a cancel; None when it is not for SMS."""
    alarm_id = str(doc["alarm_id"])
    if doc["acknowledged"] or doc["state"] == "closed":
        return _Plan(alarm_id, cancel=True, level=0, people=())
    if doc["severity"] not in cfg.severities:
        return None
    level = int(doc.get("escalation", 0))
    people = tuple(p for p in cfg.on_call if p.from_level <= level)
    return _Plan(alarm_id, cancel=False, level=level, people=people) if people else None


def _delay(attempts: int, base_s: float) -> float:
    return doubled(base_s, _MAX_DELAY_S, attempts)


class SmsNotifier:
    """The notifier service of one gateway; `observe` is called on the event loop."""

    def __init__(
        self,
        cfg: SmsConfig,
        *,
        site_name: str,
        db_path: Path,
        zone: tzinfo,
        modem: Modem | None = None,
        retry_base_s: float = 5.0,
    ) -> None:
        self.cfg = cfg
        self.site_name = site_name
        self.zone = zone
        self.store = SmsStore(db_path)
        self.modem = modem or Modem(
            cfg.port,
            cfg.baudrate,
            pin_file=cfg.pin_file,
            command_timeout_s=cfg.command_timeout_s,
            send_timeout_s=cfg.send_timeout_s,
        )
        self.retry_base_s = retry_base_s
        self._docs: deque[dict[str, Any]] = deque()
        self._wake: asyncio.Event | None = None
        self._ready = False
        self._modem_failures = 0
        self._modem_retry_at = 0.0
        self._retry_at: dict[int, float] = {}
        self._first_try: dict[int, float] = {}
        self._reference = random.randrange(256)
        self._last_problem = ""
        self.counts = {"sent": 0, "failed": 0, "cancelled": 0, "dropped_docs": 0}
        self.modem_state = "not started"
        self.pending = 0
        self._worker: ThreadPoolExecutor | None = None

    # ---- the alarm listener ------------------------------------------------------------

    def observe(self, doc: dict[str, Any]) -> None:
        """Take an alarm document; the loop stores and sends (never blocks the caller)."""
        if len(self._docs) >= _MAX_QUEUED_DOCS:
            self._docs.popleft()
            self.counts["dropped_docs"] += 1
        self._docs.append(doc)
        if self._wake is not None:
            self._wake.set()

    def health(self) -> dict[str, Any]:
        """The notifier's part of the health document (no phone numbers)."""
        return {"modem": self.modem_state, "pending": self.pending, **self.counts}

    # ---- the service -------------------------------------------------------------------

    async def run(self) -> None:
        """Store and send until cancelled."""
        self._wake = asyncio.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notify-sms")
        try:
            await self._io(self.store.open)
            await self._io(self.store.purge)
            while True:
                await self._take_docs()
                await self._send_due()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._wait_s()):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            # Queued behind a call a cancellation left running: closing the SQLite
            # connection or the serial port under it crashes the process.
            await self._io(self._close)
            self._worker.shutdown(wait=False)

    async def _io(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        """Run blocking store or modem work on the notifier's one thread, in order.

        Not asyncio.to_thread: a cancelled await leaves its call running, and the
        default executor would run the next call beside it on the same connection.
        """
        if self._worker is None:
            raise RuntimeError("SMS notifier is not running")
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._worker, call)

    def _close(self) -> None:
        self.modem.close()
        self.store.close()

    def _wait_s(self) -> float:
        now = time.monotonic()
        due = [t for t in self._retry_at.values()]
        if self.pending and not self._ready:
            due.append(self._modem_retry_at)
        return max(0.05, min([_IDLE_WAKE_S, *(t - now for t in due)]))

    async def _take_docs(self) -> None:
        while self._docs:
            doc = self._docs.popleft()
            plan = recipients_for(doc, self.cfg)
            if plan is not None:
                await self._io(self._apply, plan, doc)

    def _apply(self, plan: _Plan, doc: dict[str, Any]) -> None:
        if plan.cancel:
            n = self.store.cancel(plan.alarm_id)
            if n:
                self.counts["cancelled"] += n
                log.info("alarm %s acknowledged: %d SMS not sent", plan.alarm_id, n)
            return
        for person in plan.people:
            text = alarm_text(doc, site_name=self.site_name, lang=person.language, zone=self.zone)
            if self.store.add(plan.alarm_id, plan.level, person.name, text):
                log.info(
                    "alarm %s level %d: SMS to %s queued", plan.alarm_id, plan.level, person.name
                )

    async def _send_due(self) -> None:
        pending = await self._io(self.store.pending)
        self.pending = len(pending)
        now = time.monotonic()
        for record in pending:
            if self._retry_at.get(record.id, 0.0) > now:
                continue
            if not await self._prepare():
                return  # the modem is not usable: everything waits for it
            await self._send(record)

    async def _prepare(self) -> bool:
        if self._ready:
            return True
        if time.monotonic() < self._modem_retry_at:
            return False
        try:
            state = await self._io(self.modem.prepare)
        except ModemError as exc:
            await self._io(self.modem.close)
            self._modem_failures += 1
            self._modem_retry_at = time.monotonic() + _delay(
                self._modem_failures - 1, self.retry_base_s
            )
            self._problem(f"{_MODEM_PROBLEM}: {exc.reason}")
            self.modem_state = exc.reason
            return False
        self._ready, self._modem_failures = True, 0
        self.modem_state = state
        if self._last_problem.startswith(_MODEM_PROBLEM):
            log.info("SMS modem ready again: %s", state)
            self._last_problem = ""
        return True

    async def _send(self, record: SmsRecord) -> None:
        person = next((p for p in self.cfg.on_call if p.name == record.recipient), None)
        if person is None:
            await self._give_up(record, "recipient no longer in notify.sms.on_call")
            return
        self._reference = (self._reference + 1) % 256
        parts = encode_submit(
            person.phone, record.text, reference=self._reference, max_parts=self.cfg.max_parts
        )
        first = self._first_try.setdefault(record.id, time.monotonic())
        try:
            refs = await self._io(self.modem.send, parts)
        except ModemError as exc:
            # Whatever failed, talk the modem through its set-up again before the next try.
            self._ready = False
            await self._io(self.modem.close)
            if not exc.transient or time.monotonic() - first > self.cfg.retry_for_s:
                await self._give_up(record, exc.reason)
                return
            await self._io(self.store.attempt_failed, record.id, exc.reason)
            self._retry_at[record.id] = time.monotonic() + _delay(
                record.attempts, self.retry_base_s
            )
            self._problem(f"SMS for alarm {record.alarm_id} to {person.name} failed: {exc.reason}")
            return
        await self._io(self.store.finish, record.id, SmsState.SENT, refs=",".join(map(str, refs)))
        self._forget(record.id)
        self._last_problem = ""
        self.counts["sent"] += 1
        log.info(
            "alarm %s level %d: SMS sent to %s (%d part%s)",
            record.alarm_id,
            record.level,
            person.name,
            len(parts),
            "" if len(parts) == 1 else "s",
        )

    async def _give_up(self, record: SmsRecord, reason: str) -> None:
        await self._io(self.store.finish, record.id, SmsState.FAILED, error=reason)
        self._forget(record.id)
        self.counts["failed"] += 1
        log.error(
            "alarm %s level %d: SMS to %s given up: %s",
            record.alarm_id,
            record.level,
            record.recipient,
            reason,
        )

    def _forget(self, sms_id: int) -> None:
        self.pending = max(0, self.pending - 1)
        self._retry_at.pop(sms_id, None)
        self._first_try.pop(sms_id, None)

    def _problem(self, text: str) -> None:
        """Log a failure once, not at every retry of the same failure."""
        if text != self._last_problem:
            log.warning("%s (retrying)", text)
            self._last_problem = text


def attach(
    host: Host,
    cfg: SmsConfig,
    *,
    listen: Callable[[Callable[[dict[str, Any]], None]], object],
) -> SmsNotifier:
    """A notifier listening to the alarms (`listen`), run as a service of `host`."""
    config = host.config
    # The texts show local times in the building's zone: the web's, else the host's.
    zone = (
        ZoneInfo(config.web.timezone) if config.web.timezone else datetime.now().astimezone().tzinfo
    )
    assert zone is not None  # astimezone() always gives a zone
    notifier = SmsNotifier(
        cfg,
        site_name=config.site.name or config.site.id,
        db_path=cfg.db_path or config.gateway.state_dir / "notify.db",
        zone=zone,
    )
    listen(notifier.observe)
    host.add_service("notify.sms", notifier.run)
    host.add_health_part("notify", notifier.health)
    return notifier
