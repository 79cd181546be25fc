"""The driver against real libosdp readers on the far end of a socat pty pair."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import osdp
import pytest

from community_protocol.schemas import validator
from drivers.osdp import DRIVER, OsdpDriver
from drivers.osdp.bus import Bus, BusError, PdConfig
from drivers.osdp.probe import read_once
from drivers.osdp.pseudonym import card_pseudonym, pin_pseudonym
from drivers.osdp.wiegand import encode
from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import ClockState, Event, EventType, Identity
from gateway.sdk.model import encode as encode_message
from tests.driverkit import device_specs, events, running, until
from tests.driverkit import event_types as types
from tests.peers import PtyPair, pty_pair
from tests.recording import RecordingContext

from .peer import ReaderPeer, SharedLine, swipe_until

E = EventType
SITE_SECRET = "sunrise-gardens-test-secret-0123456789"
KEY = bytes(range(16))
CARD = encode(12, 34567)  # facility 12, card 34567
OTHER = encode(99, 1)


class Bench:
    """The readers' end of a bus and the files a config points to."""

    def __init__(self, tmp_path: Path, ptys: PtyPair) -> None:
        self.tmp = tmp_path
        self.ptys = ptys
        self.line = SharedLine(ptys.b)
        self.peers: list[ReaderPeer] = []
        (tmp_path / "site.secret").write_text(SITE_SECRET + "\n")
        (tmp_path / "good.scbk").write_text(KEY.hex() + "\n")
        (tmp_path / "wrong.scbk").write_text(bytes(16 * [7]).hex() + "\n")

    def reader(self, address: int, scbk: bytes | None = None) -> ReaderPeer:
        peer = ReaderPeer(self.line, address, scbk)
        self.peers.append(peer)
        peer.start()
        return peer

    def specs(self, *devices: tuple[str, dict[str, Any]]) -> list[DeviceSpec]:
        common = {
            "port": str(self.ptys.a),
            "baudrate": 115200,
            "site_secret": {"file": "site.secret"},
            "secure_channel": "off",
            "retry_s": 0.5,
        }
        doors = [(device_id, "door", {**common, **drv}) for device_id, drv in devices]
        return device_specs(self.tmp, DRIVER, *doors)

    def close(self) -> None:
        for peer in self.peers:
            peer.stop()
        self.line.close()


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    before = set(threading.enumerate())
    with pty_pair(tmp_path) as ptys:
        b = Bench(tmp_path, ptys)
        try:
            yield b
        finally:
            b.close()
    # libosdp's threads (control panel and peripherals) are all gone.
    assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []


def online(ctx: RecordingContext, device_id: str) -> Callable[[], bool]:
    return lambda: ctx.availability.get(device_id) == (True, "")


def check_schema(ctx: RecordingContext) -> None:
    check = validator("event")
    for n, m in enumerate(ctx.messages):
        check.validate(json.loads(encode_message(m, Identity("s", "g"), n + 1, ClockState.SYNCED)))


