"""The alarm state machine, pure: signals, acknowledgements and a clock in, changes out.

No I/O and no clock of its own: every call takes `now` (an Instant: the wall time that
stamps documents, and the run-clock time that drives the timers), so tests drive time by
hand.  Timers never look at the wall clock: an NTP step cannot fire or delay them.
The engine (engine.py) stores the changes, publishes them and notifies listeners.

- A raise signal opens an alarm for (device, type), or repeats the open one (count,
  last seen).  A raise during the damping time of a pending clear cancels the clear:
  a flapping input stays one alarm without a stream of transitions.
- A clear signal takes effect after `damping_s` without a new raise; then an
  acknowledged alarm closes and an unacknowledged one becomes `cleared` (it still
  needs a person).  A raise of a `cleared` alarm makes it active again.
- An acknowledgement closes a cleared alarm, or one whose rule clears on `ack`;
  otherwise the alarm becomes `acknowledged`.  A second one changes nothing.
- An unacknowledged alarm escalates one level per its severity's interval, up to
  `max_level`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Literal

from gateway.sdk.model import Kind

from .model import Ack, Alarm, AlarmState, Change, DeviceInfo, Instant, Via
from .rules import Rule, RuleSet
from .settings import EscalationConfig

__all__ = ["AckStatus", "AlarmBook"]

AckStatus = Literal["accepted", "already_acknowledged", "unknown"]


class AlarmBook:
    """The open alarms and the rules that move them."""

    def __init__(
        self,
        rules: RuleSet,
        escalation: EscalationConfig,
        damping_s: float,
        new_id: Callable[[], str],
        open_alarms: Iterable[Alarm] = (),
    ) -> None:
        self.rules = rules
        self.escalation = escalation
        self.damping = damping_s
        self._new_id = new_id
        self._open: dict[str, Alarm] = {}
        self._by_key: dict[tuple[str, str], str] = {}
        for alarm in open_alarms:
            if alarm.is_open:
                self._open[alarm.id] = alarm
                self._by_key[alarm.key] = alarm.id

    def bound_timers(self, now: Instant) -> None:
        """Cut restored timers to the configured times from `now`.

        A timer never runs longer than its configured time from a restart: the config
        may have shortened it, and an old record's wall-clock deadline read while the
        clock said 1970 would otherwise lie decades away.
        """
        for alarm in self._open.values():
            after = self.escalation.after_s(alarm.severity)
            if alarm.escalate_due is not None:
                alarm.escalate_due = (
                    None if after is None else min(alarm.escalate_due, now.run + after)
                )
            if alarm.clear_due is not None:
                alarm.clear_due = min(alarm.clear_due, now.run + self.damping)

    # ---- queries ------------------------------------------------------------------

    def open_alarms(self) -> list[Alarm]:
        return list(self._open.values())

    def get(self, alarm_id: str) -> Alarm | None:
        return self._open.get(alarm_id)

    def next_deadline(self) -> float | None:
        """When (run clock) `tick` next has something to do (an escalation or a damped clear)."""
        times = [
            t
            for a in self._open.values()
            for t in (a.escalate_due if a.ack is None else None, a.clear_due)
            if t is not None
        ]
        return min(times, default=None)

    def output_wanted(self) -> bool:
        """True while some escalated alarm waits for a person (the office buzzer is on)."""
        return any(a.ack is None and a.escalation > 0 for a in self._open.values())

    # ---- inputs -------------------------------------------------------------------

    def signal(
        self, device: DeviceInfo, kind_signal: str, now: Instant, *, clears: str | None = None
    ) -> list[Change]:
        """A device's event type, or `offline`/`online`: raise and clear what it means.

        `clears` narrows a clear signal to the alarms raised by that signal: the
        inactivity check's `elderly.cleared` says `clears: elderly.inactivity`, and
        must not clear the same resident's SOS.
        """
        kind = Kind(device.kind)
        changes = self._clear(device.id, kind_signal, now, clears)
        rule = self.rules.raising(kind_signal, device.id, kind)
        if rule is not None:
            changes += self._raise(rule, device, kind_signal, now)
        return changes

    def acknowledge(
        self, alarm_id: str, by: str, note: str, via: Via, now: Instant
    ) -> tuple[AckStatus, Alarm | None, list[Change]]:
        """Acknowledge an open alarm; "unknown" covers closed alarms too (the caller looks)."""
        alarm = self._open.get(alarm_id)
        if alarm is None:
            return "unknown", None, []
        if alarm.ack is not None:
            return "already_acknowledged", alarm.copy(), []
        before = alarm.state
        alarm.ack = Ack(by, note, now.wall, via)
        alarm.escalate_due = None
        rule = self.rules.by_name(alarm.rule)
        if alarm.state is AlarmState.CLEARED:
            self._close(alarm, now)
            what = "closed"
        elif rule is None or rule.clears_on_ack:
            alarm.cleared_at = now.wall
            alarm.clear_due = alarm.clear_signal_at = None
            self._close(alarm, now)
            what = "closed"
        else:
            alarm.state = AlarmState.ACKNOWLEDGED
            what = "acknowledged"
        self._touch(alarm, now)
        return "accepted", alarm.copy(), [Change(alarm.copy(), what, before)]

    def tick(self, now: Instant) -> list[Change]:
        """Apply the clears whose damping time is over, and the escalations due."""
        changes: list[Change] = []
        for alarm in list(self._open.values()):
            if alarm.clear_due is not None and alarm.clear_due <= now.run:
                at = alarm.clear_signal_at or now.wall
                alarm.clear_due = alarm.clear_signal_at = None
                changes.append(self._apply_clear(alarm, at, now))
                if not alarm.is_open:
                    continue
            due = alarm.escalate_due
            if alarm.ack is None and due is not None and due <= now.run:
                changes.append(self._escalate(alarm, now))
        return changes

    # ---- transitions --------------------------------------------------------------

    def _raise(self, rule: Rule, device: DeviceInfo, cause: str, now: Instant) -> list[Change]:
        existing = self._by_key.get((device.id, str(rule.type)))
        if existing is not None:
            alarm = self._open[existing]
            before = alarm.state
            alarm.count += 1
            alarm.last_seen_at = now.wall
            what = "repeated"
            if alarm.clear_due is not None:
                # Flapping: the clear never took effect, so nothing else changes.
                alarm.clear_due = alarm.clear_signal_at = None
                what = "repeated_damped"
            elif alarm.state is AlarmState.CLEARED:
                alarm.state = AlarmState.ACTIVE
                alarm.cleared_at = None
                what = "reactivated"
            self._touch(alarm, now)
            return [Change(alarm.copy(), what, before)]
        after = self.escalation.after_s(rule.severity)
        alarm = Alarm(
            id=self._new_id(),
            type=rule.type,
            severity=rule.severity,
            device=device,
            cause=cause,
            rule=rule.name,
            raised_at=now.wall,
            updated_at=now.wall,
            last_seen_at=now.wall,
            synced=now.synced,
            escalate_due=None if after is None else now.run + after,
        )
        self._open[alarm.id] = alarm
        self._by_key[alarm.key] = alarm.id
        return [Change(alarm.copy(), "raised", None)]

    def _clear(
        self, device_id: str, signal: str, now: Instant, clears: str | None = None
    ) -> list[Change]:
        changes = []
        for alarm in list(self._open.values()):
            if alarm.device.id != device_id or alarm.state is AlarmState.CLEARED:
                continue
            if alarm.clear_due is not None:
                continue  # already waiting out the damping time
            rule = self.rules.by_name(alarm.rule)
            # An alarm whose rule is gone from the config (restart with a new config)
            # has no clear signal left: the person who acknowledges it clears it.
            if rule is None or signal not in rule.clear_on:
                continue
            if clears is not None and clears not in rule.raise_on:
                continue
            if self.damping:
                alarm.clear_signal_at = now.wall
                alarm.synced = alarm.synced and now.synced
                alarm.clear_due = now.run + self.damping
                changes.append(Change(alarm.copy(), "clear_pending", alarm.state, publish=False))
            else:
                changes.append(self._apply_clear(alarm, now.wall, now))
        return changes

    def _apply_clear(self, alarm: Alarm, at: datetime, now: Instant) -> Change:
        before = alarm.state
        alarm.cleared_at = at
        if alarm.ack is not None:
            self._close(alarm, now)
            what = "closed"
        else:
            alarm.state = AlarmState.CLEARED
            what = "cleared"
        self._touch(alarm, now)
        return Change(alarm.copy(), what, before)

    def _close(self, alarm: Alarm, now: Instant) -> None:
        alarm.state = AlarmState.CLOSED
        alarm.closed_at = now.wall
        alarm.escalate_due = None
        del self._open[alarm.id]
        self._by_key.pop(alarm.key, None)

    def _escalate(self, alarm: Alarm, now: Instant) -> Change:
        before = alarm.state
        alarm.escalation += 1
        after = self.escalation.after_s(alarm.severity)
        if alarm.escalation >= self.escalation.max_level or after is None:
            alarm.escalate_due = None
        else:
            alarm.escalate_due = now.run + after
        self._touch(alarm, now)
        return Change(alarm.copy(), "escalated", before)

    @staticmethod
    def _touch(alarm: Alarm, now: Instant) -> None:
        alarm.rev += 1
        alarm.updated_at = now.wall
        # Sticky: one timestamp from an unsynced clock makes the document's times doubtful.
        alarm.synced = alarm.synced and now.synced
