"""The SMS notifier against the modem simulator on a socat pty pair, and a real gateway.

The notifier runs for real (its SQLite record, its modem code on a real pty); only the
far end of the serial line is simulated (tests/modem_sim.py), misbehaving on request.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.notify.settings import SmsConfig
from gateway.notify.sms import SmsNotifier
from tests.harness import GatewayProc, write_config
from tests.modem_sim import ModemSim, alarm_doc
from tests.peers import free_port, pty_pair, wait_for

ZONE = ZoneInfo("Asia/Shanghai")
WARDEN = "+8613800138000"
MANAGER = "+8613900139000"


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[tuple[ModemSim, Path]]:
    with pty_pair(tmp_path) as pair:
        sim = ModemSim(pair.b).start()
        try:
            yield sim, pair.a
        finally:
            sim.stop()


def _cfg(port: Path, **over: Any) -> SmsConfig:
    data: dict[str, Any] = {
        "port": str(port),
        "on_call": [
            {"name": "warden", "phone": WARDEN, "language": "zh"},
            {"name": "manager", "phone": MANAGER, "language": "en", "from_level": 1},
        ],
        "command_timeout_s": 0.5,
        "send_timeout_s": 2,
    }
    data.update(over)
    return SmsConfig.model_validate(data)


@asynccontextmanager
async def running(cfg: SmsConfig, db: Path) -> AsyncIterator[SmsNotifier]:
    notifier = SmsNotifier(cfg, site_name="阳光花园", db_path=db, zone=ZONE, retry_base_s=0.1)
    task = asyncio.create_task(notifier.run())
    try:
        yield notifier
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def _rows(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT alarm_id, level, recipient, state, attempts FROM sms ORDER BY id"
        ).fetchall()


def test_raise_texts_the_warden_and_escalation_the_manager_too(
    modem: tuple[ModemSim, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim, port = modem
    db = tmp_path / "notify.db"
    caplog.set_level(logging.DEBUG)

    async def scenario() -> None:
        async with running(_cfg(port), db) as n:
            n.observe(alarm_doc())
            await until(lambda: len(sim.texts()) == 1)
            n.observe(alarm_doc(count=2))  # a repeat of the same alarm texts nobody again
            n.observe(alarm_doc(escalation=1))
            await until(lambda: len(sim.texts()) == 3)
            # Recorded too, and nothing more goes out (the repeat texted nobody).
            await until(lambda: n.health()["sent"] == 3 and n.health()["pending"] == 0)
            await asyncio.sleep(0.3)
            assert len(sim.texts()) == 3

    asyncio.run(scenario())
    (num1, zh1), (num2, zh2), (num3, en) = sim.texts()
    assert num1 == WARDEN and zh1.startswith(
        "【求助】阳光花园 1号楼3层301室 301 pendant：紧急按钮。"
    )
    assert {num2, num3} == {WARDEN, MANAGER}
    by_number = {num2: zh2, num3: en}
    assert "已升级第1级" in by_number[WARDEN]
    assert (
        "SOS button pressed" in by_number[MANAGER] and "escalated to level 1" in by_number[MANAGER]
    )
    # Phone numbers are personal data: not in the log, not in the record.
    assert WARDEN not in caplog.text and MANAGER not in caplog.text
    assert "13800138000" not in db.read_bytes().decode("latin-1")
    assert [r[:4] for r in _rows(db)] == [
        ("A1", 0, "warden", "sent"),
        ("A1", 1, "warden", "sent"),
        ("A1", 1, "manager", "sent"),
    ]


def test_network_errors_are_retried_and_logged_once(
    modem: tuple[ModemSim, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim, port = modem
    sim.cms_errors.extend([38, 38, 42])
    db = tmp_path / "notify.db"

    async def scenario() -> None:
        async with running(_cfg(port), db) as n:
            n.observe(alarm_doc())
            # Sent, and recorded as sent (the modem's answer comes before the record).
            await until(lambda: len(sim.texts()) == 1 and n.health()["sent"] == 1)

    asyncio.run(scenario())
    assert _rows(db) == [("A1", 0, "warden", "sent", 4)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("+CMS ERROR 38 (network out of order)" in w for w in warnings) == 1, warnings


def test_stopping_mid_write_closes_the_record_after_the_write_not_under_it(
    modem: tuple[ModemSim, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway stopping while an SMS is being recorded must not crash the process.

    Closing the SQLite connection while another thread writes through it is a
    segmentation fault, not an exception: the record's calls must never overlap.
    """
    sim, port = modem
    db = tmp_path / "notify.db"
    calls: list[str] = []
    writing = threading.Event()

    async def scenario() -> None:
        async with running(_cfg(port), db) as n:
            finish, close = n.store.finish, n.store.close

            def slow_finish(*args: Any, **kwargs: Any) -> None:
                calls.append("finish")
                writing.set()
                time.sleep(0.3)  # a slow SD card: the stop arrives during the write
                finish(*args, **kwargs)
                calls.append("finished")

            def spy_close() -> None:
                calls.append("close")
                close()

            monkeypatch.setattr(n.store, "finish", slow_finish)
            monkeypatch.setattr(n.store, "close", spy_close)
            n.observe(alarm_doc())
            await until(writing.is_set)

    asyncio.run(scenario())
    assert calls == ["finish", "finished", "close"]
    assert _rows(db) == [("A1", 0, "warden", "sent", 1)] and len(sim.texts()) == 1


