"""The inactivity (wellness) check: config, the pure watch, the service, and end to end."""

from __future__ import annotations

import asyncio
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import (
    DeviceRef,
    Event,
    EventType,
    Kind,
    Location,
    Message,
    Reading,
    Telemetry,
    Unit,
    ValueType,
)
from gateway.wellness.monitor import FlatWatch, MeterMemory, Wellness, classify
from gateway.wellness.settings import (
    ActivityRules,
    InactivityCheck,
    WellnessConfig,
    activity_devices,
    parse_duration,
)
from tests.driverkit import until
from tests.harness import GatewayProc, Received, Subscriber, topic_base, write_config
from tests.harness import config_problems as _problems
from tests.peers import Mosquitto

E = EventType
T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)

CONFIG = """\
version: 1
site: {id: s}
gateway: {id: g}
broker: {url: "mqtt://127.0.0.1:1883"}
wellness:
  checks:
    - device: sos-201
      window: 12h
devices:
  - id: sos-201
    kind: elderly_alarm
    location: {building: "1", floor: 2, unit: "201"}
    driver: {type: simulated}
  - id: door-201
    kind: door
    location: {building: "1", floor: 2, unit: "201"}
    driver: {type: simulated}
  - id: meter-201
    kind: meter
    location: {building: "1", floor: 2, unit: "201"}
    driver: {type: simulated, profile: household_water}
  - id: door-202
    kind: door
    location: {building: "1", floor: 2, unit: "202"}
    driver: {type: simulated}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# ---- config ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("12h", 43200), ("1d", 86400), ("1.5h", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_a_check_defaults_to_the_devices_of_the_same_flat(tmp_path: Path) -> None:
    loaded = load_config(_write(tmp_path, CONFIG))
    (check,) = loaded.config.wellness.checks
    assert check.seconds == 12 * 3600
    # Same building and unit: not door-202 of the flat next door.
    assert activity_devices(check, loaded.devices) == ("sos-201", "door-201", "meter-201")


def test_a_missing_or_wrong_device_is_named_with_its_line(tmp_path: Path) -> None:
    text = CONFIG.replace("device: sos-201", "device: door-201").replace(
        "window: 12h", "window: 12h\n      activity_devices: [door-201, pir-201]"
    )
    path = _write(tmp_path, text)
    assert _problems(path) == [
        f"{path}:7 wellness.checks[0].device: device 'door-201' is a door, not an elderly_alarm",
        f"{path}:9 wellness.checks[0].activity_devices[1]: no device 'pir-201'",
    ]


def test_window_is_required_once_and_must_read_as_a_duration(tmp_path: Path) -> None:
    path = _write(tmp_path, CONFIG.replace("window: 12h", "window: 12 hours"))
    assert _problems(path) == [
        f"{path}:8 wellness.checks[0].window: '12 hours' is not a duration; "
        "write e.g. 90s, 30m, 12h or 1d"
    ]
    path = _write(tmp_path, CONFIG.replace("window: 12h", "window: 12h\n      window_s: 60"))
    (problem,) = _problems(path)
    assert "wellness.checks[0]: give exactly one of window (e.g. 12h) or window_s" in problem


def test_unknown_activity_event_is_refused(tmp_path: Path) -> None:
    text = CONFIG.replace("wellness:\n", "wellness:\n  activity: {events: [door.slammed]}\n")
    (problem,) = _problems(_write(tmp_path, text))
    assert ":6 wellness.activity.events[0]: Input should be" in problem


# ---- what counts as activity -------------------------------------------------------


def _ref(device_id: str, kind: Kind = Kind.METER) -> DeviceRef:
    return DeviceRef(device_id, kind, Location("1", "2", "201"))


def _water(value: float, device_id: str = "meter-201") -> Telemetry:
    return Telemetry(_ref(device_id), T0, (Reading("volume", value, Unit.M3, ValueType.COUNTER),))


def _power(watts: float) -> Telemetry:
    return Telemetry(_ref("elec-201"), T0, (Reading("power", watts, Unit.W),))


def test_water_counts_when_it_rose_more_than_a_litre_since_the_last_reading() -> None:
    rules, meters = ActivityRules(), MeterMemory()
    seen = [classify(_water(v), rules, meters, own_device=False) for v in (12.0, 12.0008, 12.003)]
    # First reading: only the base; +0.8 l: a dripping tap; +2.2 l: someone used water.
    assert seen == [False, False, True]


def test_power_counts_above_the_threshold_only() -> None:
    rules, meters = ActivityRules(power_w=300), MeterMemory()
    assert not classify(_power(120.0), rules, meters, own_device=False)  # the fridge
    assert classify(_power(2000.0), rules, meters, own_device=False)  # the kettle


def test_a_press_counts_only_on_the_checked_device_and_its_own_events_never() -> None:
    rules, meters = ActivityRules(), MeterMemory()
    sos = Event(_ref("sos-201", Kind.ELDERLY_ALARM), T0, E.ELDERLY_SOS)
    assert classify(sos, rules, meters, own_device=True)
    assert not classify(sos, rules, meters, own_device=False)
    door = Event(_ref("door-201", Kind.DOOR), T0, E.DOOR_OPENED)
    assert classify(door, rules, meters, own_device=False)
    fault = Event(_ref("door-201", Kind.DOOR), T0, E.DEVICE_FAULT)
    assert not classify(fault, rules, meters, own_device=False)


# ---- the watch, on a timeline -------------------------------------------------------


def test_raises_once_per_quiet_period_and_clears_on_activity() -> None:
    w = FlatWatch(100.0, start=0.0, start_wall=T0)
    assert w.due == 100.0
    assert w.tick(99.9) is None
    raised = w.tick(100.0)
    assert raised is not None and raised.type is E.ELDERLY_INACTIVITY
    assert raised.data == {
        "window_s": 100.0,
        "last_activity": None,  # nothing since start: the window began at start
        "last_device": None,
        "quiet_since": "2026-11-27T08:00:00.000Z",
    }
    assert [w.tick(t) for t in (150.0, 500.0, 10_000.0)] == [None, None, None]
    cleared = w.activity(10_001.0, T0, "door-201")
    assert cleared is not None and cleared.type is E.ELDERLY_CLEARED
    assert cleared.data["clears"] == "elderly.inactivity"
    assert w.activity(10_002.0, T0, "door-201") is None
    assert w.tick(10_101.9) is None
    again = w.tick(10_102.0)
    assert again is not None and again.data["last_device"] == "door-201"


def test_activity_before_the_window_ends_pushes_it_back() -> None:
    w = FlatWatch(10.0, start=0.0, start_wall=T0)
    for t in (5.0, 14.0, 23.0):
        assert w.activity(t, T0, "pir") is None
        assert w.tick(t + 9.9) is None
    assert w.tick(33.0) is not None


# ---- the service, in real time with short windows ------------------------------------


def _spec(device_id: str, kind: Kind, unit: str = "201") -> DeviceSpec:
    ref = DeviceRef(device_id, kind, Location("1", "2", unit))
    # The service never reads driver settings; any model will do.
    return DeviceSpec(ref=ref, settings=WellnessConfig(), name="", driver="simulated")


class _Outbox:
    """Records what the service emits and echoes it to the service, as Gateway.emit does."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.wellness: Wellness | None = None

    async def emit(self, message: Message) -> None:
        self.messages.append(message)
        assert self.wellness is not None
        self.wellness.observe(message)

    def types(self) -> list[EventType]:
        return [m.type for m in self.messages if isinstance(m, Event)]


