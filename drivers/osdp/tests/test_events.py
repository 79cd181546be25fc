"""libosdp event dicts to typed events and event data, including malformed ones (fuzzed)."""

from __future__ import annotations

from typing import Any

import osdp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.osdp.events import (
    CardFormat,
    CardRead,
    EventCode,
    KeyPress,
    Notification,
    NotificationType,
    OsdpEventError,
    StatusReport,
    StatusType,
    card_data,
    parse_event,
)
from drivers.osdp.pseudonym import card_pseudonym
from drivers.osdp.wiegand import encode

SECRET = b"site-a-secret-0123456789abcdef"


def test_the_numbers_agree_with_libosdp() -> None:
    ours_theirs = [
        (EventCode.CARD_READ, osdp.Event.CardRead),
        (EventCode.KEY_PRESS, osdp.Event.KeyPress),
        (EventCode.STATUS, osdp.Event.Status),
        (EventCode.NOTIFICATION, osdp.Event.Notification),
        (EventCode.MFG_REPLY, osdp.Event.ManufacturerReply),
        (CardFormat.RAW, osdp.CardFormat.Unspecified),
        (CardFormat.WIEGAND, osdp.CardFormat.Wiegand),
        (CardFormat.ASCII, osdp.CardFormat.ASCII),
        (StatusType.LOCAL, osdp.StatusReportType.Local),
        (StatusType.REMOTE, osdp.StatusReportType.Remote),
        (NotificationType.COMMAND, osdp.EventNotification.Command),
        (NotificationType.SECURE_CHANNEL, osdp.EventNotification.SecureChannelStatus),
        (NotificationType.PD_STATUS, osdp.EventNotification.PeripheralDeviceStatus),
    ]
    assert [int(ours) for ours, _ in ours_theirs] == [theirs for _, theirs in ours_theirs]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {
                "event": 1,
                "reader_no": 0,
                "format": 1,
                "direction": 0,
                "length": 26,
                "data": b"\x80\x80\x00\x80",
            },
            CardRead(0, CardFormat.WIEGAND, 26, b"\x80\x80\x00\x80"),
        ),
        ({"event": 2, "reader_no": 1, "data": b"12#"}, KeyPress(1, b"12#")),
        ({"event": 4, "type": 2, "report": b"\x01\x00"}, StatusReport(False, True, False)),
        ({"event": 4, "type": 3, "report": b"\x00"}, StatusReport(True, False, None)),
        (
            {"event": 5, "type": 2, "arg0": 1, "arg1": -1000000},
            Notification(NotificationType.PD_STATUS, 1, -1000000),
        ),
    ],
)
def test_known_events(raw: dict[str, Any], expected: object) -> None:
    assert parse_event(raw) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"event": 3, "vendor_code": 1, "mfg_command": 2, "data": b""},
            "event mfg_reply is not used",
        ),
        ({"event": 9}, "unknown event code 9"),
        (
            {"event": 1, "reader_no": 0, "format": 7, "length": 8, "data": b"x"},
            "unknown card format 7",
        ),
        (
            {"event": 1, "reader_no": 0, "format": 1, "length": 26, "data": b"\x01"},
            "26 bits need 4 bytes",
        ),
        ({"event": 2, "reader_no": 0, "data": "12"}, "key 'data' is str, not bytes"),
        ({"event": 4, "type": 0, "report": b"\x00"}, "status report of the inputs is not used"),
        ({"event": 4, "type": 2, "report": b""}, "status report with no entries"),
        ({"reader_no": 0}, "key 'event' is NoneType, not an integer"),
        (["not", "a", "dict"], "event is list, not a dict"),
        ({"event": True}, "key 'event' is bool, not an integer"),
    ],
)
def test_malformed_and_unknown_events_say_what(raw: object, message: str) -> None:
    with pytest.raises(OsdpEventError, match=message):
        parse_event(raw)


def test_card_data_has_the_pseudonym_and_raw_only_when_asked() -> None:
    read = CardRead(0, CardFormat.WIEGAND, 26, encode(12, 34567))
    data = card_data(read, SECRET, publish_raw=False)
    assert data == {
        "card": card_pseudonym(SECRET, encode(12, 34567), 26),
        "format": "wiegand",
        "bits": 26,
        "reader_no": 0,
        "parity_ok": True,
    }
    assert card_data(read, SECRET, publish_raw=True)["card_raw"] == encode(12, 34567).hex()
    raw = card_data(
        CardRead(1, CardFormat.RAW, 56, b"\x04\xa2\x24\x12\x34\x56\x78"), SECRET, publish_raw=False
    )
    assert raw["format"] == "raw" and "parity_ok" not in raw


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.binary(max_size=40),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
)
_KEYS = st.sampled_from(
    [
        "event",
        "reader_no",
        "format",
        "direction",
        "length",
        "data",
        "type",
        "report",
        "arg0",
        "arg1",
    ]
)


@given(
    st.one_of(
        st.dictionaries(_KEYS, _VALUES, max_size=8),
        st.fixed_dictionaries(
            {"event": st.integers(0, 6)},
            optional={
                k: _VALUES
                for k in ["reader_no", "format", "length", "data", "type", "report", "arg0", "arg1"]
            },
        ),
        _VALUES,
    )
)
def test_fuzz_parse_event_raises_only_its_error(raw: object) -> None:
    try:
        event = parse_event(raw)
    except OsdpEventError:
        return
    if isinstance(event, CardRead):
        card_data(event, SECRET, publish_raw=False)  # every parsed card can be pseudonymised