def test_no_network_waits_then_sends_and_an_ack_cancels_what_is_still_waiting(
    modem: tuple[ModemSim, Path], tmp_path: Path
) -> None:
    sim, port = modem
    sim.registration = 2  # searching: no SIM coverage in the plant room
    db = tmp_path / "notify.db"

    async def scenario() -> None:
        async with running(_cfg(port), db) as n:
            n.observe(alarm_doc("A1"))
            n.observe(alarm_doc("A2"))
            await until(lambda: "searching" in n.health()["modem"])
            assert sim.sent == []
            n.observe(alarm_doc("A2", acknowledged=True, state="acknowledged"))
            await until(lambda: n.health()["cancelled"] == 1)
            sim.registration = 1
            # Recorded as sent, not only handed to the modem (the record comes after).
            await until(lambda: len(sim.texts()) == 1 and n.health()["sent"] == 1)
            await until(lambda: n.health()["modem"] == "registered (home)")

    asyncio.run(scenario())
    assert [(r[0], r[3]) for r in _rows(db)] == [("A1", "sent"), ("A2", "cancelled")]


def test_a_modem_that_stops_answering_is_reopened_and_the_sms_still_goes(
    modem: tuple[ModemSim, Path], tmp_path: Path
) -> None:
    sim, port = modem
    sim.mute = True
    db = tmp_path / "notify.db"

    async def scenario() -> None:
        async with running(_cfg(port), db) as n:
            n.observe(alarm_doc())
            await until(lambda: "check power, cable and port" in n.health()["modem"])
            assert "did not answer AT in time" in n.health()["modem"]
            sim.mute = False
            # The modem has the text before the notifier has its +CMGS and records it.
            await until(lambda: len(sim.texts()) == 1 and n.health()["sent"] == 1)

    asyncio.run(scenario())
    assert _rows(db)[0][3] == "sent"


