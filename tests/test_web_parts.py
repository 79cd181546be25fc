"""The web's pure parts: PIN hashing and the staff file, limits, sessions, request fields,
the kiosk banner, and the `gateway staff` commands."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from community_protocol.schemas import validator
from gateway.cli import main
from gateway.config import SyncMode
from gateway.sdk.model import ClockState, Identity, format_ts
from gateway.storage.outbox import Consumer, Outbox
from gateway.web.auth import FailureLimiter, SessionStore, WindowLimiter, tokens_match
from gateway.web.live import building_banner
from gateway.web.requests import (
    CODE_ALPHABET,
    RequestError,
    ServiceRequest,
    new_code,
    normalise_code,
)
from gateway.web.staff import StaffError, StaffFile, hash_secret, verify_secret
from tests.harness import write_config


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# ---- staff secrets ------------------------------------------------------------------------


def test_a_pin_is_stored_as_a_salted_scrypt_hash_only() -> None:
    a, b = hash_secret("123456"), hash_secret("123456")
    assert a != b  # salted
    assert a.startswith("scrypt$16384$8$1$") and "123456" not in a
    assert verify_secret("123456", a) and not verify_secret("123457", a)
    assert not verify_secret("123456", "scrypt$bad") and not verify_secret("x", "plain")
    assert not verify_secret("1" * 10_000, a)  # refused before any hashing
    with pytest.raises(StaffError, match="6 to 128 characters"):
        hash_secret("1234")


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_staff_file_written_by_root_belongs_to_the_state_folders_owner(tmp_path: Path) -> None:
    folder = tmp_path / "state"
    folder.mkdir()
    os.chown(folder, 4321, 4322)  # the gateway's user, as systemd's StateDirectory makes it
    f = StaffFile(folder / "staff.json")
    f.add("staff-li", "Li Wei", "271828")
    st = f.path.stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_staff_file_is_0600_and_never_holds_the_pin(tmp_path: Path) -> None:
    f = StaffFile(tmp_path / "state" / "staff.json")
    assert f.load() == {}
    f.add("staff-li", "Li Wei", "271828")
    f.add("staff-wang", "王芳", "314159")
    assert stat.S_IMODE(f.path.stat().st_mode) == 0o600
    text = f.path.read_text("utf-8")
    assert "271828" not in text and "314159" not in text and "王芳" in text
    members = f.load()
    assert list(members) == ["staff-li", "staff-wang"]
    assert verify_secret("314159", members["staff-wang"].hash)
    with pytest.raises(StaffError, match="exists; use --replace"):
        f.add("staff-li", "Li", "000000")
    f.add("staff-li", "Li Wei", "000000", replace=True)
    assert verify_secret("000000", f.load()["staff-li"].hash)
    f.remove("staff-li")
    assert list(f.load()) == ["staff-wang"]
    with pytest.raises(StaffError, match="no staff id 'staff-li'"):
        f.remove("staff-li")
    with pytest.raises(StaffError, match="staff id 'a b'"):
        f.add("a b", "", "123456")


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("{", "not JSON"),
        ('{"staff": []}', '"version": 1'),
        ('{"version": 1, "staff": {}}', '"staff" must be a list'),
        ('{"version": 1, "staff": [{"id": "a"}]}', "staff[0]: needs exactly the keys"),
        (
            '{"version": 1, "staff": [{"id": "a", "name": "", "hash": "1234"}]}',
            "staff[0]: hash is not an scrypt hash",
        ),
        (
            '{"version": 1, "staff": [{"id": "a", "name": "", "hash": "scrypt$"},'
            ' {"id": "a", "name": "", "hash": "scrypt$"}]}',
            "staff[1]: duplicate id 'a'",
        ),
    ],
)
def test_a_broken_staff_file_is_refused_with_where(
    tmp_path: Path, content: str, error: str
) -> None:
    path = tmp_path / "staff.json"
    path.write_text(content)
    with pytest.raises(StaffError, match=r".*") as exc:
        StaffFile(path).load()
    assert str(path) in str(exc.value) and error in str(exc.value)


# ---- limits and sessions ----------------------------------------------------------------


def test_sign_in_failures_lock_a_key_for_the_lockout_then_let_it_try_again() -> None:
    clock = Clock()
    lim = FailureLimiter(max_failures=3, window_s=60, lockout_s=30, clock=clock)
    for _ in range(2):
        lim.failure("ip:1")
    assert lim.locked_for("ip:1") == 0
    lim.failure("ip:1")
    assert lim.locked_for("ip:1") == 30 and lim.locked_for("ip:2") == 0
    clock.t += 29.5
    assert lim.locked_for("ip:1") == pytest.approx(0.5)
    clock.t += 1
    assert lim.locked_for("ip:1") == 0
    # Failures older than the window do not count.
    lim.failure("id:x")
    lim.failure("id:x")
    clock.t += 61
    lim.failure("id:x")
    assert lim.locked_for("id:x") == 0
    lim.success("id:x")
    lim.failure("id:x")
    lim.failure("id:x")
    assert lim.locked_for("id:x") == 0


def test_sign_in_failure_counters_are_bounded_under_a_flood_of_made_up_ids() -> None:
    clock = Clock()
    lim = FailureLimiter(max_failures=3, window_s=60, lockout_s=30, clock=clock, max_keys=100)
    for _ in range(3):
        lim.failure("id:staff-li")  # a real id, locked by a guesser
    for i in range(5000):  # then a flood of one-off made-up ids and addresses
        lim.failure(f"id:made-up-{i}")
        lim.failure(f"ip:10.0.{i // 250}.{i % 250}")
        clock.t += 0.001
    assert lim.tracked() <= 2 * 100
    # The flood of counts does not evict a lock: the real id stays locked.
    assert lim.locked_for("id:staff-li") > 0
    # The newest counts are the ones kept: a made-up id just seen still counts.
    lim.failure("id:made-up-4999")
    lim.failure("id:made-up-4999")
    assert lim.locked_for("id:made-up-4999") > 0
    # Once the window and the lockouts are over, the next failure prunes them all.
    clock.t += 61
    lim.failure("ip:1")
    assert lim.tracked() == 1
    assert lim.locked_for("id:staff-li") == 0


def test_sign_in_locks_are_bounded_too() -> None:
    clock = Clock()
    lim = FailureLimiter(max_failures=1, window_s=60, lockout_s=30, clock=clock, max_keys=50)
    for i in range(1000):
        lim.failure(f"id:{i}")
        clock.t += 0.01
    assert lim.tracked() <= 50
    assert lim.locked_for("id:999") > 0  # the newest locks are kept


def test_window_limiter_allows_limit_events_per_window_and_key() -> None:
    clock = Clock()
    lim = WindowLimiter(limit=2, window_s=10, clock=clock)
    assert lim.allow("lobby") and lim.allow("lobby") and not lim.allow("lobby")
    assert lim.allow("b2")
    clock.t += 10.5
    assert lim.allow("lobby")


def test_sessions_expire_when_idle_and_tokens_compare_safely() -> None:
    clock = Clock()
    store = SessionStore(idle_s=60, clock=clock)
    s = store.create("staff-li", "Li Wei")
    assert len(s.token) >= 40 and s.csrf != s.token
    clock.t += 59
    assert store.get(s.token) is s  # use refreshes it
    clock.t += 59
    assert store.get(s.token) is s
    clock.t += 61
    assert store.get(s.token) is None
    assert store.get(None) is None and store.get("") is None
    other = store.create("staff-li", "Li Wei")
    store.drop_staff("staff-li")
    assert store.get(other.token) is None
    assert tokens_match("abc", "abc") and not tokens_match("abd", "abc")
    assert not tokens_match(None, "abc")


# ---- service request fields -------------------------------------------------------------


def _req(**kw: str) -> ServiceRequest:
    fields = {"kiosk": "lobby", "category": "repair", "flat": "", "phone": "", "text": ""}
    return ServiceRequest.validate(**{**fields, **kw}, lang="zh")


def test_request_fields_are_trimmed_and_limited() -> None:
    r = _req(flat=" 2-301 ", phone=" +86 138-0000 ", text="  漏水\n")
    assert (r.flat, r.phone, r.text) == ("2-301", "+86 138-0000", "漏水")
    doc = r.document(Identity("s", "g"))
    assert doc["flat"] == "2-301" and doc["phone"] == "+86 138-0000"
    assert _req().document(Identity("s", "g"))["phone"] is None
    for kw, field in [
        ({"category": "pizza"}, "category"),
        ({"flat": "x" * 17}, "flat"),
        ({"phone": "12a"}, "phone"),
        ({"phone": "1" * 25}, "phone"),
        ({"text": "x" * 501}, "text"),
        ({"text": "bell\x07"}, "text"),
    ]:
        with pytest.raises(RequestError) as exc:
            _req(**kw)
        assert exc.value.field == field, kw


def test_codes_use_the_unambiguous_alphabet_and_are_normalised() -> None:
    codes = {new_code() for _ in range(500)}
    assert len(codes) == 500
    assert all(len(c) == 6 and set(c) <= set(CODE_ALPHABET) for c in codes)
    assert not set("0O1IL2Z5S8B") & set(CODE_ALPHABET)
    assert normalise_code(" k7q x4m ") == "K7QX4M"
    assert normalise_code("K7Q-X4M") == "K7QX4M"
    assert normalise_code("K7QX4") is None and normalise_code("K7QX40") is None


# ---- kiosk banner -----------------------------------------------------------------------


def _alarm(type_: str, state: str, unit: str = "1201", floor: str | None = "12") -> dict:
    loc = {"building": "2", "unit": unit, **({"floor": floor} if floor else {})}
    return {
        "type": type_,
        "state": state,
        "device": {"id": "d", "name": "Mrs Chen's flat", "location": loc},
    }


def test_the_banner_shows_building_wide_alarms_by_place_only() -> None:
    banner = building_banner(
        [
            _alarm("fire", "active"),
            _alarm("fire", "acknowledged", unit="1202"),  # same floor: one line
            _alarm("fire", "cleared", floor="3"),  # condition gone
            _alarm("fire", "closed", floor="4"),
            _alarm("care", "active", floor="5"),  # about one resident: never shown
            _alarm("fire", "active", floor=None),
        ]
    )
    assert banner == [
        {"type": "fire", "building": "2", "floor": "12"},
        {"type": "fire", "building": "2", "floor": None},
    ]
    assert "1201" not in json.dumps(banner) and "Chen" not in json.dumps(banner)


# ---- gateway staff ------------------------------------------------------------------------


def test_staff_cli_adds_lists_and_removes_without_showing_hashes(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "gw.yaml", "mqtt://127.0.0.1:1883", [])
    runner = CliRunner()
    r = runner.invoke(
        main,
        ["staff", "add", "staff-li", "--name", "Li Wei", "-c", str(cfg)],
        input="271828\n271828\n",
    )
    assert r.exit_code == 0, r.output
    staff_file = tmp_path / "state" / "staff.json"
    assert staff_file.is_file()
    r = runner.invoke(
        main, ["staff", "add", "staff-x", "-c", str(cfg)], input="271828\n999999\n271828\n271828\n"
    )
    assert r.exit_code == 0 and "do not match" in r.output.lower()
    r = runner.invoke(
        main, ["staff", "add", "staff-y", "--pin-stdin", "-c", str(cfg)], input="12\n"
    )
    assert r.exit_code == 2 and "6 to 128 characters" in r.output
    r = runner.invoke(main, ["staff", "list", "-c", str(cfg)])
    assert r.exit_code == 0
    assert r.output.split("\n")[:2] == ["staff-li  Li Wei", "staff-x"]
    assert "scrypt" not in r.output
    r = runner.invoke(main, ["staff", "remove", "staff-x", "-c", str(cfg)])
    assert r.exit_code == 0
    r = runner.invoke(main, ["staff", "remove", "staff-x", "-c", str(cfg)])
    assert r.exit_code == 2 and "no staff id 'staff-x'" in r.output


def test_old_requests_are_purged_with_their_history(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from community_protocol.topics import Topics
    from gateway.web.requests import RequestStore

    # Filing and purging are SQLite only; the outbox is not touched here.
    store = RequestStore(tmp_path / "web.db", None, Topics("p", Identity("s", "g")))  # type: ignore[arg-type]
    now = datetime(2026, 11, 27, tzinfo=UTC)
    old = store._insert(_req(text="old"))
    new = store._insert(_req(text="new"))
    db = store.conn
    db.execute(
        "UPDATE requests SET created_at = ? WHERE code = ?",
        (format_ts(now - timedelta(days=91)), old.code),
    )
    db.execute(
        "UPDATE requests SET created_at = ? WHERE code = ?",
        (format_ts(now - timedelta(days=89)), new.code),
    )
    assert store.purge(90, now=now) == 1
    assert store._history(old.code) is None
    assert store._history(new.code) is not None
    rows = db.execute("SELECT DISTINCT code FROM request_status").fetchall()
    assert rows == [(new.code,)]
    store.close()


def test_a_code_already_taken_is_replaced_by_a_fresh_one(tmp_path: Path) -> None:
    from community_protocol.topics import Topics
    from gateway.web.requests import RequestStore

    store = RequestStore(tmp_path / "web.db", None, Topics("p", Identity("s", "g")))  # type: ignore[arg-type]
    req = _req(text="first")
    first = store._insert(req)
    second = store._insert(req)  # the same code again: the insert collides
    assert second.code != first.code
    assert normalise_code(second.code) == second.code
    assert (second.kiosk, second.text, second.created_at) == (req.kiosk, "first", req.created_at)
    assert store._history(second.code) is not None
    store.close()


def test_closing_the_request_store_waits_for_a_write_in_progress(tmp_path: Path) -> None:
    from community_protocol.topics import Topics
    from gateway.web.requests import RequestStore

    # The web's shutdown closes the store while a cancelled request's write may still
    # run in its thread: closing SQLite under a write is a crash, not an exception.
    store = RequestStore(tmp_path / "web.db", None, Topics("p", Identity("s", "g")))  # type: ignore[arg-type]
    store._insert(_req(text="first"))
    closed = threading.Event()
    closer = threading.Thread(target=lambda: (store.close(), closed.set()))
    with store._lock:  # a write in progress
        closer.start()
        assert not closed.wait(0.3)
    closer.join(timeout=10)
    assert closed.is_set()


def _outbox(tmp_path: Path) -> Outbox:
    """An outbox of the test's own (not opened), one consumer, no commit delay."""
    return Outbox(
        tmp_path / "outbox.db",
        max_messages=100,
        commit_interval_ms=0,
        sync=SyncMode.FULL,
        consumers=[Consumer("mqtt")],
    )