def test_service_raises_after_the_window_and_clears_on_activity() -> None:
    asyncio.run(_test_service_raises_after_the_window_and_clears_on_activity())


async def _test_service_raises_after_the_window_and_clears_on_activity() -> None:
    devices = [_spec("sos-201", Kind.ELDERLY_ALARM), _spec("door-201", Kind.DOOR)]
    cfg = WellnessConfig(checks=(InactivityCheck(device="sos-201", window_s=1.0),))
    out = _Outbox()
    svc = out.wellness = Wellness(cfg, devices, out.emit)
    task = asyncio.create_task(svc.run())
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await until(lambda: out.types() == [E.ELDERLY_INACTIVITY])
        assert 0.9 <= loop.time() - started < 2.0  # the window, plus a busy machine's lag
        await asyncio.sleep(1.2)  # still quiet: no second event for the same period
        assert out.types() == [E.ELDERLY_INACTIVITY]
        # Its own events, echoed back as the gateway does, do not count as activity.
        svc.observe(Event(devices[1].ref, datetime.now(UTC), E.DOOR_OPENED))
        await until(lambda: len(out.messages) == 2)
        cleared = out.messages[1]
        assert isinstance(cleared, Event) and cleared.type is E.ELDERLY_CLEARED
        assert cleared.device.id == "sos-201"
        assert cleared.data == {"clears": "elderly.inactivity", "activity_device": "door-201"}
        await until(lambda: len(out.messages) == 3)
        last = out.messages[2]
        assert isinstance(last, Event) and last.data["last_device"] == "door-201"
        assert svc.emitted == 3 and svc.errors == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_service_uses_the_injected_clock_and_ignores_other_flats() -> None:
    asyncio.run(_test_service_uses_the_injected_clock_and_ignores_other_flats())


