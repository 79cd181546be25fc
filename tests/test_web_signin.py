"""Sign-in under attack and the kiosk's limits per client, against a real gateway and broker.

A stranger is another loopback address (127.0.0.2, ...): Linux routes all of 127/8 to
the loopback interface, so one test plays the attacker and the staff member.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.peers import Mosquitto
from tests.web_harness import STAFF_PIN, HttpClient, WebGateway, csrf_of, start_web_gateway

pytestmark = [pytest.mark.broker]

WEB = {
    "signin": {"max_failures": 3, "window_s": 60, "lockout_s": 30},
    "kiosk": {
        "ids": ["lobby", "b2"],
        "max_requests_per_client": 2,
        "max_requests": 3,
        "window_s": 60,
        "office_phone": "+86 21 5555-0100",
    },
    "limits": {"wrong_codes_per_client": 3, "wrong_codes_window_s": 60},
    "console_lang": "en",
}


@pytest.fixture
def gw(tmp_path: Path, broker: Mosquitto) -> Iterator[WebGateway]:
    g = start_web_gateway(tmp_path, broker, web=WEB)
    yield g
    g.stop()


def _client(gw: WebGateway, source: str) -> HttpClient:
    return HttpClient(gw.port, source=source)


def _own_device(gw: WebGateway) -> HttpClient:
    """The staff member's own phone: signed in once, so it holds the device cookie."""
    c = _client(gw, "127.0.0.1")
    resp = c.sign_in()
    assert resp.status == 303
    raw = next(v for v in resp.set_cookies() if v.startswith("gw_device="))
    attrs = raw.lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/signin" in attrs
    assert "max-age=" in attrs
    c.cookies.pop("gw_session")
    return c


def test_a_stranger_cannot_lock_staff_out_of_their_own_device(gw: WebGateway) -> None:
    phone = _own_device(gw)
    stranger = _client(gw, "127.0.0.2")
    for _ in range(3):
        assert stranger.sign_in(secret="000000").status == 401
    assert stranger.sign_in().status == 429  # locked, even with the right PIN
    # Another address, a new device: the staff id is locked for strangers too.
    other = _client(gw, "127.0.0.3")
    assert other.sign_in(secret="111111").status == 429
    # The staff member's own device signs in, during the attack, with the right PIN.
    assert phone.sign_in().status == 303
    assert phone.get("/console/state").status == 200
    log = gw.proc.log()
    assert log.count("refusing sign-ins (locked out)") == 1, log
    assert STAFF_PIN not in log and "000000" not in log


def test_a_stranger_behind_the_same_address_cannot_lock_out_a_trusted_device(
    gw: WebGateway,
) -> None:
    phone = _own_device(gw)
    stranger = _client(gw, "127.0.0.1")  # the same NAT router or office PC
    for _ in range(3):
        stranger.sign_in(secret="000000")
    assert stranger.sign_in().status == 429
    assert phone.sign_in().status == 303


def test_a_trusted_device_that_guesses_loses_its_trust(gw: WebGateway) -> None:
    phone = _own_device(gw)
    for _ in range(3):
        assert phone.sign_in(secret="000000").status == 401
    # Now a device like any other: its cookie no longer lets it past a lockout of the
    # staff id caused by others.
    stranger = _client(gw, "127.0.0.2")
    for _ in range(3):
        stranger.sign_in(secret="000000")
    assert phone.sign_in().status == 429


def test_wrong_pins_are_answered_slowly(gw: WebGateway) -> None:
    c = _client(gw, "127.0.0.2")
    started = time.monotonic()
    assert c.sign_in(secret="000000").status == 401
    assert time.monotonic() - started >= 1.0


# ---- the kiosk's limits per client ----------------------------------------------------


def _file(c: HttpClient, kiosk: str = "lobby") -> Any:
    page = c.get(f"/kiosk/{kiosk}/new/repair")
    form = {"csrf": csrf_of(page.body), "category": "repair", "lang": "en"}
    return c.post(f"/kiosk/{kiosk}/requests", form)


def test_one_client_cannot_use_up_the_kiosk_for_everybody(gw: WebGateway) -> None:
    spammer = _client(gw, "127.0.0.2")
    assert [_file(spammer).status for _ in range(2)] == [303, 303]
    refused = _file(spammer)
    assert refused.status == 429 and refused.header("Retry-After") is not None
    assert "Please call the office: +86 21 5555-0100." in refused.body
    # The lobby's own screen (another address) still files; then the kiosk's ceiling.
    lobby = _client(gw, "127.0.0.1")
    assert _file(lobby).status == 303
    assert _file(_client(gw, "127.0.0.3")).status == 429  # 3 per kiosk
    assert _file(_client(gw, "127.0.0.3"), kiosk="b2").status == 303
    zh = _client(gw, "127.0.0.2")
    page = zh.get("/kiosk/lobby/new/repair")
    form = {"csrf": csrf_of(page.body), "category": "repair", "lang": "zh"}
    assert "请致电物业：+86 21 5555-0100" in zh.post("/kiosk/lobby/requests", form).body
    assert gw.proc.log().count("refusing kiosk requests") == 1


def test_request_codes_cannot_be_guessed_quickly(gw: WebGateway) -> None:
    resident = _client(gw, "127.0.0.1")
    filed = _file(resident)
    code = re.search(r"/filed/([A-Z0-9]{6})", filed.header("Location") or "")
    assert code
    guesser = _client(gw, "127.0.0.2")
    for guess in ("CCCCCC", "DDDDDD", "EEEEEE"):
        assert guesser.get(f"/kiosk/lobby/status?code={guess}").status == 200
    refused = guesser.get(f"/kiosk/lobby/status?code={code.group(1)}")
    assert refused.status == 429 and refused.header("Retry-After") is not None
    assert code.group(1) not in refused.body
    assert guesser.get(f"/kiosk/lobby/filed/{code.group(1)}").status == 429
    # A resident re-reading their own request's progress is never limited.
    for _ in range(10):
        assert resident.get(f"/kiosk/lobby/filed/{code.group(1)}").status == 200


def test_the_office_phone_is_validated(tmp_path: Path) -> None:
    from tests.harness import config_problems, write_config

    config = write_config(
        tmp_path / "gw.yaml",
        "mqtt://127.0.0.1:1",
        [],
        web={"enabled": True, "kiosk": {"office_phone": "call Bob"}},
    )
    problems = config_problems(config)
    assert any("office_phone" in p for p in problems), problems