def test_sim_pin_from_its_file_and_never_in_the_log(
    modem: tuple[ModemSim, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim, port = modem
    sim.pin = "7391"
    pin_file = tmp_path / "sim-pin"
    pin_file.write_text("7391\n")
    caplog.set_level(logging.DEBUG)

    async def with_alarm() -> None:
        async with running(_cfg(port, pin_file=str(pin_file)), tmp_path / "n.db") as n:
            n.observe(alarm_doc())
            await until(lambda: len(sim.texts()) == 1)

    asyncio.run(with_alarm())
    assert 'AT+CPIN="7391"' in sim.commands
    assert "7391" not in caplog.text


def test_sim_pin_missing_is_said_plainly(modem: tuple[ModemSim, Path], tmp_path: Path) -> None:
    sim, port = modem
    sim.pin = "7391"

    async def scenario() -> None:
        async with running(_cfg(port), tmp_path / "n.db") as n:
            n.observe(alarm_doc())
            await until(lambda: "SIM needs its PIN; set notify.sms.pin_file" in n.health()["modem"])

    asyncio.run(scenario())


def test_a_restart_neither_loses_nor_repeats_an_sms(
    modem: tuple[ModemSim, Path], tmp_path: Path
) -> None:
    sim, port = modem
    db = tmp_path / "notify.db"
    sim.registration = 2

    async def first() -> None:
        async with running(_cfg(port), db) as n:
            n.observe(alarm_doc("A1"))
            await until(lambda: n.health()["pending"] == 1)

    async def second() -> None:
        async with running(_cfg(port), db) as n:
            # The alarm engine publishes open alarms again after a restart.
            n.observe(alarm_doc("A1"))
            await until(lambda: len(sim.texts()) == 1 and n.health()["sent"] == 1)
            await asyncio.sleep(0.3)  # and no second text for it

    asyncio.run(first())
    sim.registration = 1
    asyncio.run(second())
    assert len(sim.texts()) == 1 and _rows(db)[0][3] == "sent"


def test_a_long_chinese_text_arrives_whole_in_concatenated_parts(
    modem: tuple[ModemSim, Path], tmp_path: Path
) -> None:
    sim, port = modem
    long_name = "东区" * 30 + "紧急按钮"

    async def scenario() -> None:
        async with running(_cfg(port), tmp_path / "n.db") as n:
            doc = alarm_doc()
            doc["device"] = {**doc["device"], "name": long_name}
            n.observe(doc)
            await until(lambda: len(sim.texts()) == 1)

    asyncio.run(scenario())
    assert len(sim.sent) == 2 and long_name in sim.texts()[0][1]


@pytest.mark.slow
def test_a_real_gateway_texts_an_sos_while_its_broker_is_down(
    modem: tuple[ModemSim, Path], tmp_path: Path
) -> None:
    """The uplink never connects (nothing listens on its port); the SOS still reaches a phone."""
    sim, port = modem
    pendant = {
        "id": "pendant-301",
        "name": "301 pendant",
        "kind": "elderly_alarm",
        "location": {"building": "1", "floor": "3", "unit": "301"},
        "driver": {"type": "simulated", "events": [{"type": "elderly.sos", "at_s": 0.5}]},
    }
    config = write_config(
        tmp_path / "gw" / "gateway.yaml",
        f"mqtt://127.0.0.1:{free_port()}",
        [pendant],
        site={"id": "sunrise", "name": "阳光花园"},
        alarms={"damping_s": 0, "escalation": {"critical": 2}},
        notify={
            "sms": {
                "port": str(port),
                "on_call": [
                    {"name": "warden", "phone": WARDEN},
                    {"name": "manager", "phone": MANAGER, "language": "en", "from_level": 1},
                ],
            }
        },
        gateway={"state_dir": str(tmp_path / "gw" / "state")},
    )
    gw = GatewayProc(config).start()
    try:
        assert wait_for(lambda: len(sim.texts()) >= 3, timeout=30), gw.log()[-3000:]
    finally:
        gw.terminate()
    numbers = [n for n, _ in sim.texts()]
    assert numbers[0] == WARDEN and sorted(numbers[1:3]) == sorted([WARDEN, MANAGER])
    assert "紧急按钮" in sim.texts()[0][1]
    assert WARDEN not in gw.log() and MANAGER not in gw.log()


def test_installer_sends_a_test_sms_and_reads_the_log(
    modem: tuple[ModemSim, Path], tmp_path: Path
) -> None:
    import subprocess

    from tests.harness import GATEWAY

    sim, port = modem
    config = write_config(
        tmp_path / "gateway.yaml",
        "mqtt://127.0.0.1:1883",
        [],
        notify={"sms": {"port": str(port), "on_call": [{"name": "warden", "phone": WARDEN}]}},
        gateway={"state_dir": str(tmp_path / "state")},
    )
    ok = subprocess.run(
        [GATEWAY, "notify", "test", "-c", str(config), "--to", "warden"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ok.returncode == 0, ok.stderr
    assert "registered (home)" in ok.stdout and "SMS sent to warden" in ok.stdout
    assert sim.texts()[0] == (WARDEN, "Test message from the community gateway. 测试短信。")
    unknown = subprocess.run(
        [GATEWAY, "notify", "test", "-c", str(config), "--to", "nobody"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert unknown.returncode == 2 and "(there: warden)" in unknown.stderr
    sim.registration = 3
    denied = subprocess.run(
        [GATEWAY, "notify", "test", "-c", str(config), "--to", "warden"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert denied.returncode == 1
    assert "SMS not sent: modem not on the mobile network: registration denied" in denied.stderr
    log = subprocess.run(
        [GATEWAY, "notify", "log", "-c", str(config)], capture_output=True, text=True, timeout=30
    )
    assert log.returncode == 0 and "No SMS yet." in log.stdout


def test_a_wrong_on_call_entry_is_refused_with_its_line(tmp_path: Path) -> None:
    from tests.harness import config_problems

    config = write_config(
        tmp_path / "gateway.yaml",
        "mqtt://127.0.0.1:1883",
        [],
        notify={
            "sms": {
                "port": "/dev/ttyUSB2",
                "pin_file": str(tmp_path / "no-such-pin"),
                "on_call": [
                    {"name": "warden", "phone": "138 0013 8000"},
                    {"name": "warden", "phone": "+8613900139000"},
                ],
            }
        },
    )
    (problem,) = config_problems(config)
    assert problem.endswith(
        ":23 notify.sms.on_call[0].phone: must be a phone number in digits, with the country"
        " code, like +8613800138000 (no spaces or dashes)"
    ), problem
    config.write_text(config.read_text().replace("138 0013 8000", "'+8613800138000'"))
    (problem,) = config_problems(config)
    assert problem.endswith(":18 notify.sms: on_call names 'warden' twice; names must be unique")
    config.write_text(config.read_text().replace("name: warden\n", "name: manager\n", 1))
    (problem,) = config_problems(config)
    assert problem.endswith(f"notify.sms.pin_file: file {tmp_path / 'no-such-pin'} not found")


def test_a_damaged_record_is_moved_aside_and_the_notifier_carries_on(
    modem: tuple[ModemSim, Path], tmp_path: Path
) -> None:
    sim, port = modem
    db = tmp_path / "notify.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\x5a" * 8192)  # a power cut's leftovers

    async def scenario() -> None:
        async with running(_cfg(port), db) as n:
            n.observe(alarm_doc())
            await until(lambda: len(sim.texts()) == 1 and n.health()["sent"] == 1)

    asyncio.run(scenario())
    assert [p.name for p in tmp_path.glob("notify.db.damaged-*")], "kept for a post-mortem"
    assert _rows(db)[0][3] == "sent"
