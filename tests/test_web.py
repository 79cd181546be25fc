"""The local web over HTTP against a real gateway process and broker: sign-in, sessions,
CSRF, rate limits, kiosk requests and their statuses, escaping, TLS."""

from __future__ import annotations

import html
import http.client
import json
import re
import sqlite3
import ssl
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from community_protocol.schemas import validator
from community_protocol.topics import Topics
from gateway.sdk.model import Identity
from gateway.web.requests import CODE_ALPHABET, RequestStore, ServiceRequest
from tests.certs import make_pki
from tests.peers import Mosquitto, wait_for
from tests.web_harness import (
    STAFF_PIN,
    HttpClient,
    WebGateway,
    csrf_of,
    shanghai_time,
    start_web_gateway,
)

pytestmark = [pytest.mark.broker]

FAST_LIMITS = {
    # A lockout long enough that a loaded machine makes the next requests within it (1.5 s
    # was not), short enough that one test waits for its end.
    "signin": {"max_failures": 3, "window_s": 60, "lockout_s": 5},
    "kiosk": {"ids": ["lobby", "b2"], "max_requests": 3, "window_s": 60},
    # Not the default (zh), so that a test can tell the configured language from it; and
    # a zone far from UTC (no daylight saving), so local times differ from the UTC ones.
    "console_lang": "en",
    "timezone": "Asia/Shanghai",
}


@pytest.fixture
def gw(tmp_path: Path, broker: Mosquitto) -> Iterator[WebGateway]:
    g = start_web_gateway(tmp_path, broker, web=FAST_LIMITS)
    yield g
    g.stop()


def _cookie_attrs(resp: Any, name: str) -> str:
    raw = [c for c in resp.set_cookies() if c.startswith(f"{name}=")]
    assert raw, f"no {name} cookie in {resp.set_cookies()}"
    return raw[0]


def _file(c: HttpClient, kiosk: str = "lobby", **fields: str) -> Any:
    page = c.get(f"/kiosk/{kiosk}/new/{fields.get('category', 'repair')}")
    assert page.status == 200
    form = {"csrf": csrf_of(page.body), "category": "repair", "lang": "en", **fields}
    return c.post(f"/kiosk/{kiosk}/requests", form)


def _code_of(resp: Any) -> str:
    assert resp.status == 303, resp.body
    m = re.search(r"/filed/([A-Z0-9]{6})", resp.header("Location") or "")
    assert m, resp.header("Location")
    return m.group(1)


# ---- staff console: sessions, cookies, CSRF --------------------------------------------


def test_nothing_of_the_console_is_reachable_without_a_session(gw: WebGateway) -> None:
    c = gw.client()
    assert c.get("/console", headers={"Accept": "text/html"}).header("Location") == "/signin"
    assert c.get("/console").status == 401
    assert c.get("/console/state").status == 401
    assert c.get("/console/events").status == 401
    assert c.post("/console/alarms/x-1/ack", {"csrf": "x", "note": ""}).status == 401
    assert c.post("/signout", {"csrf": "x"}).status == 401
    # A made-up session cookie is no session either.
    c.cookies["gw_session"] = "forged"
    assert c.get("/console/state").status == 401


def test_sign_in_sets_an_httponly_samesite_strict_session_cookie(gw: WebGateway) -> None:
    c = gw.client()
    resp = c.sign_in()
    assert resp.status == 303 and resp.header("Location") == "/console"
    attrs = _cookie_attrs(resp, "gw_session").lower()
    assert "httponly" in attrs and "samesite=strict" in attrs and "path=/" in attrs
    assert "secure" not in attrs  # plain HTTP: a Secure cookie would never come back
    state = c.get("/console/state")
    assert state.status == 200
    assert [d["id"] for d in state.json()["devices"]] == ["smoke-b2-stair-2"]
    page = c.get("/console")
    assert "Li Wei" in page.body and page.header("Cache-Control") == "no-store"
    assert "script-src 'self'" in (page.header("Content-Security-Policy") or "")


def test_sign_in_without_its_csrf_token_is_refused(gw: WebGateway) -> None:
    c = gw.client()
    c.get("/signin")
    resp = c.post("/signin", {"staff_id": "staff-li", "secret": STAFF_PIN})
    assert resp.status == 403
    resp = c.post("/signin", {"csrf": "guess", "staff_id": "staff-li", "secret": STAFF_PIN})
    assert resp.status == 403
    assert "gw_session" not in c.cookies


