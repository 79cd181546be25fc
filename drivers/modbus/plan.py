"""Request planning: the fewest reads that fetch every point of a device.

Pure code.  Points of one table are sorted by address and merged greedily: a read grows
while the next point fits under the read's limit and the hole before it is at most
`max_gap`.  Greedy is optimal here: within a run of points whose holes are all small
enough, taking as many as fit in each read is the classic minimum cover of sorted
intervals by windows of bounded length.  Holes cost wire time and may hit registers
the meter does not implement (it then answers exception 2), so `max_gap` is the
installer's knob; 0 merges only adjacent points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .profile import Point, Profile, Table

__all__ = [
    "BITS_PER_GAP_REGISTER",
    "DevicePlan",
    "Read",
    "Span",
    "plan_device",
    "plan_reads",
    "rtu_frame_bytes",
    "rtu_wire_chars",
]

# A hole of one register costs two bytes on the wire; the same bytes carry 16 coils.
BITS_PER_GAP_REGISTER = 16

_TABLE_ORDER = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT)


@dataclass(frozen=True, slots=True)
class Span:
    """A run of registers (or bits) one point needs: table, first address, count."""

    table: Table
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class Read:
    """One request: a table, a start address and a count, and the spans it serves."""

    table: Table
    start: int
    count: int
    spans: tuple[int, ...]  # indices into the spans given to plan_reads

    @property
    def end(self) -> int:
        return self.start + self.count

    def __str__(self) -> str:
        return f"{self.table} {self.start}+{self.count}"


def plan_reads(
    spans: Sequence[Span],
    *,
    max_gap: int,
    max_registers: int = Table.HOLDING.max_per_read,
    max_bits: int = Table.COIL.max_per_read,
) -> list[Read]:
    """The reads covering every span, fewest first, in table then address order.

    Raises ValueError if one span alone is longer than its table's limit.
    """
    if max_gap < 0:
        raise ValueError("max_gap must be >= 0")
    reads: list[Read] = []
    for table in _TABLE_ORDER:
        limit = max_bits if table.is_bits else max_registers
        gap = max_gap * BITS_PER_GAP_REGISTER if table.is_bits else max_gap
        members = sorted(
            (i for i, s in enumerate(spans) if s.table is table),
            key=lambda i: (spans[i].address, spans[i].count),
        )
        start = end = 0
        current: list[int] = []
        for i in members:
            s = spans[i]
            if s.count > limit:
                raise ValueError(f"{table} {s.address}+{s.count} is longer than one read ({limit})")
            if current and s.address - end <= gap and max(end, s.end) - start <= limit:
                end = max(end, s.end)
                current.append(i)
                continue
            if current:
                reads.append(Read(table, start, end - start, tuple(current)))
            start, end, current = s.address, s.end, [i]
        if current:
            reads.append(Read(table, start, end - start, tuple(current)))
    return reads


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """A device's reads, and for each point the spans (value, then fraction) it uses."""

    reads: tuple[Read, ...]
    spans: tuple[Span, ...]
    point_spans: tuple[tuple[int, ...], ...]  # per profile point, indices into spans
    # Per span: the read that carries it, and where in that read's reply its words are
    # (from, to).  Worked out once; every point of every poll looks them up.
    span_reads: tuple[int, ...] = field(init=False)
    span_words: tuple[tuple[int, int], ...] = field(init=False)

    def __post_init__(self) -> None:
        where = {s: r for r, read in enumerate(self.reads) for s in read.spans}
        span_reads = tuple(where[s] for s in range(len(self.spans)))
        words = []
        for span, r in zip(self.spans, span_reads, strict=True):
            lo = span.address - self.reads[r].start
            words.append((lo, lo + span.count))
        object.__setattr__(self, "span_reads", span_reads)
        object.__setattr__(self, "span_words", tuple(words))

    def read_of(self, span_index: int) -> int:
        """Which read carries span `span_index`."""
        return self.span_reads[span_index]

    def registers_requested(self) -> int:
        return sum(r.count for r in self.reads if not r.table.is_bits)


def plan_device(
    points: Sequence[Point], *, max_gap: int, profile: Profile | None = None
) -> DevicePlan:
    """Plan the reads of a device's points under its profile's per-read limits."""
    spans: list[Span] = []
    point_spans: list[tuple[int, ...]] = []
    for p in points:
        mine = []
        for table, address, count in p.spans():
            mine.append(len(spans))
            spans.append(Span(table, address, count))
        point_spans.append(tuple(mine))
    reads = plan_reads(
        spans,
        max_gap=max_gap,
        max_registers=profile.max_registers_per_read if profile else Table.HOLDING.max_per_read,
        max_bits=profile.max_bits_per_read if profile else Table.COIL.max_per_read,
    )
    return DevicePlan(tuple(reads), tuple(spans), tuple(point_spans))


def rtu_frame_bytes(read: Read) -> tuple[int, int]:
    """Bytes of the RTU request and of its normal reply: unit, function, data, CRC."""
    data = (read.count + 7) // 8 if read.table.is_bits else 2 * read.count
    return 8, 5 + data


def rtu_wire_chars(reads: Sequence[Read]) -> float:
    """Characters of line time a poll of these reads takes at least: every request and
    reply, and the 3.5 characters of silence RTU needs before each of them."""
    return sum(sum(rtu_frame_bytes(r)) + 2 * 3.5 for r in reads)
