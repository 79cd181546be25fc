"""From the words of a device's reads to each point's value in its canonical unit.

Pure code: takes the plan and what each read returned, gives one `Decoded` per point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .decode import DataType, DecodeError, Decoder, decoder
from .plan import DevicePlan
from .profile import Point

__all__ = ["Decoded", "PointsDecoder", "decode_points", "raw_hex", "tidy"]

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


class PointsDecoder:
    """A device's points against its plan, worked out once; `decode` runs at every poll.

    For each point: where its words are in which read's reply, its decoder (made once per
    data type and order), and how its scale applies.  A poll then does no lookups but
    the replies' (docs/benchmarks.md, issue 16: decoding was a quarter of the gateway's
    CPU at a 1 s poll).
    """

    __slots__ = ("_points", "_reads")

    def __init__(self, points: Sequence[Point], plan: DevicePlan) -> None:
        self._reads = plan.reads
        self._points = tuple(
            _PointCodec.of(p, tuple((plan.span_reads[s], *plan.span_words[s]) for s in spans))
            for p, spans in zip(points, plan.point_spans, strict=True)
        )

    def decode(
        self, results: Mapping[int, Sequence[int]], failed: Mapping[int, str] | None = None
    ) -> list[Decoded]:
        """Every point's value from the words (or bits) each successful read returned.

        `results` maps a read's index in the plan's reads to what it returned; a point
        whose read is missing gets value None and the read's entry in `failed` as its error.
        """
        failed = failed or {}
        out: list[Decoded] = []
        for codec in self._points:
            words: list[Sequence[int]] = []
            error = ""
            for r, lo, hi in codec.spans:
                got = results.get(r)
                if got is None:
                    error = failed.get(r, "not read")
                    break
                if len(got) < hi:
                    error = f"short reply: {len(got)} values for {self._reads[r]}"
                    break
                words.append(got[lo:hi])
            if error:
                out.append(Decoded(codec.point, None, (), error, read_failed=True))
            else:
                out.append(codec.decode(words))
        return out


@dataclass(frozen=True, slots=True)
class _PointCodec:
    point: Point
    spans: tuple[tuple[int, int, int], ...]  # per span: its read, and its words' from, to
    value: Decoder
    fraction: tuple[Decoder, float] | None  # the fraction part's decoder and scale
    whole: bool  # scale and offset are whole numbers: an integer register stays an int
    digits: int

    @classmethod
    def of(cls, point: Point, spans: tuple[tuple[int, int, int], ...]) -> _PointCodec:
        frac = point.fraction
        return cls(
            point,
            spans,
            decoder(point.decode, point.order, point.bit),
            (decoder(frac.decode, frac.order), frac.scale) if frac is not None else None,
            float(point.scale).is_integer() and float(point.offset).is_integer(),
            _DIGITS.get(point.decode, _INT_DIGITS),
        )

    def decode(self, words: list[Sequence[int]]) -> Decoded:
        point = self.point
        raw = tuple(words[0]) if len(words) == 1 else tuple(w for part in words for w in part)
        try:
            value = self.value(words[0])
            if isinstance(value, bool):
                return Decoded(point, value, raw)
            if isinstance(value, float) and not math.isfinite(value):
                return Decoded(point, None, raw, f"the meter reports no value ({value})")
            if self.fraction is not None:
                fraction, scale = self.fraction
                part = fraction(words[1])
                if isinstance(part, float) and not math.isfinite(part):
                    return Decoded(point, None, raw, f"the meter reports no value ({part})")
                value = value + part * scale
        except DecodeError as exc:
            return Decoded(point, None, raw, str(exc))
        scaled = value * point.scale + point.offset
        if self.whole and isinstance(value, int):
            return Decoded(point, int(scaled), raw)
        return Decoded(point, tidy(scaled, self.digits), raw)


def decode_points(
    points: Sequence[Point],
    plan: DevicePlan,
    results: Mapping[int, Sequence[int]],
    failed: Mapping[int, str] | None = None,
) -> list[Decoded]:
    """`PointsDecoder(points, plan).decode(results, failed)`, for a single read."""
    return PointsDecoder(points, plan).decode(results, failed)