async def _test_service_uses_the_injected_clock_and_ignores_other_flats() -> None:
    now = [1000.0]
    devices = [_spec("sos-201", Kind.ELDERLY_ALARM), _spec("door-202", Kind.DOOR, unit="202")]
    cfg = WellnessConfig(checks=(InactivityCheck(device="sos-201", window="2h"),))
    out = _Outbox()
    svc = out.wellness = Wellness(cfg, devices, out.emit, clock=lambda: now[0])
    task = asyncio.create_task(svc.run())
    try:
        await asyncio.sleep(0.05)
        assert out.messages == []
        now[0] += 7199.0
        svc.observe(Event(devices[1].ref, datetime.now(UTC), E.DOOR_OPENED))  # next door
        await asyncio.sleep(0.05)
        assert out.messages == []
        now[0] += 1.0
        await until(lambda: out.types() == [E.ELDERLY_INACTIVITY])
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_refused_event_is_counted_and_not_retried_in_a_storm() -> None:
    asyncio.run(_test_a_refused_event_is_counted_and_not_retried_in_a_storm())


async def _test_a_refused_event_is_counted_and_not_retried_in_a_storm() -> None:
    devices = [_spec("sos-201", Kind.ELDERLY_ALARM)]
    calls: list[Message] = []

    async def refuse(message: Message) -> None:
        calls.append(message)
        raise OSError("disk full")

    cfg = WellnessConfig(checks=(InactivityCheck(device="sos-201", window_s=1.0),))
    svc = Wellness(cfg, devices, refuse)
    task = asyncio.create_task(svc.run())
    try:
        await until(lambda: svc.errors == 1)
        await asyncio.sleep(0.5)
        assert len(calls) == 1 and svc.emitted == 0
        assert not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# ---- end to end: the real gateway process and a real broker ---------------------------


def test_gateway_raises_and_clears_inactivity_on_the_broker(
    tmp_path: Path, broker: Mosquitto
) -> None:
    devices = [
        {
            "id": "sos-201",
            "kind": "elderly_alarm",
            "location": {"building": "1", "floor": 2, "unit": "201"},
            "driver": {"type": "simulated"},
        },
        {
            "id": "pir-201",
            "kind": "elderly_alarm",
            "location": {"building": "1", "floor": 2, "unit": "201"},
            # Quiet for 2.5 s, then moves: the 1.5 s window raises once, then clears.
            "driver": {"type": "simulated", "events": [{"at_s": 2.5, "type": "activity.motion"}]},
        },
    ]
    wellness = {"checks": [{"device": "sos-201", "window_s": 1.5}]}
    config = write_config(tmp_path / "gw" / "site.yaml", broker.url, devices, wellness=wellness)
    sub = Subscriber(broker.port, f"{topic_base(config)}/devices/+/events").start()
    gw = GatewayProc(config).start()
    try:

        def types(ms: list[Received]) -> list[str]:
            return [m.json()["event"]["type"] for m in ms]

        assert sub.wait(lambda ms: len(ms) >= 3, timeout=15), gw.log()
        got = sub.snapshot()
        assert types(got[:3]) == ["elderly.inactivity", "activity.motion", "elderly.cleared"]
        raised, cleared = got[0].json(), got[2].json()
        assert raised["device"]["id"] == "sos-201" and raised["event"]["data"]["window_s"] == 1.5
        assert cleared["device"]["id"] == "sos-201"
        assert cleared["event"]["data"]["activity_device"] == "pir-201"
        assert raised["seq"] < cleared["seq"]  # both went through the outbox
    finally:
        assert gw.terminate() == 0
        sub.stop()