def test_a_request_the_outbox_refuses_keeps_its_code_and_is_handed_over_later(
    tmp_path: Path,
) -> None:
    import asyncio

    from community_protocol.topics import Topics
    from gateway.web.requests import RequestStore

    outbox = _outbox(tmp_path)
    store = RequestStore(tmp_path / "web.db", outbox, Topics("p", Identity("s", "g")))

    async def scenario() -> tuple[str, int, int, int]:
        # Not open yet: `aput` raises, as it would for a full disk or while stopping.
        req = await store.file(_req(text="refused"))
        left = len(store._unpublished())
        outbox.open()
        handed = await store.publish_pending()
        again = await store.publish_pending()  # marked: not handed twice
        return req.code, left, handed, again

    try:
        code, left, handed, again = asyncio.run(scenario())
        assert (left, handed, again) == (1, 1, 0)
        assert store._history(code) is not None  # durable: the code shown can be looked up
        reader = outbox.reader()
        rows = reader.next_batch("mqtt", {}, 10)
        reader.close()
        assert [r.topic for r in rows] == [f"p/s/g/requests/{code}"]
        assert json.loads(rows[0].payload)["code"] == code
    finally:
        outbox.close()
        store.close()


@pytest.mark.parametrize("state", [ClockState.SYNCED, ClockState.UNSYNCED])
def test_a_request_says_whether_its_created_at_came_from_a_synced_clock(
    tmp_path: Path, state: ClockState
) -> None:
    import asyncio

    from community_protocol.topics import Topics
    from gateway.web.requests import RequestStore

    outbox = _outbox(tmp_path)
    outbox.open()
    topics = Topics("p", Identity("s", "g"))
    store = RequestStore(tmp_path / "web.db", outbox, topics, clock=lambda: state)
    code = asyncio.run(store.file(_req(text="tap"))).code
    store.close()
    # Handed over again after a crash: the same document, clock included.
    again = RequestStore(tmp_path / "web.db", outbox, topics, clock=lambda: ClockState.SYNCED)
    again._db().execute("UPDATE requests SET published = 0")
    asyncio.run(again.publish_pending())
    again.close()
    reader = outbox.reader()
    first, second = [json.loads(r.payload) for r in reader.next_batch("mqtt", {}, 10)]
    reader.close()
    outbox.close()
    assert first == second and first["code"] == code and first["clock"] == str(state)
    validator("service-request").validate(first)


