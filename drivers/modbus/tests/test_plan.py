"""Request planning: fewest reads within protocol limits and the largest allowed hole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.modbus.plan import Span, plan_device, plan_reads, rtu_frame_bytes, rtu_wire_chars
from drivers.modbus.profile import Table, load_profile

H, IR, C, DI = Table.HOLDING, Table.INPUT, Table.COIL, Table.DISCRETE


def reads(spans: list[Span], **kw: int) -> list[tuple[str, int, int]]:
    return [(str(r.table), r.start, r.count) for r in plan_reads(spans, **kw)]


@pytest.mark.parametrize(
    ("spans", "max_gap", "expected"),
    [
        # adjacent float32 points: one read
        ([Span(H, 0, 2), Span(H, 2, 2), Span(H, 4, 2)], 0, [("holding", 0, 6)]),
        # a hole of 8 registers: bridged with max_gap 8, not with 7
        ([Span(H, 0, 2), Span(H, 10, 2)], 8, [("holding", 0, 12)]),
        ([Span(H, 0, 2), Span(H, 10, 2)], 7, [("holding", 0, 2), ("holding", 10, 2)]),
        # input and holding registers are separate tables even at the same address
        ([Span(IR, 0, 2), Span(H, 0, 2)], 10, [("holding", 0, 2), ("input", 0, 2)]),
        # the order points are listed in does not matter
        ([Span(H, 40, 2), Span(H, 0, 1), Span(H, 20, 2)], 20, [("holding", 0, 42)]),
        # bits of one status register: one read of that register
        ([Span(H, 7, 1), Span(H, 7, 1), Span(H, 8, 1)], 0, [("holding", 7, 2)]),
        # a 64-bit value inside a 32-bit run
        ([Span(H, 0, 2), Span(H, 2, 4), Span(H, 6, 2)], 0, [("holding", 0, 8)]),
        # coils: a hole of one register's worth of bits (16) is bridged by max_gap 1
        ([Span(C, 0, 1), Span(C, 17, 1)], 1, [("coil", 0, 18)]),
        ([Span(C, 0, 1), Span(C, 18, 1)], 1, [("coil", 0, 1), ("coil", 18, 1)]),
        (
            [Span(DI, 0, 1), Span(DI, 15, 1), Span(C, 3, 1)],
            0,
            [("coil", 3, 1), ("discrete", 0, 1), ("discrete", 15, 1)],
        ),
        ([], 10, []),
    ],
)
def test_plan_table(spans: list[Span], max_gap: int, expected: list[tuple[str, int, int]]) -> None:
    assert reads(spans, max_gap=max_gap) == expected


def test_a_read_never_exceeds_125_registers() -> None:
    spans = [Span(H, a, 2) for a in range(0, 126, 2)]  # 63 float32 = 126 registers
    assert reads(spans, max_gap=0) == [("holding", 0, 124), ("holding", 124, 2)]


def test_a_read_never_exceeds_2000_bits() -> None:
    spans = [Span(DI, a, 1) for a in range(2001)]
    assert reads(spans, max_gap=0) == [("discrete", 0, 2000), ("discrete", 2000, 1)]


def test_a_profile_limit_below_the_protocol_one_is_kept() -> None:
    spans = [Span(IR, a, 2) for a in range(0, 80, 2)]
    assert reads(spans, max_gap=0, max_registers=60) == [("input", 0, 60), ("input", 60, 20)]


def test_refuses_a_point_longer_than_a_read_and_a_negative_gap() -> None:
    with pytest.raises(ValueError, match="longer than one read"):
        plan_reads([Span(H, 0, 4)], max_gap=0, max_registers=3)
    with pytest.raises(ValueError, match="max_gap"):
        plan_reads([Span(H, 0, 1)], max_gap=-1)


def test_shipped_profiles_need_few_reads() -> None:
    expected = {
        "eastron_sdm120": 3,  # 13 points
        "eastron_sdm630": 4,  # 30 points
        "chint_ddsu666": 2,
        "chint_dtsu666": 3,
        "dynaflox_ultrad": 1,  # 7 points, one with a fraction part
        "moxa_e1210_fire_zones": 1,
    }
    for name, n in expected.items():
        prof = load_profile(name)
        plan = plan_device(prof.points, max_gap=prof.max_gap, profile=prof)
        assert len(plan.reads) == n, name
        assert all(r.count <= prof.max_registers_per_read for r in plan.reads)


@pytest.mark.parametrize("name", ["dynaflox_ultrad", "eastron_sdm630", "moxa_e1210_fire_zones"])
def test_every_point_span_belongs_to_the_read_that_covers_it(name: str) -> None:
    prof = load_profile(name)
    plan = plan_device(prof.points, max_gap=0, profile=prof)
    for spans in plan.point_spans:
        for s in spans:
            read = plan.reads[plan.read_of(s)]
            span = plan.spans[s]
            assert read.table is span.table
            assert read.start <= span.address and span.end <= read.end
            # Where a poll finds the span's words in that read's reply.
            assert plan.span_words[s] == (span.address - read.start, span.end - read.start)


def test_wire_chars_of_a_read() -> None:
    # A 10-register read: 8-byte request, 25-byte reply, 3.5 characters before each.
    (read,) = plan_reads([Span(IR, 0, 10)], max_gap=0)
    assert rtu_frame_bytes(read) == (8, 25)
    assert rtu_wire_chars([read]) == 8 + 25 + 7
    (bits,) = plan_reads([Span(C, 0, 9)], max_gap=0)
    assert rtu_frame_bytes(bits) == (8, 7)


def _fewest(spans: list[Span], gap: int, limit: int) -> int:
    """Brute force: the minimum number of windows covering sorted spans of one table."""
    order = sorted(spans, key=lambda s: (s.address, s.count))
    best = [0] * (len(order) + 1)
    for i in range(len(order) - 1, -1, -1):
        best[i] = len(order) + 1
        end = order[i].end
        for j in range(i, len(order)):
            if j > i and order[j].address - end > gap:
                break
            end = max(end, order[j].end)
            if end - order[i].address > limit:
                break
            best[i] = min(best[i], 1 + best[j + 1])
    return best[0]


@given(
    starts=st.lists(st.integers(0, 400), min_size=1, max_size=30),
    sizes=st.lists(st.sampled_from([1, 2, 4]), min_size=30, max_size=30),
    gap=st.integers(0, 12),
    limit=st.integers(4, 40),
)
def test_greedy_plan_is_minimal_and_covers_every_span(
    starts: list[int], sizes: list[int], gap: int, limit: int
) -> None:
    spans = [Span(H, a, n) for a, n in zip(starts, sizes, strict=False)]
    plan = plan_reads(spans, max_gap=gap, max_registers=limit)
    assert len(plan) == _fewest(spans, gap, limit)
    served = sorted(i for r in plan for i in r.spans)
    assert served == list(range(len(spans)))
    for r in plan:
        assert r.count <= limit
        for i in r.spans:
            assert r.start <= spans[i].address and spans[i].end <= r.end
