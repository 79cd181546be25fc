"""SMS PDUs and the AT answers, as bytes and lines: checked against published vectors and
against the modem simulator's own decoder (tests/modem_sim.py), written apart."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.notify.at import Outcome, final_of, registration, sim_state
from gateway.notify.pdu import encode_number, encode_submit
from gateway.notify.text import alarm_text, place
from tests.modem_sim import alarm_doc, decode_submit


def test_hello_packs_into_the_septets_every_reference_gives() -> None:
    # "hello" in the GSM 7-bit alphabet is E8329BFD06 in every PDU tutorial.
    (part,) = encode_submit("+8613800138000", "hello")
    assert part.hex == "0011000D91683108108300F00000A705E8329BFD06"
    assert part.tpdu_octets == 20  # what AT+CMGS announces: without the SMSC octet


def test_chinese_goes_as_ucs2() -> None:
    (part,) = encode_submit("+8613800138000", "火警 1号楼")
    assert part.hex.endswith("0008A70C706B8B660020003153F7697C")
    sms, _ = decode_submit(part.hex)
    assert sms.text == "火警 1号楼"


def test_national_number_and_odd_digit_count() -> None:
    assert encode_number("10086") == bytes([5, 0x81, 0x01, 0x80, 0xF6])
    with pytest.raises(ValueError, match="not a phone number"):
        encode_number("+86 138")


def test_long_text_is_split_with_one_reference_and_capped() -> None:
    text = "烟感报警" * 60  # 240 characters: 4 UCS-2 parts of 67
    parts = encode_submit("+8613800138000", text, reference=7, max_parts=3)
    assert len(parts) == 3
    decoded = [decode_submit(p.hex)[0] for p in parts]
    assert [d.concat for d in decoded] == [(7, 3, 1), (7, 3, 2), (7, 3, 3)]
    joined = "".join(d.text for d in decoded)
    assert joined.endswith("…") and text.startswith(joined[:-1]) and len(joined) == 3 * 67


def test_extension_characters_are_never_split_from_their_escape() -> None:
    text = "a" * 152 + "€" + "b" * 20  # the euro sign straddles the 153-septet boundary
    parts = encode_submit("+8613800138000", text)
    decoded = "".join(decode_submit(p.hex)[0].text for p in parts)
    assert decoded == text


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.one_of(
            st.sampled_from("@£$¥èé\nØ_ΔÆß !\"#%&'()*+,-./09:;<=>?AZaz{}[]~|^€\\"),
            st.characters(min_codepoint=0x20, max_codepoint=0x9FFF),
        ),
        min_size=0,
        max_size=400,
    )
)
def test_any_text_decodes_to_what_was_meant(text: str) -> None:
    # 400 characters fit in 10 parts in either coding: nothing is cut here.
    parts = encode_submit("+8613800138000", text, reference=3, max_parts=10)
    decoded = [decode_submit(p.hex) for p in parts]
    # TPDU = first octet, MR, address (2 + 7 octets), PID, DCS, VP, UDL: 15; then <= 140.
    for (_, tpdu_len), part in zip(decoded, parts, strict=True):
        assert tpdu_len == part.tpdu_octets <= 15 + 140
    joined = "".join(s.text for s, _ in decoded)
    # UCS-2 has no surrogate pairs: a character beyond the BMP arrives as U+FFFD.
    assert joined == "".join(ch if ord(ch) <= 0xFFFF else "\ufffd" for ch in text)


def test_final_results_and_their_meaning() -> None:
    assert final_of("OK") is not None and final_of("OK").outcome is Outcome.OK  # type: ignore[union-attr]
    err = final_of("+CMS ERROR: 38")
    assert err is not None and err.outcome is Outcome.ERROR and err.transient
    assert "network out of order" in err.reason
    pin = final_of("+CME ERROR: 11")
    assert pin is not None and not pin.transient and "PIN" in pin.reason
    assert final_of("+CMGS: 12") is None and final_of("RING") is None


def test_registration_and_sim_state() -> None:
    assert registration(["+CREG: 0,1"]) == (True, "registered (home)")
    assert registration(["+CREG: 0,5"])[0]
    assert registration(["+CREG: 0,2"]) == (False, "searching for a network")
    assert sim_state(["+CPIN: SIM PIN"]) == "SIM PIN"


def test_chinese_text_reads_building_not_floor_and_says_the_cause() -> None:
    from zoneinfo import ZoneInfo

    text = alarm_text(
        alarm_doc(cause="elderly.fall"),
        site_name="阳光花园",
        lang="zh",
        zone=ZoneInfo("Asia/Shanghai"),
    )
    assert text.startswith("【求助】阳光花园 1号楼3层301室 301 pendant：跌倒报警。14:03")
    # No ASCII punctuation in a Chinese sentence (the clock time aside).
    assert not set(text.replace("14:03", "")) & set(":,.;!?()")
    en = alarm_text(
        alarm_doc(cause="elderly.fall", escalation=2),
        site_name="Sunrise",
        lang="en",
        zone=ZoneInfo("Asia/Shanghai"),
    )
    assert "fall detected" in en and "escalated to level 2" in en and "bldg 1, floor 3" in en


def test_place_keeps_names_that_are_not_numbers() -> None:
    assert place({"building": "A", "floor": "B1", "unit": "lobby"}, "zh") == "AB1lobby"
    assert place({"building": "2"}, "zh") == "2号楼"
