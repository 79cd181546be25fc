"""An open console keeps its session and learns when it ends; sessions survive a restart.

Against a real gateway process and broker; the wire behaviour is the one written in
docs/web.md ("The console's event stream and its session").
"""

from __future__ import annotations

import http.client
import json
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.peers import Mosquitto, wait_for
from tests.web_harness import STAFF_PIN, HttpClient, WebGateway, csrf_of, start_web_gateway

pytestmark = [pytest.mark.broker]

IDLE_S = 1.5


@pytest.fixture
def gw(tmp_path: Path, broker: Mosquitto) -> Iterator[WebGateway]:
    g = start_web_gateway(tmp_path, broker, web={"session_idle_s": IDLE_S, "console_lang": "en"})
    yield g
    g.stop()


@dataclass
class Stream:
    """An open `text/event-stream` response, read line by line."""

    conn: http.client.HTTPConnection
    resp: http.client.HTTPResponse
    lines: list[str] = field(default_factory=list)

    def next_event(self) -> tuple[str, Any] | None:
        """The next event (name, data), skipping comments and `retry:`; None at the end."""
        name = ""
        while True:
            raw = self.resp.readline()
            if not raw:
                return None
            line = raw.decode().rstrip("\n")
            self.lines.append(line)
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name:
                return name, json.loads(line.removeprefix("data: "))

    def close(self) -> None:
        self.conn.close()


def open_stream(gw: WebGateway, cookie: str | None, timeout: float = 10) -> Stream:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=timeout)
    headers = {"Accept": "text/event-stream"}
    if cookie:
        headers["Cookie"] = f"gw_session={cookie}"
    conn.request("GET", "/console/events", headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    assert resp.getheader("Content-Type", "").startswith("text/event-stream")
    return Stream(conn, resp)


def idle() -> None:
    # The one wait on the clock: idle time is what is tested, and any request to
    # observe it would count as use of the session.
    time.sleep(IDLE_S * 1.5)


def signed_in(gw: WebGateway) -> HttpClient:
    c = gw.client()
    assert c.sign_in().status == 303
    return c


def test_an_open_console_stream_keeps_its_session_past_the_idle_time(gw: WebGateway) -> None:
    c = signed_in(gw)
    stream = open_stream(gw, c.cookies["gw_session"])
    assert stream.next_event() is not None  # the snapshot
    assert "retry: 5000" in stream.lines
    # Heartbeats over more than twice the idle time, and the stream is still open.
    beats = 0
    while beats < 10:
        line = stream.resp.readline()
        assert line, "\n".join(stream.lines)
        beats += line == b"event: ping\n"
    assert c.get("/console/state").status == 200
    stream.close()


def test_a_console_without_a_stream_is_signed_out_after_the_idle_time(gw: WebGateway) -> None:
    c = signed_in(gw)
    idle()
    ended = c.get("/console/state", headers={"Accept": "application/json"})
    assert ended.status == 401
    assert ended.json() == {"error": "sign in first", "code": "session-ended", "signin": "/signin"}


def test_a_stream_without_a_session_tells_the_page_to_sign_in(gw: WebGateway) -> None:
    for cookie in (None, "forged-token"):
        stream = open_stream(gw, cookie)
        assert stream.next_event() == (
            "session-ended",
            {"reason": "no-session", "signin": "/signin"},
        )
        assert "retry: 60000" in stream.lines
        assert stream.next_event() is None  # and the server ends it
        stream.close()
    # Not an EventSource: a plain 401, as for everything under /console.
    assert gw.client().get("/console/events").status == 401


def test_signing_out_ends_the_open_stream_with_its_reason(gw: WebGateway) -> None:
    c = signed_in(gw)
    stream = open_stream(gw, c.cookies["gw_session"])
    assert stream.next_event() is not None
    assert c.post("/signout", {"csrf": csrf_of(c.get("/console").body)}).status == 303
    assert stream.next_event() == ("session-ended", {"reason": "signed-out", "signin": "/signin"})
    assert stream.next_event() is None
    stream.close()


def test_an_acknowledgement_after_the_session_ended_gets_a_json_error(gw: WebGateway) -> None:
    c = signed_in(gw)
    csrf = csrf_of(c.get("/console").body)
    idle()
    resp = c.post(
        "/console/alarms/x-1/ack",
        {"csrf": csrf, "note": ""},
        headers={"Accept": "application/json", "X-CSRF-Token": csrf},
    )
    assert resp.status == 401 and (resp.header("Content-Type") or "").startswith("application/json")
    assert resp.json()["code"] == "session-ended" and resp.json()["signin"] == "/signin"


def _alive(gw: WebGateway) -> bool:
    try:
        return gw.client().get("/kiosk/lobby", timeout=1).status == 200
    except OSError:
        return False


def test_a_console_opened_before_a_restart_reconnects_and_shows_alarms_raised_meanwhile(
    tmp_path: Path, broker: Mosquitto
) -> None:
    gw = start_web_gateway(tmp_path, broker, web={"console_lang": "en"})
    try:
        c = signed_in(gw)
        cookie = c.cookies["gw_session"]
        csrf = csrf_of(c.get("/console").body)
        stream = open_stream(gw, cookie)
        event = stream.next_event()
        assert event is not None and event[1]["alarms"] == []
        gw.proc.terminate()
        assert stream.next_event() is None  # the gateway went away
        stream.close()
        sessions = gw.config.parent / "state" / "web-sessions.json"
        assert stat.S_IMODE(os.stat(sessions).st_mode) == 0o600
        assert cookie not in sessions.read_text()  # a hash of the token, never the token
        gw.proc.start()
        assert wait_for(lambda: _alive(gw), timeout=15), gw.proc.log()
        assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
        # The page's EventSource reconnects with the same cookie and gets the alarm.
        again = open_stream(gw, cookie)
        event = again.next_event()
        assert event is not None and event[0] == "snapshot", again.lines
        assert [a["type"] for a in event[1]["alarms"]] == ["fire"]
        again.close()
        # The CSRF token of the page opened before the restart still works.
        alarm_id = event[1]["alarms"][0]["alarm_id"]
        ack = c.post(
            f"/console/alarms/{alarm_id}/ack",
            {"csrf": csrf, "note": "on my way"},
            headers={"Accept": "application/json"},
        )
        assert ack.status == 200, ack.body
        assert "restored" in gw.proc.log() and STAFF_PIN not in gw.proc.log()
    finally:
        gw.stop()


def test_a_broken_sessions_file_only_signs_staff_out(tmp_path: Path, broker: Mosquitto) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "web-sessions.json").write_text("{not json")
    gw = start_web_gateway(tmp_path, broker, web={"console_lang": "en"})
    try:
        assert "sessions in" in gw.proc.log() and "not restored" in gw.proc.log()
        assert "Traceback" not in gw.proc.log()
        assert signed_in(gw).get("/console/state").status == 200
    finally:
        gw.stop()