def test_zigbee_occupancy_is_motion() -> None:
    from drivers.zigbee2mqtt.mapping import DeviceState, load_mapping

    state = DeviceState(load_mapping("motion"))
    seen = [state.apply(p).found for p in (b'{"occupancy":true}', b'{"occupancy":true}')]
    assert [[f.event for f in found] for found in seen] == [[E.ACTIVITY_MOTION], []]
    assert state.apply(b'{"occupancy":false}').found == []  # the sensor's own timeout
    found = state.apply(b'{"occupancy":true}').found
    assert [f.event for f in found] == [E.ACTIVITY_MOTION]


def test_the_demo_raises_inactivity_in_flat_1_201_at_240_s_and_clears_it_at_300_s() -> None:
    """What config/demo.yaml's header announces, from its scenario and the real watch."""
    import itertools

    from drivers.simulated.scenario import ScriptedEvent, schedule
    from drivers.simulated.settings import SimulatedSettings

    loaded = load_config(Path(__file__).resolve().parents[1] / "config" / "demo.yaml")
    (check,) = loaded.config.wellness.checks
    members = activity_devices(check, loaded.devices)
    assert members == ("sos-b1-201", "motion-b1-201")
    happened: list[tuple[float, str, EventType]] = []
    for d in loaded.devices:
        if d.id in members:
            assert isinstance(d.settings, SimulatedSettings)
            for due in itertools.takewhile(lambda due: due.t <= 400, schedule(d.settings, d.id)):
                if isinstance(due.action, ScriptedEvent):
                    happened.append((due.t, d.id, due.action.type))
    rules, meters = loaded.config.wellness.activity, MeterMemory()
    watch = FlatWatch(check.seconds, start=0.0, start_wall=T0)
    decided: list[tuple[float, EventType]] = []
    for t, device_id, event_type in sorted(happened):
        at = watch.due
        if at is not None and at <= t and (raised := watch.tick(at)) is not None:
            decided.append((at, raised.type))
        event = Event(loaded.device(device_id).ref, T0, event_type)
        own = device_id == check.device
        if not classify(event, rules, meters, own_device=own):
            continue
        if (cleared := watch.activity(t, T0, device_id)) is not None:
            decided.append((t, cleared.type))
    assert decided[:2] == [(240.0, E.ELDERLY_INACTIVITY), (300.0, E.ELDERLY_CLEARED)]


def test_a_check_kept_across_a_change_of_devices_keeps_its_window_and_a_dropped_one_clears() -> (
    None
):
    asyncio.run(_test_a_check_kept_and_a_check_dropped())


async def _test_a_check_kept_and_a_check_dropped() -> None:
    now = [1000.0]
    sos1, sos2 = _spec("sos-201", Kind.ELDERLY_ALARM), _spec("sos-202", Kind.ELDERLY_ALARM, "202")
    both = WellnessConfig(
        checks=(
            InactivityCheck(device="sos-201", window_s=100.0),
            InactivityCheck(device="sos-202", window_s=10.0),
        )
    )
    out = _Outbox()
    svc = out.wellness = Wellness(both, [sos1, sos2], out.emit, clock=lambda: now[0])
    task = asyncio.create_task(svc.run())
    try:
        now[0] += 10.0
        await until(lambda: out.types() == [E.ELDERLY_INACTIVITY])
        # sos-202 and its check removed; a door added to flat 201 counts for its check.
        door = _spec("door-201", Kind.DOOR)
        svc.set_devices(WellnessConfig(checks=both.checks[:1]), [sos1, door])
        await until(lambda: len(out.messages) == 2)
        cleared = out.messages[1]
        assert isinstance(cleared, Event) and cleared.type is E.ELDERLY_CLEARED
        assert cleared.device.id == "sos-202" and cleared.data["clears"] == "elderly.inactivity"
        svc.observe(
            Event(_spec("sos-202", Kind.ELDERLY_ALARM, "202").ref, datetime.now(UTC), E.ELDERLY_SOS)
        )
        # The kept check's window still began at start: it raises at 1100, not 1110.
        now[0] = 1100.0
        await until(lambda: len(out.messages) == 3)
        assert out.messages[2].device.id == "sos-201"
        svc.observe(Event(door.ref, datetime.now(UTC), E.DOOR_OPENED))
        await until(lambda: len(out.messages) == 4)
        last = out.messages[3]
        assert isinstance(last, Event) and last.data["activity_device"] == "door-201"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
