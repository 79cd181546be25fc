"""The pure parser: byte streams to lines, lines to signals, repeats to one press."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.serial_line.parser import (
    MAX_LINE,
    Deduper,
    LineSplitter,
    Parser,
    Problem,
    ProblemKind,
    Signal,
)
from drivers.serial_line.profile import load_profile, profile_names
from gateway.sdk.model import EventType

RF433 = Parser(load_profile("rf433_text"))
EV1527 = Parser(load_profile("ev1527_kv"))

E = EventType


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"RX 1A2B3C SOS", ("1A2B3C", E.ELDERLY_SOS, "SOS")),
        (b"RX 1A2B3C FALL", ("1A2B3C", E.ELDERLY_FALL, "FALL")),
        (b"RX 00BEEF SMOKE", ("00BEEF", E.SMOKE_ALARM, "SMOKE")),
        (b"RX 00BEEF LOWBAT", ("00BEEF", E.DEVICE_BATTERY_LOW, "LOWBAT")),
        (b"RX 00BEEF TAMPER", ("00BEEF", E.DEVICE_TAMPER, "TAMPER")),
        (b"RX 1A2B3C SOS\r", ("1A2B3C", E.ELDERLY_SOS, "SOS")),  # CRLF receivers
        (b"  RX 1A2B3C SOS  ", ("1A2B3C", E.ELDERLY_SOS, "SOS")),
    ],
)
def test_rf433_lines_give_code_and_event(line: bytes, expected: tuple[str, E, str]) -> None:
    parsed = RF433.parse(line)
    assert isinstance(parsed, Signal)
    assert (parsed.code, parsed.event, parsed.function) == expected


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (b"RX 1A2B3C BEEP", ProblemKind.UNKNOWN_FUNCTION),
        (b"RX 1a2b3c SOS", ProblemKind.GARBAGE),  # the receiver prints upper case
        (b"RX 1A2B3 SOS", ProblemKind.GARBAGE),  # a digit lost
        (b"RX 1A2B3C SOS extra", ProblemKind.GARBAGE),
        (b"\x00\x13~~", ProblemKind.GARBAGE),
        (b"RX 1A2B3C S\xffS", ProblemKind.BAD_ENCODING),
        (b"\xc3", ProblemKind.BAD_ENCODING),  # a multi-byte character cut short
    ],
)
def test_rf433_bad_lines_are_problems_of_their_kind(line: bytes, kind: ProblemKind) -> None:
    parsed = RF433.parse(line)
    assert isinstance(parsed, Problem)
    assert parsed.kind is kind


@pytest.mark.parametrize("line", [b"", b"   ", b"\r", b"# RFRX v2.1 ready", b"OK"])
def test_receiver_chatter_and_blank_lines_are_ignored(line: bytes) -> None:
    assert RF433.parse(line) is None


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"CODE=0A1B2C KEY=8", ("0A1B2C", E.ELDERLY_SOS)),
        (b"CODE=A1B2C KEY=4", ("A1B2C", E.ELDERLY_FALL)),
        (b"CODE=0A1B2C KEY=2", ("0A1B2C", E.SMOKE_ALARM)),
        (b"CODE=0A1B2C KEY=1", ("0A1B2C", E.DEVICE_BATTERY_LOW)),
    ],
)
def test_ev1527_lines(line: bytes, expected: tuple[str, E]) -> None:
    parsed = EV1527.parse(line)
    assert isinstance(parsed, Signal)
    assert (parsed.code, parsed.event) == expected


def test_ev1527_unknown_key_is_a_problem() -> None:
    parsed = EV1527.parse(b"CODE=0A1B2C KEY=3")
    assert isinstance(parsed, Problem) and parsed.kind is ProblemKind.UNKNOWN_FUNCTION


@given(st.binary(max_size=600))
def test_no_bytes_make_any_profile_raise(raw: bytes) -> None:
    for name in profile_names():
        parsed = Parser(load_profile(name)).parse(raw)
        assert parsed is None or isinstance(parsed, Signal | Problem)


@given(st.text(alphabet="RX 0123456789ABCDEFSOLMKWTP\r\n\t", max_size=80))
def test_lines_near_the_format_never_raise(text: str) -> None:
    parsed = RF433.parse(text.encode())
    if isinstance(parsed, Signal):
        assert load_profile("rf433_text").code_ok(parsed.code)


# The splitter


def feed_all(splitter: LineSplitter, chunks: list[bytes]) -> list[bytes | Problem]:
    out: list[bytes | Problem] = []
    for chunk in chunks:
        out.extend(splitter.feed(chunk))
    return out


def test_lines_split_across_reads_are_joined() -> None:
    got = feed_all(LineSplitter(), [b"RX 1A", b"2B3C SOS\r\nRX 00", b"BEEF SMOKE\nRX"])
    assert got == [b"RX 1A2B3C SOS", b"RX 00BEEF SMOKE"]


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n", b"\n\r"])
def test_cr_lf_and_crlf_each_end_a_line(end: bytes) -> None:
    splitter = LineSplitter()
    stream = b"RX 1A2B3C SOS" + end + b"RX 00BEEF SMOKE" + end + b"RX C0FFEE"
    # A receiver ending lines with CR alone published nothing when only LF ended them.
    assert feed_all(splitter, [stream[:14], stream[14:]]) == [b"RX 1A2B3C SOS", b"RX 00BEEF SMOKE"]
    assert splitter.feed(end) == [b"RX C0FFEE"]


line_texts = st.text(alphabet="RX 0123456789ABCDEFSOMK", min_size=1, max_size=20)


@given(
    st.lists(st.tuples(line_texts, st.sampled_from([b"\n", b"\r", b"\r\n"])), max_size=20),
    st.integers(min_value=1, max_value=7),
)
def test_any_mix_of_line_ends_and_chunking_gives_the_same_lines(
    lines: list[tuple[str, bytes]], cut: int
) -> None:
    stream = b"".join(text.encode() + end for text, end in lines)
    chunks = [stream[i : i + cut] for i in range(0, len(stream), cut)]
    got = feed_all(LineSplitter(), chunks)
    assert got == [text.encode() for text, _ in lines if text]


def test_an_over_long_line_is_one_problem_and_the_next_line_is_read() -> None:
    splitter = LineSplitter(max_line=16)
    got = feed_all(splitter, [b"A" * 10, b"A" * 10, b"A" * 30, b"A\nRX 1A2B3C SOS\n"])
    assert got == [Problem(ProblemKind.TOO_LONG, "no line end within 16 bytes"), b"RX 1A2B3C SOS"]


def test_a_line_of_exactly_the_limit_is_kept() -> None:
    assert LineSplitter(max_line=8).feed(b"12345678\n") == [b"12345678"]
    assert LineSplitter().max_line == MAX_LINE == 4096


def test_reset_forgets_a_partial_line() -> None:
    splitter = LineSplitter()
    splitter.feed(b"RX 1A2B")
    splitter.reset()
    assert splitter.feed(b"RX 00BEEF SMOKE\n") == [b"RX 00BEEF SMOKE"]


@given(
    st.lists(st.binary(max_size=40), max_size=30),
    st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20),
)
def test_how_bytes_are_chunked_does_not_change_the_lines(
    lines: list[bytes], cuts: list[int]
) -> None:
    max_line = 32
    stream = b"".join(line.replace(b"\n", b"") + b"\n" for line in lines)
    whole = LineSplitter(max_line=max_line).feed(stream)
    chunks, pos, i = [], 0, 0
    while pos < len(stream):
        chunks.append(stream[pos : pos + cuts[i % len(cuts)]])
        pos += cuts[i % len(cuts)]
        i += 1
    pieces = feed_all(LineSplitter(max_line=max_line), chunks)
    # An over-long line is reported as soon as it is too long, whatever the chunking,
    # and every line within the limit comes out whole, in order.
    assert [x for x in pieces if isinstance(x, bytes)] == [x for x in whole if isinstance(x, bytes)]
    assert all(len(x) <= max_line for x in pieces if isinstance(x, bytes))
    assert sum(isinstance(x, Problem) for x in pieces) == sum(isinstance(x, Problem) for x in whole)


@given(st.binary(max_size=20_000))
def test_memory_stays_bounded_without_newlines(data: bytes) -> None:
    splitter = LineSplitter(max_line=64)
    splitter.feed(data.replace(b"\n", b""))
    assert len(splitter._buf) <= 64


# Noise before and between lines


def signals(items: list[Signal | Problem]) -> list[tuple[str, EventType]]:
    return [(x.code, x.event) for x in items if isinstance(x, Signal)]


def kinds(items: list[Signal | Problem]) -> list[ProblemKind]:
    return [x.kind for x in items if isinstance(x, Problem)]


def skipped(items: list[Signal | Problem]) -> int:
    return sum(x.skipped for x in items if isinstance(x, Problem))


def test_noise_before_a_line_costs_no_signal_and_is_counted() -> None:
    got = RF433.scan(b"\x00\xffRX 1A2B3E FALL")
    assert signals(got) == [("1A2B3E", E.ELDERLY_FALL)]
    assert skipped(got) == 2
    assert kinds(got) == [ProblemKind.SKIPPED]
    assert signals(EV1527.scan(b"\xfe\x13CODE=0A1B2C KEY=8")) == [("0A1B2C", E.ELDERLY_SOS)]


def test_two_lines_run_together_are_two_signals() -> None:
    got = RF433.scan(b"RX 1A2B3C SOS\x00RX 00BEEF SMOKE")
    assert signals(got) == [("1A2B3C", E.ELDERLY_SOS), ("00BEEF", E.SMOKE_ALARM)]
    assert skipped(got) == 1  # the NUL
    assert signals(RF433.scan(b"RX 1A2B3C SOSRX 00BEEF SMOKE")) == [
        ("1A2B3C", E.ELDERLY_SOS),
        ("00BEEF", E.SMOKE_ALARM),
    ]


def test_a_clean_line_is_not_resynchronised_and_pure_noise_keeps_its_problem() -> None:
    assert RF433.scan(b"RX 1A2B3C SOS") == [RF433.parse(b"RX 1A2B3C SOS")]
    assert RF433.scan(b"# banner") == []
    assert kinds(RF433.scan(b"\xff\xfe")) == [ProblemKind.BAD_ENCODING]
    assert kinds(RF433.scan(b"xx RX 12")) == [ProblemKind.GARBAGE]
    assert kinds(RF433.scan(b"#RX 1A2B3C SOS")) == [ProblemKind.SKIPPED]  # not chatter
    got = RF433.scan(b"\xffRX 1A2B3C BOGUS")
    assert kinds(got) == [ProblemKind.SKIPPED, ProblemKind.UNKNOWN_FUNCTION]


@given(st.binary(max_size=40), st.sampled_from(["SOS", "FALL", "SMOKE"]))
def test_any_noise_before_a_line_is_skipped_exactly(noise: bytes, fn: str) -> None:
    # Noise holding the start pattern may itself look like a line start; keep it out.
    noise = noise.replace(b"RX ", b"").replace(b"\r", b"").replace(b"\n", b"")
    line = f"RX 1A2B3C {fn}".encode()
    got = RF433.scan(noise + line)
    expected = RF433.parse(line)
    assert isinstance(expected, Signal)
    assert signals(got) == [("1A2B3C", expected.event)]
    whole = RF433.parse(noise + line)  # leading blanks and control bytes are no noise
    assert skipped(got) == (0 if isinstance(whole, Signal) else len(noise))


@given(st.binary(max_size=300))
def test_no_bytes_make_scan_raise_or_skip_more_than_it_got(raw: bytes) -> None:
    for name in profile_names():
        got = Parser(load_profile(name)).scan(raw)
        assert 0 <= skipped(got) <= len(raw)


# Repeats


def test_repeats_within_the_window_are_one_press() -> None:
    d = Deduper(window_s=3.0)
    sos = E.ELDERLY_SOS
    assert d.is_new("1A2B3C", sos, 100.0)
    assert not d.is_new("1A2B3C", sos, 100.4)
    assert not d.is_new("1A2B3C", sos, 101.0)
    assert not d.is_new("1A2B3C", sos, 103.5)  # still held: 2.5 s after the last repeat
    assert d.is_new("1A2B3C", sos, 107.0)  # a new press after a quiet window
    assert d.is_new("1A2B3C", E.ELDERLY_FALL, 107.1)  # another function of the same pendant
    assert d.is_new("00BEEF", sos, 107.2)  # another pendant


def test_a_zero_window_passes_everything() -> None:
    d = Deduper(window_s=0.0)
    assert d.is_new("A", E.ELDERLY_SOS, 1.0)
    assert d.is_new("A", E.ELDERLY_SOS, 1.0)


def test_many_codes_do_not_grow_memory_without_bound() -> None:
    d = Deduper(window_s=1.0)
    for i in range(5000):
        d.is_new(f"{i:06X}", E.ELDERLY_SOS, float(i))
    assert len(d._last) <= 1025
