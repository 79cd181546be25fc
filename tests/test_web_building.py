"""The building view's pure parts: the worst state per place, the meters' 24-hour history
(bounded, downsampled, on disk), and the Chinese words of the screens."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.sdk.model import DeviceRef, Kind, Location, Reading, Telemetry, Unit, ValueType
from gateway.web.building import Place, PlaceState, building_html, place_states, usage_svg
from gateway.web.i18n import TEXT
from gateway.web.live import DeviceState
from gateway.web.meters import BUCKET_S, BUCKETS, MeterHistory
from gateway.web.settings import Lang

# Ten hours ago, on a bucket boundary: the history takes readings of the last day only.
T0 = datetime.fromtimestamp((int(time.time()) // BUCKET_S - 40) * BUCKET_S, UTC)


def _dev(did: str, unit: str, available: bool | None = True, floor: int = 2) -> DeviceState:
    return DeviceState(
        did, "meter", did, {"building": "1", "floor": str(floor), "unit": unit}, available
    )


def _alarm(did: str, unit: str, **doc: Any) -> dict[str, Any]:
    loc = {"building": "1", "floor": 2, "unit": unit}
    return {"device": {"id": did, "location": loc}, "severity": "critical", **doc}


def test_each_place_takes_the_worst_state_of_its_devices_and_alarms() -> None:
    devices = [
        _dev("a", "201"),
        _dev("b", "202", available=False),
        _dev("c", "203"),
        _dev("d", "204"),
        _dev("e", "202"),
    ]
    alarms = [
        _alarm("a", "201", state="active", acknowledged=False),
        _alarm("e", "202", state="acknowledged", acknowledged=True),
        _alarm("c", "203", state="acknowledged", acknowledged=True),
        _alarm("d", "204", state="closed", acknowledged=True),
        _alarm("d", "204", state="active", acknowledged=False, severity="low"),  # battery
    ]
    states = {p.unit: s for p, s in place_states(devices, alarms).items()}
    assert states == {
        "201": PlaceState.ALARM,
        "202": PlaceState.OFFLINE,  # offline is worse than an alarm being dealt with
        "203": PlaceState.ACKNOWLEDGED,
        "204": PlaceState.FINE,
    }


def test_the_grid_has_buildings_as_columns_and_floors_top_down() -> None:
    devices = [_dev("a", "101", floor=1), _dev("b", "301", floor=3), _dev("c", "<b>", floor=10)]
    html = building_html(place_states(devices, []), Lang.ZH)
    assert html.index("10层") < html.index("3层") < html.index("1层")
    assert "&lt;b&gt;" in html and "<b>" not in html
    assert 'href="/console/place?b=1&amp;f=3&amp;u=301"' in html
    assert Place.of({"building": "1", "floor": 3, "unit": "301"}) == Place("1", "3", "301")


def _reading(meter: MeterHistory, when: datetime, value: float, device: str = "m1") -> None:
    ref = DeviceRef(device, Kind.METER, Location("1", "2", "201"))
    meter.on_message(
        Telemetry(
            ref,
            when,
            (
                Reading("volume", value, Unit.M3, ValueType.COUNTER),
                Reading("flow", 0.5, Unit.M3_PER_H),  # a gauge: not kept
            ),
        )
    )


def test_meter_use_per_quarter_hour_over_the_last_day() -> None:
    m = MeterHistory(None, {"m1"})
    for i in range(10):  # two readings per quarter hour, 0.1 m³ each
        _reading(m, T0 + timedelta(seconds=i * BUCKET_S / 2), i * 0.1)
    now = T0 + timedelta(seconds=5 * BUCKET_S - 1)
    (u,) = m.usage("m1", now)
    assert (u.name, u.unit) == ("volume", "m³")
    assert len(u.per_bucket) == BUCKETS
    assert [round(v, 6) if v is not None else None for v in u.per_bucket[-5:]] == [
        None,  # the first bucket has nothing before it
        0.2,
        0.2,
        0.2,
        0.2,
    ]
    assert u.total == 0.8 and u.unchanged_s is None
    assert m.usage("other", now) == []


def test_a_flat_whose_water_has_not_moved_says_since_when() -> None:
    m = MeterHistory(None, {"m1"})
    _reading(m, T0, 10.0)
    _reading(m, T0 + timedelta(minutes=20), 10.5)
    for h in range(1, 7):
        _reading(m, T0 + timedelta(hours=h), 10.5)
    (u,) = m.usage("m1", T0 + timedelta(hours=6, minutes=10))
    assert u.unchanged_s is not None and 5 * 3600 <= u.unchanged_s <= 6 * 3600
    svg = usage_svg(u, Lang.ZH)
    assert "用水量" in svg and "小时没有变化" in svg and "<svg" in svg


def test_meter_history_is_bounded_in_time_and_in_series() -> None:
    m = MeterHistory(None, {f"m{i}" for i in range(5)}, max_series=3)
    for b in range(300):
        m.record("m1", "volume", "m³", b, float(b))
    assert len(m._series[("m1", "volume")].points) == BUCKETS + 1
    for i in range(2, 5):
        _reading(m, T0, 1.0, device=f"m{i}")
    assert len(m._series) == 3  # m1, m2, m3; m4 is not recorded


def test_meter_history_survives_a_restart_and_a_bad_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "web-meters.json"
    m = MeterHistory(path, {"m1"})
    for i in range(4):
        _reading(m, T0 + timedelta(seconds=i * BUCKET_S), float(i))
    m.save()
    assert path.stat().st_mode & 0o777 == 0o600
    again = MeterHistory(path, {"m1"})
    again.load()
    now = T0 + timedelta(seconds=4 * BUCKET_S - 1)
    assert again.usage("m1", now) == m.usage("m1", now)
    assert len(path.read_bytes()) < 2000
    path.write_text(json.dumps({"version": 1, "bucket_s": BUCKET_S, "series": [{"x": 1}]}))
    broken = MeterHistory(path, {"m1"})
    broken.load()
    assert broken.usage("m1", now) == []


def test_chinese_words_use_chinese_punctuation() -> None:
    for key, words in TEXT.items():
        zh = re.sub(r"\{\w*\}", "", words[Lang.ZH])
        assert not re.search(r"[,:;()!?]", zh), (key, zh)


def test_a_reading_from_a_clock_far_off_does_not_push_the_window_away() -> None:
    m = MeterHistory(None, {"m1"})
    now = datetime.now(UTC)
    _reading(m, now.replace(year=2099), 1.0)  # a meter whose clock is wrong
    _reading(m, now - timedelta(days=3), 2.0)  # a backlog older than the window
    assert m.usage("m1", now) == []
    _reading(m, now - timedelta(minutes=30), 5.0)
    _reading(m, now, 6.0)
    (u,) = m.usage("m1", now)
    assert u.total == 1.0
