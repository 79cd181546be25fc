"""Meter telemetry as InfluxDB line protocol: the documented mapping (docs/influxdb.md).

One telemetry message becomes one point:

- measurement: the configured name (`meter` by default);
- tags: site, gateway, building, floor and unit (when the device has them), device, kind;
- fields: every numeric reading, by its name, always as a float (so a reading that is
  sometimes 230 and sometimes 230.5 never causes a field type conflict); a bool is 1 or
  0; text readings are left out;
- time: the envelope's `ts`, in milliseconds.

Pure: takes the payload bytes the outbox stores, returns lines.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from influxdb_client import Point, WritePrecision

__all__ = ["PRECISION", "InvalidPayload", "to_points"]

# WritePrecision holds plain strings, but the write API is annotated with the class.
PRECISION = cast(WritePrecision, WritePrecision.MS)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


class InvalidPayload(ValueError):
    """The stored payload is not a telemetry message this mapping understands."""


def to_points(payload: bytes, measurement: str) -> list[str]:
    """The line-protocol points of one telemetry payload; [] when it has no numeric reading."""
    try:
        doc = json.loads(payload)
        device = doc["device"]
        location = device["location"]
        tags = {
            "site": doc["site"],
            "gateway": doc["gateway"],
            "building": location["building"],
            "floor": location.get("floor"),
            "unit": location.get("unit"),
            "device": device["id"],
            "kind": device["kind"],
        }
        values = doc["values"]
        ts = _millis(doc["ts"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidPayload(f"not a telemetry message: {exc!r}") from exc
    if not isinstance(values, dict):
        raise InvalidPayload("'values' is not an object")
    point = Point(measurement)
    for key, value in tags.items():
        if value not in (None, ""):  # line protocol has no empty tag values
            point.tag(key, str(value))
    fields = 0
    for name, reading in values.items():
        number = _number(reading.get("value") if isinstance(reading, dict) else None)
        if number is not None:
            point.field(name, number)
            fields += 1
    if not fields:
        return []
    point.time(ts, PRECISION)
    return [point.to_line_protocol()]


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond any float
            return None
        return number if math.isfinite(number) else None
    return None  # text: InfluxDB would keep it, VictoriaMetrics drops it; left out for both


def _millis(ts: Any) -> int:
    if not isinstance(ts, str):
        raise TypeError(f"ts is {type(ts).__name__}, not a string")
    moment = datetime.fromisoformat(ts)
    if moment.tzinfo is None:
        raise ValueError(f"ts {ts!r} has no time zone")
    # Integer arithmetic: float seconds * 1000 can land one millisecond off.
    return (moment - _EPOCH) // _MS