def test_requests_stored_by_an_older_version_are_not_claimed_synced(tmp_path: Path) -> None:
    import sqlite3

    from community_protocol.topics import Topics
    from gateway.web.requests import RequestStore

    old = sqlite3.connect(tmp_path / "web.db")
    old.executescript(
        "CREATE TABLE requests (code TEXT PRIMARY KEY, kiosk TEXT NOT NULL, category TEXT"
        " NOT NULL, flat TEXT NOT NULL, phone TEXT NOT NULL, text TEXT NOT NULL, lang TEXT"
        " NOT NULL, created_at TEXT NOT NULL, published INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO requests VALUES ('K7QX4M', 'lobby', 'repair', '', '', 'tap', 'zh',"
        " '2026-11-27T04:10:00.000Z', 0);"
    )
    old.close()
    store = RequestStore(tmp_path / "web.db", None, Topics("p", Identity("s", "g")))  # type: ignore[arg-type]
    [req] = store._unpublished()
    store.close()
    assert (req.code, req.clock) == ("K7QX4M", ClockState.UNSYNCED)


# ---- times and words on the screens -------------------------------------------------------


def test_times_are_shown_in_the_local_zone_with_their_age() -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from gateway.web.settings import Lang
    from gateway.web.timefmt import ago, local_time

    sh = ZoneInfo("Asia/Shanghai")
    assert local_time("2026-11-27T20:30:05.123Z", sh) == "2026-11-28 04:30:05"
    assert local_time("2026-11-27T20:30:05.123Z", sh, seconds=False) == "2026-11-28 04:30"
    assert local_time("not a time", sh) == "not a time" and local_time(None, sh) == ""
    now = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
    cases = [
        ("2026-11-27T11:59:55.000Z", "just now", "刚刚"),
        ("2026-11-27T11:59:15.000Z", "45 s ago", "45 秒前"),
        ("2026-11-27T11:57:00.000Z", "3 min ago", "3 分钟前"),
        ("2026-11-27T09:00:00.000Z", "3 h ago", "3 小时前"),
        ("2026-11-25T12:00:00.000Z", "2 d ago", "2 天前"),
        ("2026-11-27T12:05:00.000Z", "just now", "刚刚"),  # the tablet's clock ahead
    ]
    for ts, en, zh in cases:
        assert (ago(ts, Lang.EN, now), ago(ts, Lang.ZH, now)) == (en, zh), ts
    assert ago("garbage", Lang.EN, now) == ""