def test_wrong_pin_is_refused_then_rate_limited_even_for_the_right_pin(gw: WebGateway) -> None:
    c = gw.client()
    for _ in range(3):
        assert c.sign_in(secret="000000").status == 401
    locked = c.sign_in()  # the right PIN, but locked out
    assert locked.status == 429 and "Too many failed attempts" in locked.body
    assert locked.header("Retry-After") is not None
    assert "gw_session" not in c.cookies
    # Another staff id from the same address is locked too (per client address).
    assert c.sign_in(staff_id="staff-wang", secret="000000").status == 429
    assert wait_for(lambda: c.sign_in().status == 303, timeout=20, interval=0.3)
    assert c.get("/console/state").status == 200
    assert "failed sign-in of 'staff-li'" in gw.proc.log()
    assert STAFF_PIN not in gw.proc.log() and "000000" not in gw.proc.log()


def test_parallel_guesses_cannot_slip_past_the_lockout(gw: WebGateway) -> None:
    from concurrent.futures import ThreadPoolExecutor

    clients = [gw.client() for _ in range(12)]
    tokens = [csrf_of(c.get("/signin").body) for c in clients]

    def guess(i: int) -> int:
        form = {"csrf": tokens[i], "staff_id": "staff-li", "secret": f"{i:06d}"}
        return clients[i].post("/signin", form).status

    with ThreadPoolExecutor(12) as pool:
        statuses = sorted(pool.map(guess, range(12)))
    assert statuses == [401] * 3 + [429] * 9


def test_unknown_staff_id_gets_the_same_answer_as_a_wrong_pin(gw: WebGateway) -> None:
    c = gw.client()
    wrong = c.sign_in(secret="000000")
    unknown = c.sign_in(staff_id="nobody", secret="000000")
    assert wrong.status == unknown.status == 401
    assert "Wrong staff id or PIN." in wrong.body and "Wrong staff id or PIN." in unknown.body


def test_state_changes_without_the_session_csrf_token_are_refused(gw: WebGateway) -> None:
    c = gw.client()
    assert c.sign_in().status == 303
    assert c.post("/console/alarms/x-1/ack", {"note": "hi"}).status == 403
    assert c.post("/console/alarms/x-1/ack", {"csrf": "wrong", "note": "hi"}).status == 403
    assert c.post("/signout", {}).status == 403
    # The sign-in page's token is not the session's.
    other = gw.client()
    other.get("/signin")
    token = csrf_of(other.get("/signin").body)
    assert c.post("/signout", {"csrf": token}).status == 403
    assert c.get("/console/state").status == 200  # still signed in
    csrf = csrf_of(c.get("/console").body)
    unknown = c.post(
        "/console/alarms/x-1/ack", {"csrf": csrf}, headers={"Accept": "application/json"}
    )
    assert unknown.status == 404 and unknown.json() == {
        "error": "no alarm 'x-1'",
        "code": "not-found",
    }
    token = c.cookies["gw_session"]
    out = c.post("/signout", {"csrf": csrf})
    assert out.status == 303 and "gw_session" not in c.cookies
    c.cookies["gw_session"] = token  # a signed-out session cannot be replayed
    assert c.get("/console/state").status == 401


def test_the_console_event_stream_needs_a_session_and_ends_with_it(gw: WebGateway) -> None:
    c = gw.client()
    assert c.sign_in().status == 303
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request(
        "GET", "/console/events", headers={"Cookie": f"gw_session={c.cookies['gw_session']}"}
    )
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
    assert resp.readline() == b"retry: 5000\n"  # the page reconnects 5 s after a drop
    assert resp.readline() == b"\n"
    assert resp.readline() == b"event: snapshot\n"
    snapshot = json.loads(resp.readline().removeprefix(b"data: "))
    assert snapshot["devices"][0]["id"] == "smoke-b2-stair-2"
    assert snapshot["devices"][0]["available"] is True
    resp.readline()
    # A change arrives as its own event.
    assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
    events = set()
    while not {"device", "alarm"} <= events:
        line = resp.readline()
        if line.startswith(b"event: "):
            events.add(line.removeprefix(b"event: ").strip().decode())
    csrf = csrf_of(c.get("/console").body)
    started = time.monotonic()
    assert c.post("/signout", {"csrf": csrf}).status == 303
    while resp.readline():  # the server ends the stream
        pass
    assert time.monotonic() - started < 5
    conn.close()


