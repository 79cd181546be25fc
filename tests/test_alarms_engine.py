"""The alarm state machine with an injected clock, the store across restarts, and the engine's glue."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from community_protocol.schemas import validator
from community_protocol.topics import Topics
from gateway.alarms.book import AlarmBook
from gateway.alarms.engine import AlarmEngine, OutputSwitch, TimeSource, UnknownAlarm
from gateway.alarms.model import Alarm, AlarmState, Change, DeviceInfo, Instant, Via
from gateway.alarms.rules import AlarmType, Rule, RuleSet, Severity
from gateway.alarms.settings import AlarmsConfig, EscalationConfig
from gateway.alarms.store import AlarmStore
from gateway.config import ClockCheck, SyncMode
from gateway.sdk.clock import Clock, RunClock, RunMark
from gateway.sdk.model import ClockState, DeviceRef, Event, EventType, Identity, Kind, Location
from gateway.storage.outbox import Consumer, Outbox, Row
from tests.driverkit import until
from tests.peers import wait_for

T0 = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)
SMOKE = DeviceInfo("smoke-1", "smoke", "Stairwell 2", {"building": "2", "floor": "2"})
SMOKE_2 = DeviceInfo("smoke-2", "smoke", "", {"building": "2"})
SOS = DeviceInfo("sos-1", "elderly_alarm", "Pendant 1-201", {"building": "1", "unit": "201"})
DOOR = DeviceInfo("door-1", "door", "Lobby", {"building": "1"})
IDENTITY = Identity("site-a", "gw-1")


@dataclass
class ManualClock:
    """The engine's clocks, set by hand: `wall` may jump, `mono` only moves forward."""

    wall_at: datetime = T0
    mono: float = 1000.0
    synced: bool = True
    boot_id: str | None = "boot-a"

    def wall(self) -> datetime:
        return self.wall_at

    def monotonic(self) -> float:
        return self.mono

    def state(self) -> ClockState:
        return ClockState.SYNCED if self.synced else ClockState.UNSYNCED

    def advance(self, seconds: float) -> None:
        self.wall_at += timedelta(seconds=seconds)
        self.mono += seconds


def s(seconds: float, *, synced: bool = True) -> Instant:
    """`seconds` after T0, on the wall clock and on the run clock alike."""
    return Instant(w(seconds), seconds, synced)


def w(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def book(
    damping_s: float = 0,
    *,
    new_id: Callable[[], str] | None = None,
    restored: Iterable[Alarm] = (),
    **escalation: Any,
) -> AlarmBook:
    """A book with the default rules; ids tok-1, tok-2, ... unless `new_id` is given."""
    ids = new_id or map("tok-{}".format, itertools.count(1)).__next__
    return AlarmBook(RuleSet.merged(()), EscalationConfig(**escalation), damping_s, ids, restored)


def whats(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.what, str(c.alarm.state)) for c in changes]


# ---- rules --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "signal", "type_", "severity"),
    [
        (SMOKE, "smoke.alarm", AlarmType.FIRE, Severity.CRITICAL),
        (SOS, "elderly.sos", AlarmType.CARE, Severity.CRITICAL),
        (SOS, "elderly.fall", AlarmType.CARE, Severity.CRITICAL),
        (SOS, "elderly.inactivity", AlarmType.WELLNESS, Severity.HIGH),
        (DOOR, "door.forced", AlarmType.SECURITY, Severity.HIGH),
        (DOOR, "door.held_open", AlarmType.SECURITY, Severity.MEDIUM),
        (DOOR, "offline", AlarmType.MAINTENANCE, Severity.LOW),
        (SMOKE, "device.tamper", AlarmType.MAINTENANCE, Severity.LOW),
    ],
)
def test_default_rules_turn_signals_into_alarms(
    device: DeviceInfo, signal: str, type_: AlarmType, severity: Severity
) -> None:
    [change] = book().signal(device, signal, s(0))
    alarm = change.alarm
    assert (change.what, alarm.type, alarm.severity, alarm.cause) == (
        "raised",
        type_,
        severity,
        signal,
    )
    assert alarm.state is AlarmState.ACTIVE and alarm.rev == 1 and alarm.count == 1


@pytest.mark.parametrize(
    "signal", ["door.opened", "smoke.cleared", "online", "meter.counter_anomaly"]
)
def test_signals_without_a_rule_raise_nothing(signal: str) -> None:
    assert book().signal(DOOR, signal, s(0)) == []


def test_config_rules_replace_defaults_by_name_and_can_be_limited_to_kinds() -> None:
    cfg = AlarmsConfig.model_validate(
        {
            "rules": [
                {"name": "fire", "type": "fire", "severity": "high",
                 "raise_on": ["smoke.alarm"], "clear_on": ["smoke.cleared"]},
                {"name": "offline", "type": "maintenance", "severity": "low",
                 "raise_on": ["offline"], "clear_on": ["online"], "kinds": ["smoke"]},
            ]
        }
    )  # fmt: skip
    b = AlarmBook(cfg.rule_set(), cfg.escalation, 0, lambda: "t-1")
    assert b.signal(DOOR, "offline", s(0)) == []
    [raised] = b.signal(SMOKE, "smoke.alarm", s(0))
    assert raised.alarm.severity is Severity.HIGH


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({"raise_on": ["smoke.smouldering"], "clear_on": ["ack"]}, "is not a signal"),
        ({"raise_on": ["smoke.alarm"], "clear_on": ["offline"]}, "is not a signal"),
        ({"raise_on": ["smoke.alarm"], "clear_on": ["smoke.alarm"]}, "both raises and clears"),
    ],
)
def test_bad_rules_are_refused_saying_why(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Rule.model_validate({"name": "x", "type": "fire", "severity": "low", **rule})


# ---- repeats, damping, state paths --------------------------------------------------


def test_repeats_update_count_and_last_seen_of_the_one_alarm_per_device_and_type() -> None:
    b = book()
    [first] = b.signal(SMOKE, "smoke.alarm", s(0))
    [again] = b.signal(SMOKE, "smoke.alarm", s(5))
    [other] = b.signal(SMOKE_2, "smoke.alarm", s(6))
    assert again.what == "repeated" and again.alarm.id == first.alarm.id
    assert (again.alarm.count, again.alarm.last_seen_at, again.alarm.rev) == (2, w(5), 2)
    assert again.alarm.raised_at == w(0)
    assert other.alarm.id != first.alarm.id
    # Tamper and offline are both maintenance: one alarm for the device.
    [tamper] = b.signal(DOOR, "device.tamper", s(7))
    [offline] = b.signal(DOOR, "offline", s(8))
    assert offline.alarm.id == tamper.alarm.id and offline.alarm.count == 2
    assert len(b.open_alarms()) == 3


def test_active_acknowledged_cleared_closed() -> None:
    b = book()
    [raised] = b.signal(SMOKE, "smoke.alarm", s(0))
    status, alarm, changes = b.acknowledge(
        raised.alarm.id, "staff-li", "on my way", Via.MQTT, s(10)
    )
    assert status == "accepted" and whats(changes) == [("acknowledged", "acknowledged")]
    assert alarm is not None and alarm.ack is not None and alarm.ack.by == "staff-li"
    assert whats(b.signal(SMOKE, "smoke.cleared", s(20))) == [("closed", "closed")]
    assert b.open_alarms() == []


def test_active_cleared_acknowledged_closed() -> None:
    b = book()
    [raised] = b.signal(SMOKE, "smoke.alarm", s(0))
    [cleared] = b.signal(SMOKE, "smoke.cleared", s(30))
    assert (cleared.what, cleared.alarm.state, cleared.alarm.cleared_at) == (
        "cleared", AlarmState.CLEARED, w(30),
    )  # fmt: skip
    assert len(b.open_alarms()) == 1, "a stopped smoke alarm still needs a person"
    _, alarm, changes = b.acknowledge(raised.alarm.id, "staff-li", "", Via.CLI, s(40))
    assert whats(changes) == [("closed", "closed")]
    assert alarm is not None and alarm.closed_at == w(40) and alarm.rev == 3


def test_rules_that_clear_on_ack_close_when_acknowledged() -> None:
    b = book()
    [sos] = b.signal(SOS, "elderly.sos", s(0))
    _, alarm, changes = b.acknowledge(sos.alarm.id, "staff-li", "", Via.WEB, s(5))
    assert whats(changes) == [("closed", "closed")]
    assert alarm is not None and alarm.cleared_at == w(5)


def test_a_second_ack_changes_nothing_and_says_already_acknowledged() -> None:
    b = book()
    [raised] = b.signal(SMOKE, "smoke.alarm", s(0))
    b.acknowledge(raised.alarm.id, "staff-li", "", Via.MQTT, s(1))
    status, alarm, changes = b.acknowledge(raised.alarm.id, "staff-wu", "", Via.MQTT, s(2))
    assert (status, changes) == ("already_acknowledged", [])
    assert alarm is not None and alarm.ack is not None and alarm.ack.by == "staff-li"
    assert b.acknowledge("tok-99", "staff-li", "", Via.MQTT, s(3))[0] == "unknown"


def test_a_cleared_alarm_raised_again_is_active_again_not_a_new_alarm() -> None:
    b = book()
    [raised] = b.signal(SMOKE, "smoke.alarm", s(0))
    b.signal(SMOKE, "smoke.cleared", s(1))
    [again] = b.signal(SMOKE, "smoke.alarm", s(2))
    assert (again.what, again.alarm.id, again.alarm.state) == (
        "reactivated", raised.alarm.id, AlarmState.ACTIVE,
    )  # fmt: skip
    assert again.alarm.cleared_at is None


def test_flapping_input_is_damped_into_one_alarm_without_transitions() -> None:
    b = book(damping_s=10)
    [raised] = b.signal(SMOKE, "smoke.alarm", s(0))
    changes: list[Change] = []
    for k in range(5):  # cleared and raised again every 2 s
        changes += b.signal(SMOKE, "smoke.cleared", s(1 + 2 * k))
        changes += b.tick(s(2 + 2 * k))
        changes += b.signal(SMOKE, "smoke.alarm", s(2 + 2 * k))
    published = [c for c in changes if c.publish]
    assert {c.what for c in published} == {"repeated_damped"}
    assert {c.alarm.state for c in changes} == {AlarmState.ACTIVE}
    assert {c.alarm.id for c in changes} == {raised.alarm.id}
    # The last clear, left alone for the damping time, takes effect with its own time.
    assert [c.publish for c in b.signal(SMOKE, "smoke.cleared", s(20))] == [False]
    assert b.tick(s(29)) == []
    [cleared] = b.tick(s(30))
    assert (cleared.what, cleared.alarm.cleared_at) == ("cleared", w(20))


def test_a_clear_that_names_what_it_clears_leaves_other_alarms_of_the_device() -> None:
    b = book()
    b.signal(SOS, "elderly.sos", s(0))
    b.signal(SOS, "elderly.inactivity", s(1))
    # The inactivity check's all-clear: the resident moved; the SOS still stands.
    [cleared] = b.signal(SOS, "elderly.cleared", s(2), clears="elderly.inactivity")
    assert (cleared.alarm.type, cleared.what) == (AlarmType.WELLNESS, "cleared")
    [care] = [a for a in b.open_alarms() if a.state is AlarmState.ACTIVE]
    assert care.type is AlarmType.CARE
    # The pendant reset at the device clears what it raised.
    assert [c.alarm.type for c in b.signal(SOS, "elderly.cleared", s(3))] == [AlarmType.CARE]


# ---- escalation -------------------------------------------------------------------


def test_unacknowledged_alarms_escalate_per_severity_up_to_the_max_level() -> None:
    b = book(critical=60, high=120, max_level=2)
    [fire] = b.signal(SMOKE, "smoke.alarm", s(0))
    b.signal(DOOR, "door.forced", s(0))
    b.signal(DOOR, "offline", s(0))  # low: never escalates by default
    assert b.next_deadline() == 60
    assert not b.output_wanted()
    assert b.tick(s(59)) == []
    [first] = b.tick(s(60))
    assert (first.what, first.alarm.id, first.alarm.escalation) == ("escalated", fire.alarm.id, 1)
    assert b.output_wanted()
    levels = [(c.alarm.type, c.alarm.escalation) for c in b.tick(s(120))]
    assert sorted(levels) == [(AlarmType.FIRE, 2), (AlarmType.SECURITY, 1)]
    later = b.tick(s(10_000))
    assert [c.alarm.type for c in later] == [AlarmType.SECURITY]
    fire_now = b.get(fire.alarm.id)
    assert fire_now is not None and fire_now.escalation == 2, "max_level caps it"


def test_acknowledging_stops_escalation_and_turns_the_output_off() -> None:
    b = book(critical=60)
    [fire] = b.signal(SMOKE, "smoke.alarm", s(0))
    b.tick(s(60))
    assert b.output_wanted()
    b.acknowledge(fire.alarm.id, "staff-li", "", Via.MQTT, s(61))
    assert not b.output_wanted()
    assert b.tick(s(1000)) == [] and b.next_deadline() is None


def test_a_cleared_but_unacknowledged_alarm_keeps_escalating() -> None:
    b = book(critical=60)
    b.signal(SMOKE, "smoke.alarm", s(0))
    b.signal(SMOKE, "smoke.cleared", s(10))
    assert [c.what for c in b.tick(s(60))] == ["escalated"]


# ---- documents --------------------------------------------------------------------


def test_documents_of_every_state_match_the_schema() -> None:
    b = book(critical=60)
    docs = []
    [raised] = b.signal(SMOKE, "smoke.alarm", s(0))
    docs.append(raised.alarm.document(IDENTITY))
    docs += [c.alarm.document(IDENTITY) for c in b.tick(s(60))]
    docs += [c.alarm.document(IDENTITY) for c in b.signal(SMOKE, "smoke.cleared", s(70))]
    docs += [
        c.alarm.document(IDENTITY)
        for c in b.acknowledge(raised.alarm.id, "staff-li", "ok", Via.CLI, s(80))[2]
    ]
    [sos] = b.signal(SOS, "elderly.sos", s(0))
    ack = b.acknowledge(sos.alarm.id, "staff-wu", "", Via.WEB, s(1))[1]
    assert ack is not None
    docs.append(ack.document(IDENTITY))
    assert [d["state"] for d in docs] == ["active", "active", "cleared", "closed", "closed"]
    for doc in docs:
        validator("alarm").validate(doc)
    assert [d["rev"] for d in docs[:4]] == [1, 2, 3, 4]
    assert docs[0]["device"] == SMOKE.as_dict()


# ---- store and restarts -----------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AlarmStore]:
    st = AlarmStore(tmp_path / "alarms.db")
    st.open()
    yield st
    st.close()


def test_ids_are_a_token_and_a_counter_that_survives_reopening(tmp_path: Path) -> None:
    st = AlarmStore(tmp_path / "alarms.db")
    st.open()
    b = book(new_id=st.new_id)
    st.save(b.signal(SMOKE, "smoke.alarm", s(0)))
    st.save(b.signal(SMOKE_2, "smoke.alarm", s(0)))
    token = st.token
    st.close()
    st.open()
    b = book(new_id=st.new_id, restored=st.open_alarms())
    [third] = b.signal(DOOR, "door.forced", s(1))
    st.save([third])
    assert third.alarm.id == f"{token}-3"
    assert len(token) == 6 and token.isalnum()
    other = AlarmStore(tmp_path / "other.db")
    other.open()
    assert other.token != token, "a new database gets a new token"
    other.close()
    st.close()


def test_reopened_store_restores_open_alarms_with_their_timers(store: AlarmStore) -> None:
    b = book(10, new_id=store.new_id, critical=60)
    [fire] = b.signal(SMOKE, "smoke.alarm", s(0))
    store.save([fire])
    store.save(b.tick(s(60)))
    store.save(b.signal(SMOKE, "smoke.cleared", s(70)))  # damping: clear due at 80
    [sos] = b.signal(SOS, "elderly.sos", s(1))
    store.save([sos])
    store.save(b.acknowledge(sos.alarm.id, "staff-li", "", Via.MQTT, s(2))[2])
    # The process dies; a new one opens the store.
    again = book(10, new_id=store.new_id, restored=store.open_alarms(), critical=60)
    [restored] = again.open_alarms()
    assert (restored.id, restored.escalation, restored.rev) == (fire.alarm.id, 1, 2)
    assert restored.clear_due == 80 and restored.escalate_due == 120
    assert again.next_deadline() == 80
    [cleared] = again.tick(s(80))
    assert (cleared.what, cleared.alarm.cleared_at) == ("cleared", w(70))
    assert [w for _, w, _ in store.transitions(fire.alarm.id)] == [
        "raised", "escalated", "clear_pending",
    ]  # fmt: skip
    assert [a.id for a in store.recent_closed(5)] == [sos.alarm.id]


# ---- the engine with a real outbox ------------------------------------------------


def _outbox(path: Path) -> Outbox:
    return Outbox(
        path,
        max_messages=1000,
        commit_interval_ms=0,
        sync=SyncMode.FULL,
        consumers=[Consumer("mqtt")],
    )


def _rows(outbox: Outbox) -> list[Row]:
    """What the outbox holds once everything handed to it so far is committed.

    The engine hands alarm documents to the outbox without waiting for the commit; a
    durable counter goes through the same writer queue, so it returns after them.
    """
    outbox.meta_increment("tests.barrier")
    reader = outbox.reader()
    try:
        return reader.next_batch("mqtt", {}, 1000)
    finally:
        reader.close()


def _engine(
    tmp_path: Path,
    outbox: Outbox,
    *,
    output: OutputSwitch | None = None,
    clock: TimeSource | None = None,
    **cfg: Any,
) -> AlarmEngine:
    return AlarmEngine(
        AlarmsConfig.model_validate({"damping_s": 0, **cfg}),
        path=tmp_path / "alarms.db",
        topics=Topics("p/v1", IDENTITY),
        devices={SMOKE.id: SMOKE},
        outbox=outbox,
        output=output,
        clock=clock or Clock(ClockCheck.TRUST),
    )


SMOKE_REF = DeviceRef("smoke-1", Kind.SMOKE, Location("2", "2"))


def test_engine_publishes_retained_documents_and_empties_the_topic_on_close(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()
    seen: list[dict[str, Any]] = []

    async def scenario() -> None:
        engine = _engine(tmp_path, outbox)
        engine.start()
        unsubscribe = engine.listen(seen.append)
        engine.observe(Event(SMOKE_REF, T0, EventType.SMOKE_ALARM))
        [doc] = engine.snapshot()
        outcome = await engine.acknowledge(doc["alarm_id"], by="staff-li", note="", via="web")
        again = await engine.acknowledge(doc["alarm_id"], by="staff-wu", via="web")
        assert (outcome.status, again.status) == ("accepted", "already_acknowledged")
        with pytest.raises(UnknownAlarm):
            await engine.acknowledge("nope-1", by="staff-li", via="web")
        with pytest.raises(ValueError, match="'by'"):
            await engine.acknowledge(doc["alarm_id"], by="", via="web")
        with pytest.raises(ValueError, match="via"):
            await engine.acknowledge(doc["alarm_id"], by="x", via="pigeon")
        unsubscribe()
        engine.observe(Event(SMOKE_REF, T0, EventType.SMOKE_CLEARED))
        closed = await engine.acknowledge(doc["alarm_id"], by="staff-wu", via="web")
        assert closed.status == "already_acknowledged" and closed.alarm["state"] == "closed"
        assert [d["state"] for d in engine.snapshot()] == ["closed"]
        await asyncio.sleep(0.2)  # the outbox's commit callbacks
        engine.close()

    asyncio.run(scenario())
    rows = _rows(outbox)
    outbox.close()
    assert all(r.retain and r.topic.startswith("p/v1/site-a/gw-1/alarms/") for r in rows)
    states = [json.loads(r.payload)["state"] if r.payload else "" for r in rows]
    assert states == ["active", "acknowledged", "closed", ""]
    assert [d["state"] for d in seen] == ["active", "acknowledged"], "unsubscribed after"


def test_revs_stored_but_not_handed_to_the_outbox_are_published_at_start(tmp_path: Path) -> None:
    # A crash between storing a change and the outbox taking it: the store has the rev,
    # published_rev lags behind.  Simulate it by storing changes without the engine.
    st = AlarmStore(tmp_path / "alarms.db")
    st.open()
    b = book(new_id=st.new_id)
    [fire] = b.signal(SMOKE, "smoke.alarm", s(0))
    st.save([fire])
    st.mark_published(fire.alarm.id, 1)
    st.save(b.acknowledge(fire.alarm.id, "staff-li", "", Via.MQTT, s(1))[2])  # rev 2, unpublished
    st.close()
    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()

    async def scenario() -> None:
        engine = _engine(tmp_path, outbox)
        engine.start()
        await asyncio.sleep(0.2)
        engine.close()

    asyncio.run(scenario())
    rows = _rows(outbox)
    outbox.close()
    assert [json.loads(r.payload)["rev"] for r in rows] == [2]
    st.open()
    assert st.unpublished() == []
    st.close()


def test_queued_cli_acks_are_applied_by_the_running_engine(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()
    results: dict[str, Any] = {}

    async def scenario() -> None:
        engine = _engine(tmp_path, outbox)
        task = asyncio.create_task(engine.run())
        await asyncio.sleep(0.05)
        engine.observe(Event(SMOKE_REF, T0, EventType.SMOKE_ALARM))
        [doc] = engine.snapshot()
        other = AlarmStore(tmp_path / "alarms.db")  # as `gateway ack` in another process
        other.open(create=False)
        ok = other.queue_ack(doc["alarm_id"], "staff-li", "on site", "cli")
        bad = other.queue_ack("zzz-1", "staff-li", "", "cli")
        for _ in range(40):
            await asyncio.sleep(0.05)
            if (r := other.ack_result(bad)) is not None and r.status is not None:
                break
        results["ok"], results["bad"] = other.ack_result(ok), other.ack_result(bad)
        results["snapshot"] = engine.snapshot()
        other.close()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    outbox.close()
    assert results["ok"].status == "accepted"
    assert results["bad"].status == "unknown"
    [doc] = results["snapshot"]
    assert doc["ack"]["via"] == "cli" and doc["ack"]["note"] == "on site"


def test_output_follows_escalation_and_a_failed_switch_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()
    calls: list[bool] = []
    clock = ManualClock()

    async def output(on: bool) -> None:
        calls.append(on)
        if len(calls) == 1:
            raise RuntimeError("relay line busy")

    async def scenario() -> None:
        engine = _engine(tmp_path, outbox, output=output, clock=clock, escalation={"critical": 60})
        task = asyncio.create_task(engine.run())
        await until(lambda: calls == [False, False])  # known state at start, after a retry
        engine.observe(Event(SMOKE_REF, T0, EventType.SMOKE_ALARM))
        [doc] = engine.snapshot()
        # NTP sets the wall clock back an hour meanwhile: the buzzer is not delayed.
        clock.wall_at -= timedelta(hours=1)
        clock.mono += 59.9
        await asyncio.sleep(0.1)
        assert calls[-1] is False and engine.snapshot()[0]["escalation"] == 0
        clock.mono += 0.1
        await until(lambda: calls[-1] is True)
        assert engine.snapshot()[0]["escalation"] == 1
        await engine.acknowledge(doc["alarm_id"], by="staff-li", via="web")
        await until(lambda: calls[-1] is False)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    outbox.close()
    assert calls == [False, False, True, False]
    assert [r.message for r in caplog.records].count(
        "alarm output could not be switched off: relay line busy (retrying)"
    ) == 1


def test_only_availability_changes_count(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()

    async def scenario() -> list[dict[str, Any]]:
        engine = _engine(tmp_path, outbox)
        engine.start()
        engine.observe_availability(SMOKE_REF, None, "not heard yet")  # unknown: no news
        engine.observe_availability(SMOKE_REF, True, "")
        for k in range(5):  # a driver that says so at every failed poll
            engine.observe_availability(SMOKE_REF, False, f"no reply to {k + 1} polls")
        engine.observe_availability(SMOKE_REF, None, "not heard yet")  # clears nothing
        docs = engine.snapshot()
        engine.observe_availability(SMOKE_REF, True, "")
        engine.observe_availability(SMOKE_REF, True, "")
        docs += engine.snapshot()
        engine.close()
        return docs

    offline, cleared = asyncio.run(scenario())
    outbox.close()
    assert (offline["type"], offline["count"], offline["state"]) == ("maintenance", 1, "active")
    assert (cleared["state"], cleared["rev"]) == ("cleared", 2)


def test_alarm_documents_take_no_seq_so_gaps_still_mean_dropped_telemetry(tmp_path: Path) -> None:
    from gateway.sdk.model import Priority
    from gateway.storage.outbox import OutboxItem

    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()

    def event() -> OutboxItem:
        return OutboxItem(Priority.EVENT, "events", "smoke", "p/v1/e", lambda seq: b"{}")

    async def scenario() -> list[int]:
        engine = _engine(tmp_path, outbox)
        engine.start()
        seqs = [await outbox.aput(event())]
        engine.observe(Event(SMOKE_REF, T0, EventType.SMOKE_ALARM))
        seqs.append(await outbox.aput(event()))
        engine.close()
        return seqs

    assert asyncio.run(scenario()) == [1, 2]
    # close() hands the alarm's document to the outbox; its commit may come a moment
    # later (seen under load): wait for it, as the uplink would.
    assert wait_for(lambda: any("/alarms/" in r.topic for r in _rows(outbox)), 10)
    rows = _rows(outbox)
    outbox.close()
    # The alarm's document goes out once its write is on disk, so after the second
    # event here: it took no number between them.
    [alarm] = [r for r in rows if "/alarms/" in r.topic]
    assert alarm.seq == 0 and alarm.retain
    assert [r.seq for r in rows if r is not alarm] == [1, 2]


def test_a_storm_of_repeats_is_stored_at_once_and_published_at_most_once_a_second(
    tmp_path: Path,
) -> None:
    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()
    seen: list[int] = []

    async def scenario() -> None:
        engine = _engine(tmp_path, outbox)
        task = asyncio.create_task(engine.run())
        await asyncio.sleep(0.05)
        engine.listen(lambda doc: seen.append(doc["count"]))
        for _ in range(10):  # a detector repeating its alarm every 50 ms
            engine.observe(Event(SMOKE_REF, T0, EventType.SMOKE_ALARM))
            await asyncio.sleep(0.05)
        [doc] = engine.snapshot()
        assert doc["count"] == 10, "the count is current at once"
        # Stored by the store's writer thread as it comes, not once a second.
        await until(lambda: engine.store.transitions(doc["alarm_id"])[-1][:2] == (10, "repeated"))
        await asyncio.sleep(1.6)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    rows = _rows(outbox)
    outbox.close()
    counts = [json.loads(r.payload)["count"] for r in rows]
    assert counts[0] == 1 and counts[-1] == 10 and len(counts) <= 3, counts
    assert seen == counts


# ---- clocks: timers on the run clock, stamps on the wall clock --------------------


def test_wall_clock_steps_neither_fire_nor_delay_escalation() -> None:
    b = book(critical=60)
    [fire] = b.signal(SMOKE, "smoke.alarm", s(0))
    # NTP steps the wall clock by a year: the run clock has moved 1 s.
    stepped = Instant(w(365 * 86400), 1.0)
    assert b.tick(stepped) == []
    back = Instant(w(-3600), 60.0)
    [escalated] = b.tick(back)
    assert escalated.alarm.id == fire.alarm.id and escalated.alarm.escalation == 1
    assert escalated.alarm.updated_at == w(-3600), "stamps still come from the wall clock"


def test_a_stamp_taken_unsynced_marks_the_alarm_document_unsynced_for_good() -> None:
    b = book(critical=60)
    [fire] = b.signal(SMOKE, "smoke.alarm", s(0, synced=False))
    assert fire.alarm.document(IDENTITY)["clock"] == "unsynced"
    [later] = b.tick(s(60))
    doc = later.alarm.document(IDENTITY)
    assert doc["clock"] == "unsynced", "raised_at is still from the unsynced clock"
    validator("alarm").validate(doc)
    [sos] = b.signal(SOS, "elderly.sos", s(61))
    assert sos.alarm.document(IDENTITY)["clock"] == "synced"


def _running(tmp_path: Path, outbox: Outbox, clock: ManualClock) -> AlarmEngine:
    engine = _engine(tmp_path, outbox, clock=clock, escalation={"critical": 60})
    engine.start()
    return engine


@pytest.mark.parametrize(
    ("boot_id", "downtime_counts"), [("boot-a", True), ("boot-b", False)], ids=["restart", "reboot"]
)
def test_timers_carry_on_across_a_restart_whatever_the_wall_clock_did(
    tmp_path: Path, boot_id: str, downtime_counts: bool
) -> None:
    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()
    clock = ManualClock()

    async def scenario() -> tuple[int, int]:
        engine = _running(tmp_path, outbox, clock)
        engine.observe(Event(SMOKE_REF, T0, EventType.SMOKE_ALARM))
        clock.advance(20)  # the process runs 20 s, then dies (close stores the mark)
        engine.close()
        # Down for 30 s; the host's clock is set back an hour meanwhile.
        clock.mono += 30
        clock.wall_at -= timedelta(hours=1)
        clock.boot_id = boot_id
        if not downtime_counts:
            clock.mono = 5.0  # a new boot: its monotonic clock started again
        engine = _running(tmp_path, outbox, clock)
        clock.advance(10)
        early = engine.now().run
        engine._commit(engine._require().tick(engine.now()))
        level_early = engine.snapshot()[0]["escalation"]
        clock.advance(30)
        engine._commit(engine._require().tick(engine.now()))
        level_late = engine.snapshot()[0]["escalation"]
        assert early == pytest.approx(60 if downtime_counts else 30)
        engine.close()
        return level_early, level_late

    early, late = asyncio.run(scenario())
    outbox.close()
    # Restart: 20 + 30 down + 10 = 60 s: due.  Reboot: 20 + 10 = 30 s; 30 s more: due.
    assert (early, late) == ((1, 1) if downtime_counts else (0, 1))


def test_the_run_clock_is_marked_while_a_timer_runs_so_a_power_cut_keeps_it(tmp_path: Path) -> None:
    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()
    clock = ManualClock()

    async def scenario() -> float:
        engine = _running(tmp_path, outbox, clock)
        task = asyncio.create_task(engine.run())
        engine.observe(Event(SMOKE_REF, T0, EventType.SMOKE_ALARM))
        clock.advance(40)

        def marked() -> bool:
            mark = engine.store.run_mark()
            return mark is not None and mark.run_s >= 40

        await until(marked)
        task.cancel()  # and no close(): the power went
        with pytest.raises(asyncio.CancelledError):
            await task
        store = AlarmStore(tmp_path / "alarms.db")
        store.open()
        mark = store.run_mark()
        store.close()
        assert mark is not None
        return mark.run_s

    assert asyncio.run(scenario()) >= 40
    outbox.close()


def test_a_timer_far_away_is_marked_seldom_and_a_near_one_often(tmp_path: Path) -> None:
    # Each mark is a synced write to the SD card: an escalation an hour away does not
    # need one every 5 s (issue 16); one due in a minute does.
    outbox = _outbox(tmp_path / "outbox.db")
    outbox.open()
    clock = ManualClock()

    async def marks_over(escalate_s: int) -> int:
        engine = _engine(
            tmp_path / str(escalate_s), outbox, clock=clock, escalation={"critical": escalate_s}
        )
        (tmp_path / str(escalate_s)).mkdir()
        engine.start()
        task = asyncio.create_task(engine.run())
        engine.observe(Event(SMOKE_REF, T0, EventType.SMOKE_ALARM))
        seen: set[float] = set()
        for _ in range(12):  # one minute in 5 s steps
            clock.advance(5)
            if engine._wake is not None:
                engine._wake.set()
            await asyncio.sleep(0.05)
            mark = engine.store.run_mark()
            if mark is not None:
                seen.add(mark.run_s)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return len(seen)

    near, far = asyncio.run(marks_over(90)), asyncio.run(marks_over(3600))
    outbox.close()
    assert near >= 8, near  # about every 5 s
    assert far <= 2, far  # every 2 minutes (3600 s / 30)


def test_records_with_wall_clock_deadlines_keep_what_was_left_of_them() -> None:
    b = book(critical=60)
    [fire] = b.signal(SMOKE, "smoke.alarm", s(0))
    rec = fire.alarm.to_record()
    # A record as older versions stored it: deadlines on the wall clock.
    del rec["escalate_due"], rec["synced"]
    rec["escalate_at"] = w(60).isoformat()
    old = Alarm.from_record(rec, Instant(w(45), 500.0))
    assert old.escalate_due == 515.0 and old.synced


def test_restored_timers_never_run_longer_than_configured() -> None:
    b = book(critical=60)
    [fire] = b.signal(SMOKE, "smoke.alarm", s(0))
    rec = fire.alarm.to_record()
    del rec["escalate_due"]
    rec["escalate_at"] = w(60).isoformat()
    # Upgraded on a Pi whose clock says 1970 at boot: the old deadline is decades away.
    boot = Instant(datetime(1970, 1, 1, tzinfo=UTC), 7.0, synced=False)
    again = book(critical=60, restored=[Alarm.from_record(rec, boot)])
    again.bound_timers(boot)
    assert again.next_deadline() == 67.0
    shorter = book(critical=30, restored=[fire.alarm.copy()])  # the config was changed
    shorter.bound_timers(s(10))
    assert shorter.next_deadline() == 40.0


def test_a_damaged_run_mark_starts_the_run_clock_from_zero() -> None:
    assert RunMark.from_json("{not json") is None
    assert RunMark.from_json('{"run_s": -1, "boot_id": null, "mono_s": 0}') is None
    assert RunMark.from_json('{"run_s": Infinity, "boot_id": null, "mono_s": 0}') is None
    mark = RunMark(12.5, "boot-a", 100.0)
    assert RunMark.from_json(mark.to_json()) == mark
    assert RunClock.resume(None, "boot-a", lambda: 7.0).now() == 0.0
    assert RunClock.resume(mark, "boot-a", lambda: 110.0).now() == 22.5
    assert RunClock.resume(mark, "boot-b", lambda: 3.0).now() == 12.5
    # A monotonic clock behind the mark's cannot be the same boot: nothing added.
    assert RunClock.resume(mark, "boot-a", lambda: 50.0).now() == 12.5
