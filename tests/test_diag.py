"""Remote diagnostics, without a broker: redacted log ring, request limits, signing, no shell.

The log lines are the ones the drivers, the web console and the SMS notifier write
(their format strings and logger names), with the personal data they can carry.
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from community_protocol.topics import CommandPath
from gateway.fleet.diag import RequestLimits, process_ring
from gateway.fleet.logring import LogRing
from gateway.mqtt.commands import Command, CommandFailed
from gateway.sdk.model import Identity
from gateway.security.signing import CommandSigner, CommandVerifier
from tests.harness import FakeClock

ROOT = Path(__file__).resolve().parent.parent

# (logger, format, args, what must not survive, what must survive)
REAL_LINES: list[tuple[str, str, tuple[object, ...], list[str], list[str]]] = [
    (  # drivers/osdp/driver.py, a card read (raw card numbers with publish_raw_card)
        "drivers.osdp",
        "osdp device %s: %s %s (%d bits)",
        ("door-1", "access.card_read", "0004a3f91c", 26),
        ["0004a3f91c"],
        ["door-1", "access.card_read", "26 bits"],
    ),
    (  # the same line for a denied card, decimal
        "drivers.osdp",
        "osdp device %s: %s %s (%d bits)",
        ("door-1", "access.denied", "1234567", 26),
        ["1234567"],
        ["access.denied"],
    ),
    (  # gateway/web/console_routes.py: a PIN typed into the staff id box
        "gateway.web.console_routes",
        "failed sign-in of %r from %s",
        ("482913", "192.168.1.20"),
        ["482913"],
        ["failed sign-in", "192.168.1.20"],
    ),
    (  # gateway/notify/sms.py: the modem's reason may repeat the number dialled
        "gateway.notify.sms",
        "SMS for alarm %s to %s failed: %s",
        ("a-17", "Li Wei", "+CMS ERROR: 38 sending to +44 7700 900123"),
        ["7700 900123", "+447700900123"],
        ["a-17", "Li Wei", "+CMS ERROR: 38"],
    ),
    (
        "gateway.notify.sms",
        "alarm %s level %d: SMS to %s given up: %s",
        ("a-18", 2, "caretaker", "number 0171 234 5678 not reachable"),
        ["0171 234 5678"],
        ["a-18", "level 2", "caretaker"],
    ),
    (  # a config value shown back: the broker URL with its password
        "gateway.mqtt.uplink",
        "cannot connect to %s: %s",
        ("mqtts://gw07:hunter2-x@broker.example:8883", "connection refused"),
        ["hunter2-x"],
        ["mqtts://gw07:", "broker.example:8883", "connection refused"],
    ),
    (  # drivers/osdp: the secure channel key in a driver's repr of its settings
        "drivers.osdp",
        "osdp %s",
        ("bus /dev/ttyUSB0: settings {'scbk': '000102030405060708090a0b0c0d0e0f', 'pin': 4321}",),
        ["000102030405060708090a0b0c0d0e0f", "4321"],
        ["/dev/ttyUSB0", "scbk"],
    ),
    (
        "gateway.security.guard",
        "signed commands: %s need a signature by key %s",
        ("alarms/*/ack", "3f1c2a4b5c6d7e8f"),
        [],
        ["alarms/*/ack", "3f1c2a4b5c6d7e8f"],
    ),
    (
        "drivers.modbus",
        "meter %s read at %s: %s kWh, seq %d",
        ("meter-1", "2026-12-06 20:05:11", 4012.5, 1234567),
        [],
        ["2026-12-06 20:05:11", "4012.5", "1234567"],
    ),
]


@pytest.fixture
def ring() -> Iterator[LogRing]:
    ring = LogRing(max_lines=100, max_bytes=64 * 1024)
    root = logging.getLogger()
    level = root.level
    root.addHandler(ring)
    root.setLevel(logging.DEBUG)
    yield ring
    root.removeHandler(ring)
    root.setLevel(level)


def test_real_log_lines_keep_what_helps_and_lose_cards_pins_phones_and_secrets(
    ring: LogRing,
) -> None:
    for name, fmt, args, hidden, kept in REAL_LINES:
        logging.getLogger(name).warning(fmt, *args)
        [line] = ring.last(1)
        for secret in hidden:
            assert secret not in line, line
        for word in kept:
            assert word in line, line
        assert line.split(" ")[2] == f"{name}:"
    assert len(ring.last(100)) == len(REAL_LINES)


def test_a_traceback_is_kept_and_redacted_too(ring: LogRing) -> None:
    try:
        raise ValueError("password=s3cr3t rejected for card 0004a3f91c")
    except ValueError:
        logging.getLogger("drivers.osdp").exception("reader of %s failed", "/dev/ttyUSB0")
    [line] = ring.last(1)
    assert "Traceback" in line and "ValueError" in line and "/dev/ttyUSB0" in line
    assert "s3cr3t" not in line and "0004a3f91c" not in line


def test_the_ring_is_bounded_in_lines_bytes_and_line_length() -> None:
    ring = LogRing(max_lines=50, max_bytes=8 * 1024, max_line=300)
    log = logging.getLogger("test.diag.ring")
    log.addHandler(ring)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        for i in range(1_000):
            log.info("line %d %s", i, "x" * (i % 700))
        assert len(ring) <= 50 and ring.size_bytes <= 8 * 1024
        assert ring.dropped == 1_000 - len(ring)
        lines = ring.last(500)
        assert lines[-1].split(": ", 1)[1].startswith("line 999 ")
        assert all(len(line) < 400 for line in lines)
        # Oldest first, the newest included; a byte budget cuts from the oldest end.
        assert ring.last(3, max_bytes=450)[-1] == lines[-1]
        assert len(ring.last(50, max_bytes=450)) < len(lines)
        log.warning("the one warning")
        assert ring.last(5, level="warning") == [ring.last(1)[0]]
    finally:
        log.removeHandler(ring)


def test_a_line_that_cannot_be_formatted_is_kept_without_raising() -> None:
    ring = LogRing()
    record = logging.LogRecord(
        "drivers.x", logging.INFO, __file__, 1, "%d readings", ("many",), None
    )
    ring.handle(record)
    [line] = ring.last(1)
    assert "unformattable" in line


def test_the_process_ring_is_installed_once_however_many_hosts() -> None:
    first = process_ring()
    assert process_ring() is first
    assert logging.getLogger().handlers.count(first) == 1


def test_requests_are_limited_per_requester_and_in_total_with_a_bounded_table() -> None:
    clock = FakeClock(100.0)
    limits = RequestLimits((0.5, 2), (2.0, 4), max_requesters=3, clock=clock)
    assert [limits.admit("key/ana") for _ in range(2)] == [0, 0]
    wait = limits.admit("key/ana")
    assert wait == pytest.approx(2.0)  # one token at 0.5/s
    assert limits.admit("key/ben") == 0 and limits.admit("key/ben") == 0
    assert limits.admit("key/cy") == pytest.approx(0.5)  # the shared bucket is empty
    clock.now += 2.0
    assert limits.admit("key/ana") == 0
    for i in range(100):
        limits.admit(f"key/n{i}")
    assert len(limits) == 3


def test_the_diag_family_must_be_signed_whatever_the_config_lists() -> None:
    me = Identity("sunrise-gardens", "gw-07")
    signer = CommandSigner(Ed25519PrivateKey.generate())
    fleet = CommandSigner(Ed25519PrivateKey.generate())
    verifier = CommandVerifier(me, [signer.public_key], signed=[], fleet_keys=[fleet.public_key])
    for path in CommandPath.DIAG_COMMANDS:
        assert verifier.needs_signature(path), path
        assert verifier.needs_signature(path + "/extra")
    assert not verifier.needs_signature("ping")

    def command(path: str, payload: dict[str, object]) -> Command:
        fields = {k: v for k, v in payload.items() if k != "auth"}
        return Command(
            path, tuple(path.split("/")), fields, None, auth=payload.get("auth"), signed=fields
        )

    with pytest.raises(CommandFailed, match="must be signed"):
        verifier(command("diag/logs", {}))
    # The ticket service's key signs acknowledgements, not diagnostics; a fleet key the reverse.
    with pytest.raises(CommandFailed, match="not a fleet key"):
        verifier(command("diag/logs", signer.sign(me, "diag/logs", {"lines": 5})))
    verifier(command("diag/logs", fleet.sign(me, "diag/logs", {"lines": 5})))
    with pytest.raises(CommandFailed, match="not a key this gateway trusts"):
        verifier(command("alarms/a1/ack", fleet.sign(me, "alarms/a1/ack", {"by": "x"})))
    verifier(command("alarms/a1/ack", signer.sign(me, "alarms/a1/ack", {"by": "x"})))


def test_the_diagnostics_code_cannot_start_a_process() -> None:
    # No request can become a shell command if nothing here can start one at all.
    banned = {"subprocess", "os.system", "os.popen", "os.exec", "os.spawn", "pty", "shlex"}
    calls = {"system", "popen", "create_subprocess_exec", "create_subprocess_shell", "eval", "exec"}
    for path in sorted((ROOT / "gateway" / "fleet").glob("*.py")):
        if path.name not in ("diag.py", "logring.py"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                module = getattr(node, "module", None) or ""
                assert not ({module, *names} & banned), (path.name, module, names)
            if isinstance(node, ast.Attribute | ast.Name):
                name = node.attr if isinstance(node, ast.Attribute) else node.id
                assert name not in calls, (path.name, name)


def test_a_secret_at_the_cut_of_a_long_line_is_redacted_whole() -> None:
    ring = LogRing(max_line=200)
    key = "0f1e2d3c4b5a69788796a5b4c3d2e1f0" * 2
    text = "x " * 40 + f"scbk {key} " + "y " * 200  # the key straddles the cut
    record = logging.LogRecord("drivers.osdp", logging.INFO, __file__, 1, "%s", (text,), None)
    ring.handle(record)
    [line] = ring.last(1)
    assert len(line) < 300
    assert not any(key[i : i + 8] in line for i in range(0, len(key) - 8))