def test_a_removed_staff_account_loses_its_session(gw: WebGateway) -> None:
    import subprocess

    from tests.harness import GATEWAY

    c = gw.client()
    assert c.sign_in().status == 303
    subprocess.run(
        [GATEWAY, "staff", "remove", "staff-li", "-c", str(gw.config)],
        check=True,
        capture_output=True,
    )
    assert c.get("/console/state").status == 401
    assert c.sign_in().status == 401


# ---- kiosk: requests, limits, escaping, statuses ---------------------------------------


def test_a_kiosk_request_reaches_the_platform_with_a_short_code(gw: WebGateway) -> None:
    c = gw.client()
    resp = _file(c, flat="2-301", phone="+86 138-0000-0000", text="水龙头漏水 tap leaks")
    code = _code_of(resp)
    assert set(code) <= set(CODE_ALPHABET)
    topic = f"{gw.base}/requests/{code}"
    assert gw.sub.wait(lambda ms: any(m.topic == topic for m in ms)), gw.proc.log()
    msg = next(m for m in gw.sub.snapshot() if m.topic == topic)
    doc = msg.json()
    validator("service-request").validate(doc)
    assert not msg.retain
    assert doc["site"] == "sunrise-gardens" and doc["kiosk"] == "lobby"
    assert (doc["category"], doc["flat"], doc["phone"]) == ("repair", "2-301", "+86 138-0000-0000")
    assert doc["text"] == "水龙头漏水 tap leaks" and doc["lang"] == "en"
    page = c.get(resp.header("Location") or "")
    assert page.status == 200 and f'id="code">{code}<' in page.body
    # The code page shows no personal data: not the flat, phone or text.
    assert "2-301" not in page.body and "138" not in page.body and "tap leaks" not in page.body


def test_the_kiosk_form_post_needs_its_csrf_cookie_and_token(gw: WebGateway) -> None:
    c = gw.client()
    page = c.get("/kiosk/lobby/new/cleaning")
    form = {"category": "cleaning", "lang": "zh", "csrf": csrf_of(page.body)}
    assert c.post("/kiosk/lobby/requests", {**form, "csrf": "nope"}).status == 403
    stranger = gw.client()  # a token copied into another browser, without the cookie
    assert stranger.post("/kiosk/lobby/requests", form).status == 403
    assert _code_of(c.post("/kiosk/lobby/requests", form))


TOO_LONG: list[tuple[str, str, str]] = [
    ("text", "x" * 501, "text: at most 500 characters"),
    ("flat", "1" * 17, "flat: at most 16 characters"),
    ("phone", "call me maybe", "phone: digits, '+', '-' and spaces"),
    ("phone", "1" * 25, "phone: digits, '+', '-' and spaces"),
]


def test_kiosk_input_is_length_limited(gw: WebGateway) -> None:
    c = gw.client()
    for field, value, error in TOO_LONG:
        resp = _file(c, **{field: value})
        assert resp.status == 400, field
        assert error in resp.body.replace("&#x27;", "'"), field
    edge = _file(c, text="x" * 500, flat="1" * 16, phone="1" * 24)
    assert _code_of(edge)
    assert gw.sub.wait(lambda ms: any("/requests/" in m.topic for m in ms))
    assert sum("/requests/" in m.topic for m in gw.sub.snapshot()) == 1


def test_kiosk_input_is_rendered_escaped(gw: WebGateway) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    resp = _file(gw.client(), flat='"><b>', text=evil, phone="not a phone")
    assert resp.status == 400  # shown again for correction, with the text escaped
    assert "<script>alert" not in resp.body and "<img src=x" not in resp.body
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in resp.body
    assert 'value="&quot;&gt;&lt;b&gt;"' in resp.body


def test_kiosk_requests_are_rate_limited_per_kiosk(gw: WebGateway) -> None:
    c = gw.client()
    codes = [_code_of(_file(c)) for _ in range(3)]
    refused = _file(c, text="fourth")
    assert refused.status == 429 and "many requests" in refused.body
    assert _code_of(_file(c, kiosk="b2"))  # another kiosk has its own budget
    assert len(set(codes)) == 3
    assert gw.sub.wait(lambda ms: sum("/requests/" in m.topic for m in ms) == 4)
    time.sleep(0.3)
    assert sum("/requests/" in m.topic for m in gw.sub.snapshot()) == 4