def test_the_system_zone_is_found_by_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from zoneinfo import ZoneInfo

    from gateway.web.timefmt import load_zone, system_zone, zone_label

    monkeypatch.setenv("TZ", "America/New_York")
    assert system_zone() == ZoneInfo("America/New_York")
    assert zone_label(load_zone(None)) == "America/New_York"
    assert zone_label(load_zone("Asia/Shanghai")) == "Asia/Shanghai"
    monkeypatch.setenv("TZ", "Not/AZone")  # an unusable $TZ falls through to the system's
    assert system_zone() is not None


def test_every_word_of_the_screens_is_in_both_languages() -> None:
    from gateway.web.i18n import CONSOLE_JS_KEYS, TEXT
    from gateway.web.settings import Lang

    for key, words in TEXT.items():
        assert set(words) == set(Lang) and all(w.strip() for w in words.values()), key
        # The same fields in both, or a translation would show "{n}" or lose the number.
        fields = [set(re.findall(r"\{(\w*)\}", w)) for w in words.values()]
        assert fields[0] == fields[1], key
    assert set(CONSOLE_JS_KEYS) <= set(TEXT)
    for kind in ("fire", "care", "wellness", "security", "maintenance"):
        assert f"type_{kind}" in CONSOLE_JS_KEYS
