"""From the words of a device's reads to each point's value in its canonical unit.

Pure code: takes the plan and what each read returned, gives one `Decoded` per point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .decode import DataType, DecodeError, decode
from .plan import DevicePlan
from .profile import Point

__all__ = ["Decoded", "decode_points", "raw_hex", "tidy"]

# Significant digits a value can carry, by source type; more would publish binary noise
# (229.8000030517578 for a float32 229.8, or 229.80000000000001 for 2298 x 0.1).
_DIGITS = {DataType.FLOAT32: 7, DataType.FLOAT64: 15}
_INT_DIGITS = 12


@dataclass(frozen=True, slots=True)
class Decoded:
    """One point's value (None when it could not be read or decoded) and its raw words."""

    point: Point
    value: float | int | bool | None
    raw: tuple[int, ...] = ()
    error: str = ""
    read_failed: bool = False  # its read got no usable reply; the link's fault says why

    @property
    def ok(self) -> bool:
        return self.value is not None


def tidy(value: float, digits: int) -> float:
    """`value` rounded to `digits` significant digits."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def raw_hex(point: Point, raw: Sequence[int]) -> str:
    """Registers as 0x-words ('0x435C 0xCCCD'), bits as 0/1, for installers."""
    if point.table.is_bits:
        return " ".join(str(int(b)) for b in raw)
    return " ".join(f"0x{w:04X}" for w in raw)


def _scaled(point: Point, raw: int | float) -> float | int:
    value = raw * point.scale + point.offset
    if (
        isinstance(raw, int)
        and float(point.scale).is_integer()
        and float(point.offset).is_integer()
    ):
        return int(value)
    return tidy(value, _DIGITS.get(point.decode, _INT_DIGITS))


def _one(point: Point, words: list[Sequence[int]]) -> Decoded:
    raw = tuple(int(w) for part in words for w in part)
    try:
        value = decode(words[0], point.decode, point.order, point.bit)
        if isinstance(value, bool):
            return Decoded(point, value, raw)
        if isinstance(value, float) and not math.isfinite(value):
            return Decoded(point, None, raw, f"the meter reports no value ({value})")
        if point.fraction is not None:
            part = decode(words[1], point.fraction.decode, point.fraction.order)
            if isinstance(part, float) and not math.isfinite(part):
                return Decoded(point, None, raw, f"the meter reports no value ({part})")
            value = value + part * point.fraction.scale
    except DecodeError as exc:
        return Decoded(point, None, raw, str(exc))
    return Decoded(point, _scaled(point, value), raw)


def decode_points(
    points: Sequence[Point],
    plan: DevicePlan,
    results: Mapping[int, Sequence[int]],
    failed: Mapping[int, str] | None = None,
) -> list[Decoded]:
    """Every point's value from the words (or bits) each successful read returned.

    `results` maps a read's index in `plan.reads` to what it returned; a point whose read
    is missing gets value None and the read's entry in `failed` as its error.
    """
    failed = failed or {}
    out: list[Decoded] = []
    for point, span_ids in zip(points, plan.point_spans, strict=True):
        words: list[Sequence[int]] = []
        error = ""
        for s in span_ids:
            r = plan.read_of(s)
            if r not in results:
                error = failed.get(r, "not read")
                break
            read, span = plan.reads[r], plan.spans[s]
            got = results[r]
            lo = span.address - read.start
            if len(got) < lo + span.count:
                error = f"short reply: {len(got)} values for {read}"
                break
            words.append(got[lo : lo + span.count])
        out.append(
            Decoded(point, None, (), error, read_failed=True) if error else _one(point, words)
        )
    return out