def test_unknown_kiosk_and_category_are_404(gw: WebGateway) -> None:
    c = gw.client()
    assert c.get("/kiosk/roof").status == 404
    assert c.get("/kiosk/lobby/new/pizza").status == 404


def test_status_updates_from_the_platform_show_under_the_code(gw: WebGateway) -> None:
    c = gw.client()
    code = _code_of(_file(c))
    assert f"{code}" in c.get(f"/kiosk/lobby/status?code={code.lower()}&lang=en").body
    reply = gw.command(f"requests/{code}/status", {"status": "assigned", "note": "Mr Zhang, 3 pm"})
    validator("command-reply").validate(reply)
    assert reply["ok"] is True and reply["result"]["status"] == "assigned"
    again = gw.command(f"requests/{code}/status", {"status": "assigned", "note": "Mr Zhang, 3 pm"})
    assert again["ok"] is True and again["result"]["at"] == reply["result"]["at"]
    page = c.get(f"/kiosk/lobby/status?code={code[:3]}+{code[3:].lower()}&lang=en")
    assert "Someone is assigned" in page.body and "Mr Zhang, 3 pm" in page.body
    assert page.body.count("Someone is assigned") == 1  # a repeated update is one line
    # In the gateway's local time (web.timezone), to the minute; the UTC instant kept.
    at = reply["result"]["at"]
    local = shanghai_time(at, fmt="%Y-%m-%d %H:%M")
    assert f'<time datetime="{at}" title="{at}">{local}</time>' in page.body
    zh = c.get(f"/kiosk/lobby/status?code={code}&lang=zh")
    assert "已安排人员" in zh.body
    assert f'class="lang" href="?lang=en&amp;code={code}"' in zh.body  # the switch keeps it
    missing = c.get("/kiosk/lobby/status?code=AAAAAA&lang=en")
    assert "No request has this code" in missing.body


BAD_STATUS_UPDATES: list[tuple[str, dict[str, Any], str]] = [
    ("requests/AAAAAA/status", {"status": "done"}, "unknown request 'AAAAAA'"),
    ("requests/ab/status", {"status": "done"}, "'ab' is not a request code"),
    ("requests/{code}/status", {}, "field 'status' required"),
    ("requests/{code}/status", {"status": "lost"}, "field 'status' must be one of"),
    ("requests/{code}/status", {"status": "done", "note": 5}, "field 'note' must be"),
    ("requests/{code}/status", {"status": "done", "who": 1}, "unknown field 'who'"),
    ("requests/{code}", {"status": "done"}, "request commands are"),
]


def test_bad_status_updates_get_a_clear_error(gw: WebGateway) -> None:
    # One gateway for every case: each reply names its own problem.
    code = _code_of(_file(gw.client()))
    for path, args, error in BAD_STATUS_UPDATES:
        reply = gw.command(path.format(code=code), args)
        validator("command-reply").validate(reply)
        assert reply["ok"] is False and reply["error"].startswith(error), (path, args, reply)
    assert gw.proc.running()
    page = gw.client().get(f"/kiosk/lobby/status?code={code}&lang=en")
    assert "Sent" in page.body and "Done" not in page.body


def test_requests_and_statuses_survive_a_restart(gw: WebGateway) -> None:
    c = gw.client()
    code = _code_of(_file(c))
    assert gw.command(f"requests/{code}/status", {"status": "received"})["ok"]
    gw.proc.terminate()
    gw.proc.start()
    assert wait_for(lambda: _alive(gw), timeout=15), gw.proc.log()
    page = c.get(f"/kiosk/lobby/status?code={code}&lang=en")
    assert "Received by the office" in page.body
    assert gw.command(f"requests/{code}/status", {"status": "done"})["ok"]