def test_card_keypad_and_tamper_become_events_without_raw_numbers(
    bench: Bench,
    recording_ctx: RecordingContext,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    peer = bench.reader(1)
    specs = bench.specs(
        ("lobby", {"address": 1, "keypad_timeout_s": 1.0}),  # 0.3 s ended "12" when busy
        ("elsewhere", {"address": 1, "port": str(bench.tmp / "no-such-tty")}),
    )
    driver = OsdpDriver(specs, recording_ctx)

    async def body() -> None:
        async with running(driver):
            await until(online(recording_ctx, "lobby"))
            peer.card(CARD)
            await until(lambda: E.ACCESS_CARD_READ in types(recording_ctx))
            peer.keys(b"12")
            peer.keys(b"34\r")  # OSDP's '#'
            await until(lambda: E.ACCESS_KEYPAD in types(recording_ctx))
            peer.keys(b"77")  # and no '#': ends after keypad_timeout_s
            await until(lambda: len(events(recording_ctx, of_type=E.ACCESS_KEYPAD)) == 2)
            peer.tamper(True)  # once not seen within 5 s in a full suite run
            await until(lambda: E.DEVICE_TAMPER in types(recording_ctx), 20)
            peer.tamper(True)  # still open: no second event
            peer.tamper(False)
            peer.manufacturer_reply(b"\x01\x02")  # a reply the driver has no use for, twice
            peer.manufacturer_reply(b"\x03")
            peer.card(OTHER)
            # Six events queued, one handed over per poll: over 5 s once under stress-ng.
            await until(lambda: len(events(recording_ctx, of_type=E.ACCESS_CARD_READ)) == 2, 20)

    asyncio.run(body())
    secret = SITE_SECRET.encode()
    assert types(recording_ctx, "lobby") == [
        E.ACCESS_CARD_READ,
        E.ACCESS_KEYPAD,
        E.ACCESS_KEYPAD,
        E.DEVICE_TAMPER,
        E.ACCESS_CARD_READ,
    ]
    card = events(recording_ctx, of_type=E.ACCESS_CARD_READ)[0]
    assert card.data == {
        "card": card_pseudonym(secret, CARD, 26),
        "format": "wiegand",
        "bits": 26,
        "reader_no": 0,
        "parity_ok": True,
    }
    keypad, paused = events(recording_ctx, of_type=E.ACCESS_KEYPAD)
    assert keypad.data == {
        "pin": pin_pseudonym(secret, "1234"),
        "length": 4,
        "ended": "enter",
        "reader_no": 0,
    }
    assert (paused.data["pin"], paused.data["ended"]) == (pin_pseudonym(secret, "77"), "timeout")
    assert events(recording_ctx, of_type=E.DEVICE_TAMPER)[0].data == {
        "tamper": True,
        "source": "reader",
    }
    check_schema(recording_ctx)
    # The other device's port does not exist: offline with the reason, the lobby unaffected.
    assert recording_ctx.availability["elsewhere"] == (
        False,
        f"serial port {bench.tmp / 'no-such-tty'}: cannot open it: No such file or directory",
    )
    # No card number, PIN or card bytes in our logs or in libosdp's own stderr output.
    out = caplog.text + "".join(capfd.readouterr())
    for raw in ("34567", CARD.hex(), "1234", OTHER.hex()):
        assert raw not in out
    assert driver.health().extra["cards"] == 2
    assert driver.health().extra["unknown_events"] == 2
    skipped = [r.getMessage() for r in caplog.records if "reply skipped" in r.getMessage()]
    assert skipped == [
        "osdp device lobby: reply skipped: event mfg_reply is not used by this driver "
        "(keys data,event,vendor_code)"
    ]


def test_secure_channel_allow_list_grants_denies_and_reloads(
    bench: Bench, recording_ctx: RecordingContext
) -> None:
    peer = bench.reader(1, scbk=KEY)
    secret = SITE_SECRET.encode()
    allow = bench.tmp / "allow.txt"
    allow.write_text(f"# lobby\n{card_pseudonym(secret, CARD, 26)}  # flat 101\n")
    specs = bench.specs(
        (
            "lobby",
            {
                "address": 1,
                "secure_channel": "scbk",
                "scbk": {"file": "good.scbk"},
                "allow_list": "allow.txt",
                "publish_raw_card": True,
            },
        )
    )
    driver = OsdpDriver(specs, recording_ctx)

    async def body() -> None:
        async with running(driver):
            await until(online(recording_ctx, "lobby"))
            assert driver._readers["lobby"].sc_active
            # Again if a busy machine's retry broke the secure channel ("Invalid MAC").
            await swipe_until(peer, CARD, lambda: E.ACCESS_GRANTED in types(recording_ctx))
            await swipe_until(peer, OTHER, lambda: E.ACCESS_DENIED in types(recording_ctx))
            with allow.open("a") as f:  # the installer adds the other card
                f.write(card_pseudonym(secret, OTHER, 26) + "\n")
            await swipe_until(
                peer, OTHER, lambda: types(recording_ctx).count(E.ACCESS_GRANTED) == 2
            )
            await until(lambda: len(peer.commands) >= 6)

    asyncio.run(body())
    granted, denied, granted_again = recording_ctx.messages
    assert isinstance(granted, Event) and isinstance(denied, Event)
    assert isinstance(granted_again, Event) and granted_again.data["card"] == denied.data["card"]
    assert granted.data["decision"] == "allow_list"
    assert granted.data["card_raw"] == CARD.hex()  # asked for in this config only
    assert denied.data["card"] == card_pseudonym(secret, OTHER, 26)
    # Green then red on the reader, each with a beep: the reader declared LED and buzzer.
    leds = [c["on_color"] for c in peer.commands if c["command"] == osdp.Command.LED]
    assert leds == [
        osdp.CommandLEDColor.Green,
        osdp.CommandLEDColor.Red,
        osdp.CommandLEDColor.Green,
    ]
    beeps = [c["rep_count"] for c in peer.commands if c["command"] == osdp.Command.Buzzer]
    assert beeps == [1, 3, 1]
    check_schema(recording_ctx)


def test_wrong_key_is_offline_with_a_clear_reason(
    bench: Bench, recording_ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    bench.reader(1, scbk=KEY)
    specs = bench.specs(
        ("lobby", {"address": 1, "secure_channel": "scbk", "scbk": {"file": "wrong.scbk"}})
    )
    driver = OsdpDriver(specs, recording_ctx)

    async def body() -> None:
        async with running(driver):
            await until(lambda: "lobby" in recording_ctx.availability)
            await asyncio.sleep(1.5)  # a few retries with the same wrong key

    asyncio.run(body())
    available, reason = recording_ctx.availability["lobby"]
    assert not available
    assert "secure channel refused" in reason and "wrong.scbk" in reason
    assert int(driver.health().extra["retries"]) >= 1
    said = [r.getMessage() for r in caplog.records if "secure channel refused" in r.getMessage()]
    assert len(said) == 1  # logged once, not per retry


def test_install_mode_sets_the_key_on_a_new_reader(
    bench: Bench, recording_ctx: RecordingContext, caplog: pytest.LogCaptureFixture
) -> None:
    bench.reader(1, scbk=None)  # factory state: install mode, SCBK-D
    specs = bench.specs(
        ("lobby", {"address": 1, "secure_channel": "install", "scbk": {"file": "good.scbk"}})
    )
    driver = OsdpDriver(specs, recording_ctx)

    async def body() -> None:
        async with running(driver):
            await until(online(recording_ctx, "lobby"))
            await until(lambda: driver._readers["lobby"].sc_active)

    asyncio.run(body())
    assert "the reader now holds the SCBK; set secure_channel: scbk" in caplog.text


@pytest.mark.slow  # libosdp takes about 8 s to give up on a silent reader
def test_two_readers_on_one_bus_one_fails_and_comes_back(
    bench: Bench, recording_ctx: RecordingContext
) -> None:
    lobby = bench.reader(1)
    bikes = bench.reader(2)
    specs = bench.specs(
        ("lobby", {"address": 1}),
        ("bikes", {"address": 2}),
        # Configured, but never connected; with a key: silence is not a refused key.
        ("cellar", {"address": 3, "secure_channel": "scbk", "scbk": {"file": "good.scbk"}}),
    )
    driver = OsdpDriver(specs, recording_ctx)

    def lobby_reads() -> int:
        return types(recording_ctx, "lobby").count(E.ACCESS_CARD_READ)

    async def body() -> None:
        async with running(driver):
            await until(
                lambda: online(recording_ctx, "lobby")() and online(recording_ctx, "bikes")()
            )
            bikes.stop()  # powered off
            # libosdp probes a silent reader for about 8 s before it calls it offline.
            await until(lambda: recording_ctx.availability["bikes"][0] is False, timeout=15)
            # Lost too if libosdp, probing bikes, takes it as stray ("Invalid pd address").
            await swipe_until(lobby, CARD, lambda: lobby_reads() >= 1)
            assert online(recording_ctx, "lobby")()
            bench.line.inject(bytes(range(256)) + b"\x53\x01\xff\xff" * 20)  # noise on the line
            bikes.start()
            await until(online(recording_ctx, "bikes"), timeout=10)
            await swipe_until(lobby, OTHER, lambda: lobby_reads() >= 2)
            # libosdp gives up on the silent reader late under load (KeyError below).
            await until(lambda: "cellar" in recording_ctx.availability, timeout=15)

    went: list[tuple[bool | None, str]] = []
    real = recording_ctx.set_available

    def record(device_id: str, available: bool | None, reason: str = "") -> None:
        if device_id == "bikes":
            went.append((available, reason))
        real(device_id, available, reason)

    recording_ctx.set_available = record  # type: ignore[method-assign]
    asyncio.run(body())
    # Online, offline, online again. (Under load libosdp may drop a reader for a line error
    # before or after that, and the driver says so: the line, not the driver.)
    up = went.index((True, ""))
    down = next(i for i, (ok, _) in enumerate(went) if ok is False and i > up)
    assert (True, "") in went[down:], went
    (reason,) = {r for ok, r in went[up:] if not ok}
    assert (
        reason
        == f"reader at address 2 on {bench.ptys.a}: stopped replying (power, cable, or the reader was replaced)"
    )
    assert [m.device.id for m in recording_ctx.messages] == ["lobby", "lobby"]
    assert driver.health().devices_online == 2
    assert recording_ctx.availability["cellar"] == (
        False,
        f"reader at address 3 on {bench.ptys.a}: no reply at 115200 baud "
        "(check power, A/B wiring, address, baud rate and termination)",
    )


def test_read_once_reports_identity_and_features(bench: Bench) -> None:
    bench.reader(3, scbk=KEY)
    (spec,) = bench.specs(
        ("lobby", {"address": 3, "secure_channel": "scbk", "scbk": {"file": "good.scbk"}})
    )
    result = asyncio.run(read_once(spec, timeout_s=5))
    assert result.ok, result.fault
    points = {p.name: p.value for p in result.points}
    assert points["online"] is True and points["secure_channel"] is True
    assert points["led_control"] is True and points["buzzer"] is True
    assert (points["vendor_code"], points["model"], points["serial_number"]) == (
        "0A1B2C",
        5,
        "12345678",
    )
    assert points["firmware"] == "010203"


def test_read_once_without_a_reader_names_what_to_check(bench: Bench) -> None:
    (spec,) = bench.specs(("lobby", {"address": 9}))
    result = asyncio.run(read_once(spec, timeout_s=1))
    assert not result.ok
    assert "no reply at 115200 baud" in result.fault and "address 9" in result.fault


def test_read_once_with_the_wrong_key_says_so(bench: Bench) -> None:
    bench.reader(3, scbk=KEY)
    (spec,) = bench.specs(
        ("lobby", {"address": 3, "secure_channel": "scbk", "scbk": {"file": "wrong.scbk"}})
    )
    result = asyncio.run(read_once(spec, timeout_s=5))
    assert "secure channel refused" in result.fault


def test_a_port_that_dies_is_reopened(bench: Bench, recording_ctx: RecordingContext) -> None:
    bench.reader(1)
    (spec,) = bench.specs(("lobby", {"address": 1}))
    driver = OsdpDriver([spec], recording_ctx)
    port = str(bench.ptys.a)

    async def body() -> None:
        async with running(driver):
            await until(online(recording_ctx, "lobby"))
            bench.ptys.proc.terminate()  # the USB adapter is pulled out
            await until(lambda: recording_ctx.availability["lobby"][0] is False, timeout=12)
            bench.close()
            # Plugged in again: the same port name comes back, and the reader with it.
            replugged.append(
                subprocess.Popen(
                    [
                        "socat",
                        f"pty,raw,echo=0,link={bench.ptys.a}",
                        f"pty,raw,echo=0,link={bench.ptys.b}",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            await until(lambda: bench.ptys.a.exists() and bench.ptys.b.exists())
            bench.line = SharedLine(bench.ptys.b)
            peer = bench.reader(1)
            await until(online(recording_ctx, "lobby"), timeout=10)
            peer.card(CARD)
            await until(lambda: E.ACCESS_CARD_READ in types(recording_ctx))

    went: list[tuple[bool | None, str]] = []
    real = recording_ctx.set_available

    def record(device_id: str, available: bool | None, reason: str = "") -> None:
        went.append((available, reason))
        real(device_id, available, reason)

    recording_ctx.set_available = record  # type: ignore[method-assign]
    replugged: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(body())
    finally:
        bench.close()
        for proc in replugged:  # the pty_pair fixture only ends the socat it started
            proc.terminate()
            proc.wait(timeout=5)
    reasons = [reason for ok, reason in went if not ok]
    assert reasons and all(r.startswith(f"serial port {port}: ") for r in reasons), reasons
    assert int(driver.health().extra["bus_faults"]) >= 1


@pytest.mark.parametrize("after_s", [0.0, 0.001, 0.01, 0.05])
def test_cancelled_while_starting_leaves_no_thread(
    bench: Bench, recording_ctx: RecordingContext, after_s: float
) -> None:
    bench.reader(1)
    driver = OsdpDriver(bench.specs(("lobby", {"address": 1})), recording_ctx)

    async def body() -> None:
        async with running(driver):
            await asyncio.sleep(after_s)

    asyncio.run(body())
    # the bench fixture checks that libosdp's thread is gone


def test_a_bus_closed_before_its_start_ran_never_starts(ptys: PtyPair) -> None:
    # A task cancelled while `to_thread(bus.start)` waited for a worker thread queues
    # `bus.close`; with two threads free, close could take the lock first and start
    # then opened the port and left libosdp's (non-daemon) thread running: the worker
    # process hung at its exit once in a parallel run.
    before = set(threading.enumerate())
    bus = Bus(str(ptys.a), 115200, [PdConfig(1, None, False, "lobby")], lambda _a, _e: None)
    bus.close()
    with pytest.raises(BusError, match="closed before it started"):
        bus.start()
    assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []
