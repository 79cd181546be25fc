"""Pure code: pseudonyms, Wiegand decoding, keypad buffering, allow lists (and fuzzing)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.osdp.allowlist import parse_allow_list
from drivers.osdp.keypad import Ended, KeypadBuffer, KeypadEntry
from drivers.osdp.pseudonym import (
    PSEUDONYM_RE,
    PseudonymError,
    card_bytes,
    card_pseudonym,
    pin_pseudonym,
)
from drivers.osdp.wiegand import WiegandCard, WiegandError, decode, encode, parse_card_spec

SECRET = b"site-a-secret-0123456789abcdef"
CARD = bytes.fromhex("80800080")  # facility 1, card 1, by hand: 1 00000001 0...01 0


# -- pseudonyms ----------------------------------------------------------------------------


def test_pseudonym_is_stable_keyed_and_shows_nothing_of_the_card() -> None:
    token = card_pseudonym(SECRET, CARD, 26)
    assert PSEUDONYM_RE.match(token) and token.startswith("c-")
    assert token == card_pseudonym(SECRET, CARD, 26)  # same on every gateway of the site
    assert token != card_pseudonym(b"site-b-secret-0123456789abcdef", CARD, 26)
    assert token != card_pseudonym(SECRET, encode(1, 2), 26)
    assert token != card_pseudonym(SECRET, CARD, 32)  # the length is part of the card
    assert "80800080" not in token.lower()


def test_pseudonym_is_a_known_value() -> None:
    # Pinned: a change here would break every allow list in the field.
    key = b"0123456789abcdef"
    assert card_pseudonym(key, CARD, 26) == "c-5IDE4L6GUFT5FS7TPOGFUABU"
    assert pin_pseudonym(key, "1234") == "p-QWMSANFTFDGYA5HGLVPD6RQM"
    # and it is the documented construction: HMAC-SHA256 over "card" 0, length, bits
    digest = hmac.new(key, b"card\x00\x00\x1a" + CARD, hashlib.sha256).digest()[:15]
    assert card_pseudonym(key, CARD, 26) == "c-" + base64.b32encode(digest).decode()


def test_padding_bits_after_the_card_do_not_change_the_pseudonym() -> None:
    padded_with_ones = bytes.fromhex("808000BF")  # the 6 bits after bit 26 set
    assert card_pseudonym(SECRET, padded_with_ones, 26) == card_pseudonym(SECRET, CARD, 26)
    assert card_bytes(padded_with_ones, 26) == CARD


def test_pin_pseudonym_differs_from_a_card_and_per_pin() -> None:
    assert pin_pseudonym(SECRET, "1234").startswith("p-")
    assert pin_pseudonym(SECRET, "1234") != pin_pseudonym(SECRET, "1235")
    assert "1234" not in pin_pseudonym(SECRET, "1234")


def test_short_secret_and_short_data_are_refused() -> None:
    with pytest.raises(PseudonymError, match="at least 16"):
        card_pseudonym(b"short", CARD, 26)
    with pytest.raises(PseudonymError, match="26 bits need 4 bytes, the reader sent 2"):
        card_pseudonym(SECRET, b"\x00\x01", 26)


@given(st.binary(max_size=40), st.integers(-5, 400))
def test_fuzz_pseudonym_raises_only_its_error(data: bytes, bits: int) -> None:
    try:
        token = card_pseudonym(SECRET, data, bits)
    except PseudonymError:
        return
    assert PSEUDONYM_RE.match(token)


# -- Wiegand -------------------------------------------------------------------------------


def _bits26(facility: int, number: int) -> bytes:
    # A second, string-based construction of the format to check the encoder against.
    payload = f"{facility:08b}{number:016b}"
    even = str(payload[:12].count("1") % 2)
    odd = str(1 - payload[12:].count("1") % 2)
    bits = even + payload + odd + "000000"
    return int(bits, 2).to_bytes(4, "big")


def test_wiegand_26_by_hand_and_round_trip() -> None:
    assert encode(1, 1) == CARD == _bits26(1, 1)
    assert decode(CARD, 26) == WiegandCard(26, 1, 1, parity_ok=True)
    assert encode(12, 34567) == _bits26(12, 34567)
    assert decode(encode(255, 65535), 26) == WiegandCard(26, 255, 65535, True)


def test_wiegand_parity_errors_are_flagged() -> None:
    flipped_even = bytes([CARD[0] ^ 0x80]) + CARD[1:]
    assert decode(flipped_even, 26).parity_ok is False
    flipped_odd = CARD[:3] + bytes([CARD[3] ^ 0x40])
    assert decode(flipped_odd, 26).parity_ok is False


def test_wiegand_34() -> None:
    data = encode(513, 4660, bits=34)
    assert len(data) == 5
    assert decode(data, 34) == WiegandCard(34, 513, 4660, True)


def test_wiegand_errors_name_the_problem() -> None:
    with pytest.raises(WiegandError, match="no Wiegand decoding for 37 bits"):
        decode(b"\x00" * 5, 37)
    with pytest.raises(WiegandError, match="facility code 256 does not fit 8 bits"):
        encode(256, 1)
    with pytest.raises(WiegandError, match="is not FACILITY:NUMBER"):
        parse_card_spec("12-345")
    assert parse_card_spec(" 12 : 34567 ") == (12, 34567)


@given(st.binary(max_size=8), st.sampled_from([26, 34, 35, 37, 0, -1]))
def test_fuzz_wiegand_decode_raises_only_its_error(data: bytes, bits: int) -> None:
    try:
        card = decode(data, bits)
    except WiegandError:
        return
    assert card.bits == bits and card.facility >= 0 and card.number >= 0


@given(st.text(max_size=30))
def test_fuzz_card_spec_raises_only_its_error(text: str) -> None:
    try:
        facility, number = parse_card_spec(text)
    except WiegandError:
        return
    assert facility >= 0 and number >= 0


@given(st.integers(0, 255), st.integers(0, 65535))
def test_fuzz_wiegand_26_round_trip(facility: int, number: int) -> None:
    assert decode(encode(facility, number), 26) == WiegandCard(26, facility, number, True)
    assert encode(facility, number) == _bits26(facility, number)


# -- keypad --------------------------------------------------------------------------------


def test_keypad_entry_ends_with_hash_clears_with_star_and_times_out() -> None:
    k = KeypadBuffer(timeout_s=5, max_digits=6)
    assert k.feed(b"12", 0.0) == []
    assert k.feed(b"34\r", 1.0) == [KeypadEntry("1234", Ended.ENTER)]
    assert k.feed(b"99\x7f", 2.0) == []  # '*' clears
    assert k.feed(b"42#", 3.0) == [KeypadEntry("42", Ended.ENTER)]
    assert k.feed(b"7", 10.0) == []
    assert k.due == 15.0
    assert k.expire(14.9) == []
    assert k.expire(15.0) == [KeypadEntry("7", Ended.TIMEOUT)]
    assert k.feed(b"1234567", 20.0) == [KeypadEntry("123456", Ended.OVERFLOW)]
    assert k.feed(b"#", 20.5) == [KeypadEntry("7", Ended.ENTER)]
    assert k.feed(b"\x00A", 21.0) == [] and k.ignored == 2


def test_keypad_typing_after_a_pause_starts_a_new_entry() -> None:
    k = KeypadBuffer(timeout_s=2)
    k.feed(b"55", 0.0)
    assert k.feed(b"1#", 5.0) == [KeypadEntry("55", Ended.TIMEOUT), KeypadEntry("1", Ended.ENTER)]


@given(st.lists(st.tuples(st.binary(max_size=10), st.floats(0, 5)), max_size=20))
def test_fuzz_keypad_never_raises_and_yields_only_digits(
    presses: list[tuple[bytes, float]],
) -> None:
    k = KeypadBuffer(timeout_s=1, max_digits=8)
    now = 0.0
    for keys, gap in presses:
        now += gap
        for entry in k.feed(keys, now):
            assert re.fullmatch(r"[0-9]{1,8}", entry.digits)


# -- allow list ----------------------------------------------------------------------------


def test_allow_list_takes_pseudonyms_and_names_bad_lines() -> None:
    token = card_pseudonym(SECRET, CARD, 26)
    text = f"# lobby\n\n{token}   # flat 101\n12:34567\n  c-tooshort\n{token}\n"
    entries, problems = parse_allow_list(text, "allow.txt")
    assert entries == frozenset({token})
    assert problems == [
        "allow.txt:4: '12:34567' is not a card pseudonym (c- and 24 of A-Z2-7) "
        "(a card number? list pseudonyms from `gateway osdp pseudonym`)",
        "allow.txt:5: 'c-tooshort' is not a card pseudonym (c- and 24 of A-Z2-7)",
    ]


@given(st.text(max_size=200))
def test_fuzz_allow_list_never_raises(text: str) -> None:
    entries, problems = parse_allow_list(text)
    assert all(PSEUDONYM_RE.match(e) for e in entries)
    assert len(problems) <= text.count("\n") + 1
