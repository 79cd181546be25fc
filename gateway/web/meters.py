"""The last 24 hours of each meter's counters, downsampled to 15 minutes, bounded, on disk.

The console's building view draws, per flat, how much electricity and water it used in
each quarter hour of the last day, so staff see at a glance a flat whose water has not
moved since yesterday.  The data is what the gateway already receives: the counter
readings (`type: counter`, e.g. `energy_import` in kWh, `volume` in m³) of meters.

Kept small on purpose: one value per series and 15-minute bucket (the last reading in
it), 97 buckets per series (96 differences), at most `max_series` series; anything
beyond is not recorded (logged once).  The file is rewritten atomically at most every
few minutes, so a restart loses at most that much and an SD card sees about 300 small
writes a day.  Buckets come from the readings' own timestamps (UTC), not from when they
arrived.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from gateway.sdk.files import write_private
from gateway.sdk.model import Message, Telemetry, ValueType

__all__ = ["BUCKETS", "BUCKET_S", "MeterHistory", "Usage"]

log = logging.getLogger(__name__)

BUCKET_S = 900
BUCKETS = 96  # 24 h of 15 minutes
_KEEP = BUCKETS + 1  # one more value than differences
_SAVE_EVERY_S = 300.0


@dataclass(frozen=True, slots=True)
class Usage:
    """One counter's use per bucket over the last 24 h, oldest first (None: no reading)."""

    device: str
    name: str
    unit: str
    per_bucket: list[float | None]
    total: float
    unchanged_s: int | None  # how long the counter has not moved, None when unknown


@dataclass
class _Series:
    unit: str
    points: dict[int, float] = field(default_factory=dict)  # bucket number -> last value


class MeterHistory:
    """Counters of meters by (device, reading), 15-minute buckets, the last 24 h."""

    def __init__(self, path: Path | None, meters: set[str], max_series: int = 2000) -> None:
        self.path = path
        self.meters = meters  # ids of the devices whose counters are kept
        self.max_series = max_series
        self._series: dict[tuple[str, str], _Series] = {}
        self._dirty = False
        self._saved_at = time.monotonic()
        self._full_logged = False

    # ---- recording ------------------------------------------------------------------

    def on_message(self, message: Message) -> None:
        """Record the counter readings of a meter's telemetry."""
        if not isinstance(message, Telemetry) or message.device.id not in self.meters:
            return
        bucket = int(message.ts.timestamp()) // BUCKET_S
        # A reading stamped by a clock far off (a device or gateway clock not yet set)
        # would push the window away from the present and lock out the good ones.
        now = int(time.time()) // BUCKET_S
        if not now - BUCKETS <= bucket <= now + 1:
            return
        for r in message.readings:
            if r.type is not ValueType.COUNTER or isinstance(r.value, bool | str):
                continue
            self.record(message.device.id, r.name, str(r.unit), bucket, float(r.value))

    def record(self, device: str, name: str, unit: str, bucket: int, value: float) -> None:
        key = (device, name)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                if not self._full_logged:
                    log.warning(
                        "web: meter history full (%d series); %s/%s not recorded",
                        self.max_series,
                        device,
                        name,
                    )
                    self._full_logged = True
                return
            series = self._series[key] = _Series(unit)
        series.unit = unit
        if series.points and bucket < max(series.points) - _KEEP:
            return  # older than the window (a backlog replayed out of order)
        series.points[bucket] = value
        if len(series.points) > _KEEP:
            newest = max(series.points)
            for b in [b for b in series.points if b <= newest - _KEEP]:
                del series.points[b]
        self._dirty = True

    # ---- reading --------------------------------------------------------------------

    def usage(self, device: str, now: datetime) -> list[Usage]:
        """Each counter of `device`: its use per 15 minutes over the 24 h before `now`."""
        last = int(now.timestamp()) // BUCKET_S
        out = []
        for (dev, name), series in sorted(self._series.items()):
            if dev != device:
                continue
            per: list[float | None] = []
            for b in range(last - BUCKETS + 1, last + 1):
                cur, prev = series.points.get(b), _before(series.points, b)
                per.append(None if cur is None or prev is None else max(0.0, cur - prev))
            known = [v for v in per if v is not None]
            out.append(
                Usage(dev, name, series.unit, per, round(sum(known), 6), _unchanged(series, now))
            )
        return out

    # ---- the file -------------------------------------------------------------------

    def load(self) -> None:
        """Take back the file written before a restart; a bad file is logged and ignored."""
        if self.path is None:
            return
        try:
            doc = json.loads(self.path.read_text("utf-8"))
            if not isinstance(doc, dict) or doc.get("version") != 1:
                raise ValueError('expected an object with "version": 1')
            if doc.get("bucket_s") != BUCKET_S:
                raise ValueError(f"bucket_s is not {BUCKET_S}")
            for entry in doc["series"][: self.max_series]:
                device, name, unit = str(entry["device"]), str(entry["name"]), str(entry["unit"])
                if device not in self.meters:
                    continue
                for bucket, value in entry["points"]:
                    self.record(device, name, unit, int(bucket), float(value))
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("web: meter history %s not read, starting empty: %s", self.path, exc)
            self._series.clear()
        self._dirty = False

    def dump(self) -> bytes:
        doc = {
            "version": 1,
            "bucket_s": BUCKET_S,
            "series": [
                {"device": d, "name": n, "unit": s.unit, "points": sorted(s.points.items())}
                for (d, n), s in self._series.items()
            ],
        }
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    def due(self) -> bool:
        """Whether there is something new and the last save is a while ago."""
        return self._dirty and time.monotonic() - self._saved_at >= _SAVE_EVERY_S

    def save(self) -> None:
        """Write the file now (blocking: call from a thread)."""
        if self.path is None:
            return
        data = self.dump()
        self._dirty = False
        self._saved_at = time.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_private(self.path, data)
        except OSError as exc:
            log.warning("web: cannot save the meter history to %s: %s", self.path, exc)


def _before(points: dict[int, float], bucket: int) -> float | None:
    # The value at the end of the bucket before, or of the latest bucket before it
    # (a quarter hour without a reading does not lose the use across it).
    earlier = [b for b in points if b < bucket]
    return points[max(earlier)] if earlier else None


def _unchanged(series: _Series, now: datetime) -> int | None:
    """Seconds since the counter last moved, by buckets; None if it moved in the newest."""
    if len(series.points) < 2:
        return None
    ordered = sorted(series.points.items())
    newest_value = ordered[-1][1]
    since = ordered[0][0]
    for b, v in reversed(ordered):
        if v != newest_value:
            since = b + 1
            break
    else:
        since = ordered[0][0]
    span = int(now.timestamp()) - since * BUCKET_S
    return span if span >= 2 * BUCKET_S else None
