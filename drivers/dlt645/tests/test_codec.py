"""Frame building and parsing against frames written out from DL/T 645-2007."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.dlt645.codec import (
    BROADCAST_ADDRESS,
    ErrorFlags,
    Frame,
    Function,
    IncompleteFrame,
    ParseError,
    bcd_decode,
    bcd_encode,
    build_read,
    build_read_address,
    encode_frame,
    parse_frame,
    scan,
)
from drivers.dlt645.table import decode_reply, load_table

# Checksums below were added up by hand from the standard's frame layout, not by the codec.
READ_00000000 = bytes.fromhex("fe fe fe fe 68 12 10 78 56 34 12 68 11 04 33 33 33 33 e7 16")
# Meter 123456781012 answers DI 00000000 with 123456.78 kWh (78 56 34 12, each +0x33).
REPLY_00000000 = bytes.fromhex("68 12 10 78 56 34 12 68 91 08 33 33 33 33 ab 89 67 45 4b 16")
# The same meter refuses: abnormal reply 0xD1, error byte 0x02 "no requested data".
REFUSAL = bytes.fromhex("68 12 10 78 56 34 12 68 d1 01 35 0d 16")
READ_ADDRESS = bytes.fromhex("fe fe fe fe 68 aa aa aa aa aa aa 68 13 00 df 16")
# Meter 000012345678 answers the broadcast read-address request (0x93, its address reversed).
ADDRESS_REPLY = bytes.fromhex("68 78 56 34 12 00 00 68 93 06 ab 89 67 45 33 33 c3 16")


def test_read_request_matches_the_known_good_frame() -> None:
    assert build_read("123456781012", 0x00000000) == READ_00000000


def test_address_is_sent_in_reverse_byte_order() -> None:
    frame = build_read("000012345678", 0x02010100)
    assert frame[5:11] == bytes.fromhex("78 56 34 12 00 00")
    assert frame[14:18] == bytes([0x00 + 0x33, 0x01 + 0x33, 0x01 + 0x33, 0x02 + 0x33])


def test_broadcast_read_address_request() -> None:
    assert build_read_address() == READ_ADDRESS


def test_parse_a_normal_reply() -> None:
    frame = parse_frame(REPLY_00000000)
    assert frame.address == "123456781012"
    assert frame.is_reply and not frame.is_abnormal and not frame.has_follow_up
    assert frame.function == Function.READ_DATA
    assert frame.data == bytes.fromhex("00 00 00 00 78 56 34 12")
    item = load_table().get("energy_combined_total")
    assert item is not None
    assert decode_reply(item, frame.data).exact == Decimal("123456.78")


def test_parse_with_preamble() -> None:
    assert parse_frame(b"\xfe\xfe" + REPLY_00000000).address == "123456781012"


def test_exception_reply_carries_the_error_byte() -> None:
    frame = parse_frame(REFUSAL)
    assert frame.is_abnormal and frame.is_reply
    assert frame.error() == ErrorFlags.NO_DATA
    assert "no requested data" in ErrorFlags.NO_DATA.describe()


def test_read_address_reply() -> None:
    frame = parse_frame(ADDRESS_REPLY)
    assert frame.address == "000012345678"
    assert frame.function == Function.READ_ADDRESS and frame.is_reply
    assert frame.data[::-1].hex() == "000012345678"


def test_wrong_checksum_is_refused() -> None:
    bad = bytearray(REPLY_00000000)
    bad[-2] ^= 0x01
    with pytest.raises(ParseError, match="checksum") as info:
        parse_frame(bytes(bad))
    assert not isinstance(info.value, IncompleteFrame)
    assert scan(bad).frame is None


def test_flipped_data_bit_is_caught_by_the_checksum() -> None:
    bad = bytearray(REPLY_00000000)
    bad[14] ^= 0x10
    with pytest.raises(ParseError, match="checksum"):
        parse_frame(bytes(bad))


def test_truncated_frame_is_incomplete_and_kept_for_more_bytes() -> None:
    for cut in (1, 5, 10, len(REPLY_00000000) - 1):
        with pytest.raises(IncompleteFrame):
            parse_frame(REPLY_00000000[:cut])
        found = scan(b"\x00\x01" + REPLY_00000000[:cut])
        assert found.frame is None
        assert found.consumed == 2  # garbage dropped, the start of the frame kept


def test_the_preamble_of_a_reply_still_arriving_is_not_counted_as_garbage() -> None:
    found = scan(b"\x00\x01\xfe\xfe\xfe\xfe" + REPLY_00000000[:5])
    assert found.frame is None and found.consumed == 6 and found.skipped == 2
    assert scan(b"\xfe\xfe").skipped == 0


def test_garbage_before_the_frame() -> None:
    garbage = b"\x00\xff\x68\x12\x16\x68\x33"  # includes false starts
    with pytest.raises(ParseError):
        parse_frame(garbage + REPLY_00000000)
    found = scan(garbage + b"\xfe\xfe" + REPLY_00000000 + b"\x68")
    assert found.frame == parse_frame(REPLY_00000000)
    assert found.consumed == len(garbage) + 2 + len(REPLY_00000000)
    assert found.skipped == len(garbage)


def test_false_start_that_looks_incomplete_does_not_hide_a_later_frame() -> None:
    # 68 .. 68 with a huge length: could be a frame start waiting for 200 more bytes.
    fake = bytes.fromhex("68 01 02 03 04 05 06 68 91 c8")
    found = scan(fake + REPLY_00000000)
    assert found.frame == parse_frame(REPLY_00000000)


def test_bytes_after_the_end_are_refused_by_parse_frame() -> None:
    with pytest.raises(ParseError, match="after the end"):
        parse_frame(REPLY_00000000 + b"\x00")


def test_bcd() -> None:
    assert bcd_encode(12345678, 4) == bytes.fromhex("78 56 34 12")
    assert bcd_decode(bytes.fromhex("78 56 34 12")) == 12345678
    assert bcd_decode(bytes.fromhex("34 12 80"), signed=True) == -1234
    assert bcd_decode(bytes.fromhex("34 12 80")) == 801234  # unsigned: bit 7 is a digit
    with pytest.raises(ParseError, match="not BCD"):
        bcd_decode(bytes.fromhex("ff ff"))  # what meters send for a value they lack
    with pytest.raises(ParseError, match="not BCD"):
        bcd_decode(bytes.fromhex("3a 12"))


def test_frame_validates_itself() -> None:
    with pytest.raises(ValueError, match="12 hexadecimal"):
        Frame("12345", 0x11)
    with pytest.raises(ValueError, match="does not fit"):
        Frame(BROADCAST_ADDRESS, 0x11, bytes(256))


addresses = st.binary(min_size=6, max_size=6).map(lambda b: b.hex())
frames = st.builds(Frame, addresses, st.integers(0, 255), st.binary(max_size=255))


@given(st.binary(max_size=600))
def test_parser_raises_only_parse_error(raw: bytes) -> None:
    with contextlib.suppress(ParseError):
        parse_frame(raw)
    found = scan(raw)
    assert 0 <= found.skipped <= found.consumed <= len(raw)


@given(frames, st.booleans())
def test_round_trip(frame: Frame, preamble: bool) -> None:
    assert parse_frame(encode_frame(frame, preamble=preamble)) == frame


@given(st.binary(max_size=40).filter(lambda b: 0x68 not in b), frames, st.binary(max_size=40))
def test_scan_finds_a_frame_between_noise(before: bytes, frame: Frame, after: bytes) -> None:
    raw = before + encode_frame(frame) + after
    found = scan(raw)
    assert found.frame == frame
    assert found.consumed == len(before) + len(encode_frame(frame))


@given(st.binary(max_size=20))
def test_value_decoding_raises_only_parse_error(data: bytes) -> None:
    for item in load_table().items:
        try:
            value = decode_reply(item, item.di.to_bytes(4, "little") + data)
        except ParseError:
            continue
        assert abs(value.exact) < Decimal(10) ** (2 * item.bytes - item.decimals)