def test_a_request_stored_but_not_yet_in_the_outbox_is_published_after_a_restart(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The crash between SQLite and the outbox: the row is there, unpublished; a restart sends it."""
    db_path = tmp_path / "web.db"
    g = start_web_gateway(tmp_path, broker, web={**FAST_LIMITS, "db_path": str(db_path)})
    try:
        g.proc.terminate()
        # Written by the store's own insert, as `file` does before it hands the request
        # to the outbox: exactly the state a crash between the two leaves behind.
        store = RequestStore(db_path, None, Topics("unused", Identity("s", "g")))  # type: ignore[arg-type]
        req = store._insert(
            ServiceRequest.validate(
                kiosk="lobby", category="repair", flat="3-502", phone="", text="灯坏了", lang="zh"
            )
        )
        store.close()
        g.proc.start()
        topic = f"{g.base}/requests/{req.code}"
        assert g.sub.wait(lambda ms: any(m.topic == topic for m in ms), timeout=15), g.proc.log()
        doc = next(m for m in g.sub.snapshot() if m.topic == topic).json()
        validator("service-request").validate(doc)
        assert (doc["code"], doc["flat"], doc["text"]) == (req.code, "3-502", "灯坏了")
        assert doc["created_at"] == req.created_at

        # Marked published once the outbox took it: the next start does not send it again.
        def published() -> bool:
            with closing(sqlite3.connect(db_path)) as db:
                row = db.execute("SELECT published FROM requests WHERE code = ?", (req.code,))
                return bool(row.fetchone()[0])

        assert wait_for(published, timeout=10), g.proc.log()
        g.proc.terminate()
        g.proc.start()
        assert wait_for(lambda: _alive(g), timeout=15), g.proc.log()
        # A request filed now is published, and is the only new one on the wire.
        code = _code_of(_file(g.client()))
        new = f"{g.base}/requests/{code}"
        assert g.sub.wait(lambda ms: any(m.topic == new for m in ms)), g.proc.log()
        assert [m.topic for m in g.sub.snapshot() if "/requests/" in m.topic] == [topic, new]
    finally:
        g.stop()


def _alive(gw: WebGateway) -> bool:
    try:
        return gw.client().get("/kiosk/lobby", timeout=1).status == 200
    except OSError:
        return False


# ---- TLS ---------------------------------------------------------------------------------


def test_tls_serves_https_and_marks_cookies_secure(tmp_path: Path, broker: Mosquitto) -> None:
    pki = make_pki(tmp_path / "pki")
    g = start_web_gateway(
        tmp_path,
        broker,
        web={"tls": {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}},
    )
    try:
        ctx = ssl.create_default_context(cafile=str(pki.ca))
        c = HttpClient(g.port, tls=ctx)
        assert c.get("/kiosk/lobby").status == 200
        resp = c.sign_in()
        assert resp.status == 303
        assert "secure" in _cookie_attrs(resp, "gw_session").lower()
        with pytest.raises(Exception):  # noqa: B017  (plain HTTP to a TLS port)
            HttpClient(g.port).get("/kiosk/lobby", timeout=2)
    finally:
        g.stop()


def test_config_refuses_missing_web_tls_files(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_config
    from tests.harness import write_config

    tls = {"cert_file": "nope.crt", "key_file": "nope.key"}
    cfg = write_config(
        tmp_path / "gw.yaml", "mqtt://127.0.0.1:1883", [], web={"enabled": True, "tls": tls}
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    text = str(err.value)
    assert f"web.tls.cert_file: file {tmp_path / 'nope.crt'} not found" in text
    assert "web.tls.key_file" in text


def test_config_refuses_a_bad_web_section(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_config
    from tests.harness import write_config

    cfg = write_config(
        tmp_path / "gw.yaml",
        "mqtt://127.0.0.1:1883",
        [],
        web={"enabled": True, "port": 70000, "colour": "red", "kiosk": {"ids": ["a", "a"]}},
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    text = str(err.value)
    assert "web.port" in text and "web.colour" in text and "web.kiosk.ids" in text


def test_config_refuses_an_unknown_time_zone(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_config
    from tests.harness import write_config

    cfg = write_config(
        tmp_path / "gw.yaml",
        "mqtt://127.0.0.1:1883",
        [],
        web={"enabled": True, "timezone": "Mars/Olympus_Mons", "console_lang": "fr"},
    )
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    text = str(err.value)
    assert "web.timezone" in text and "unknown time zone 'Mars/Olympus_Mons'" in text
    assert "web.console_lang" in text


def test_console_times_are_local_with_their_age_and_the_utc_instant_kept(
    gw: WebGateway,
) -> None:
    c = gw.client()
    c.sign_in()
    assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
    assert wait_for(lambda: c.get("/console/state").json()["alarms"], timeout=10)
    state = c.get("/console/state").json()
    alarm = state["alarms"][0]
    device = next(d for d in state["devices"] if d["id"] == "smoke-b2-stair-2")
    assert alarm["since_local"] == shanghai_time(alarm["raised_at"])
    assert device["at_local"] == shanghai_time(device["last_at"])
    assert state["now"].endswith("Z")  # the gateway's clock, for the script's ages
    page = c.get("/console").body
    for iso in (alarm["raised_at"], device["last_at"]):
        assert (
            f'<time datetime="{iso}" title="{iso}">{shanghai_time(iso)}</time> <span class="ago">'
        ) in page
    assert re.search(r'<span class="ago">(just now|\d+ s ago)</span>', page)
    assert "Times in Asia/Shanghai" in page


def test_the_console_speaks_chinese_or_english_and_remembers_the_switch(
    gw: WebGateway,
) -> None:
    c = gw.client()
    assert "Staff sign in" in c.get("/signin").body  # web.console_lang: en
    zh = c.get("/signin?lang=zh")
    assert "员工登录" in zh.body and 'lang="zh-CN"' in zh.body
    assert 'class="lang" href="/signin?lang=en"' in zh.body
    assert "工号或 PIN 错误。" in c.sign_in(secret="000000").body  # the cookie keeps it
    c.sign_in()
    assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]
    assert wait_for(lambda: c.get("/console/state").json()["alarms"], timeout=10)
    page = c.get("/console").body
    assert "楼宇值班台" in page and "火警" in page and "危急" in page and "报警中" in page
    assert "2号楼 / 2层 / stairwell" in page and "时间为 Asia/Shanghai 时区" in page
    words = json.loads(html.unescape(re.search(r'data-words="([^"]*)"', page).group(1)))  # type: ignore[union-attr]
    assert words["type_fire"] == "火警" and words["ago_min"] == "{n} 分钟前"
    en = c.get("/console?lang=en").body
    assert "Building console" in en and "fire" in en and "Bldg 2 / fl. 2 / stairwell" in en
    assert "Building console" in c.get("/console").body


def test_an_acknowledgement_made_offline_is_published_when_the_broker_returns(
    gw: WebGateway,
) -> None:
    c = gw.client()
    assert c.sign_in().status == 303
    assert gw.command("devices/smoke-b2-stair-2/inject", {"type": "smoke.alarm"})["ok"]

    def alarms() -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = c.get("/console/state").json()["alarms"]
        return docs

    assert wait_for(lambda: bool(alarms()), timeout=10), gw.proc.log()
    alarm_id = alarms()[0]["alarm_id"]
    gw.broker.stop()
    csrf = csrf_of(c.get("/console").body)
    resp = c.post(
        f"/console/alarms/{alarm_id}/ack",
        {"csrf": csrf, "note": "<script>x()</script> on my way"},
        headers={"Accept": "application/json"},
    )
    assert resp.status == 200, resp.body
    body = resp.json()
    assert body["status"] == "accepted" and body["alarm"]["ack"]["via"] == "web"
    again = c.post(
        f"/console/alarms/{alarm_id}/ack", {"csrf": csrf}, headers={"Accept": "application/json"}
    )
    assert again.json()["status"] == "already_acknowledged"
    # Server-side rendering escapes the note.
    page = c.get("/console").body
    assert "<script>x()" not in page and "&lt;script&gt;x()&lt;/script&gt; on my way" in page
    gw.broker.start()
    topic = f"{gw.base}/alarms/{alarm_id}"

    def acked() -> bool:
        docs = [m.json() for m in gw.sub.snapshot() if m.topic == topic and m.payload]
        return any(d["state"] == "acknowledged" for d in docs)

    assert wait_for(acked, timeout=30), gw.proc.log()
    doc = [m.json() for m in gw.sub.snapshot() if m.topic == topic and m.payload][-1]
    assert doc["ack"] == {
        "by": "staff-li",
        "note": "<script>x()</script> on my way",
        "at": doc["ack"]["at"],
        "via": "web",
    }


def test_a_busy_port_is_named_in_the_log_and_the_gateway_keeps_running(
    tmp_path: Path, broker: Mosquitto
) -> None:
    import socket

    from tests.harness import GatewayProc, write_config

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = write_config(
            tmp_path / "gw.yaml", broker.url, [], web={"enabled": True, "port": port}
        )
        proc = GatewayProc(cfg).start()
        try:
            assert wait_for(
                lambda: f"web: cannot listen on 127.0.0.1:{port}" in proc.log(), timeout=15
            ), proc.log()
            assert proc.running()
        finally:
            assert proc.terminate() == 0
