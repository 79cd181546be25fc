"""The pure parts of the web's limits: caps, refusal logs, bounded tables, sessions kept
across a restart, trusted devices.  All on a fake monotonic clock."""

from __future__ import annotations

import logging

import pytest

from gateway.web.auth import DeviceTrust, SessionStore, WindowLimiter, token_key
from gateway.web.guard import Caps, RefusalLog, client_of
from tests.test_web_parts import Clock  # the web's fake monotonic clock


def test_caps_hold_per_client_and_in_total_and_forget_idle_clients() -> None:
    caps = Caps(per_client=2, total=3)
    assert caps.acquire("a") is None and caps.acquire("a") is None
    assert caps.acquire("a") == "client"
    assert caps.acquire("b") is None
    assert caps.acquire("c") == "total"
    caps.release("a")
    assert caps.acquire("c") is None
    for client in ("a", "b", "c"):
        while caps.held(client):
            caps.release(client)
    assert caps.held() == 0 and not caps._held  # no empty entries left behind


def test_refusals_are_logged_once_then_summed_up_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    refusals = RefusalLog("event streams", every_s=60, clock=clock)
    with caplog.at_level(logging.WARNING):
        for i in range(1000):
            refusals.refused(f"10.0.0.{i % 3}", "cap reached")
        assert len(caplog.records) == 1
        clock.t += 61
        refusals.refused("10.0.0.1", "cap reached")
    assert len(caplog.records) == 2
    summary = caplog.records[1].getMessage()
    assert "refused 1000 event streams" in summary and "3 clients" in summary


def test_client_of_is_the_address_without_the_port() -> None:
    assert client_of(("192.168.1.20", 51234)) == "192.168.1.20"
    assert client_of(("fe80::1", 51234, 0, 2)) == "fe80::1"
    assert client_of(None) == "?"


def test_window_limiter_is_bounded_and_forgets_quiet_keys() -> None:
    clock = Clock()
    lim = WindowLimiter(limit=1, window_s=10, clock=clock, max_keys=100)
    for i in range(10_000):
        lim.allow(f"10.0.{i // 256}.{i % 256}")
    assert lim.tracked() <= 100
    assert not lim.allow("10.0.39.15")  # the most recent are kept
    assert lim.blocked_for("10.0.39.15") > 0
    clock.t += 11
    assert lim.allow("new") and lim.tracked() == 1  # the quiet ones are gone


def test_sessions_are_bounded_per_staff_member_and_in_total() -> None:
    store = SessionStore(idle_s=60, clock=Clock(), max_sessions=50, per_staff=3)
    first = store.create("staff-li", "Li")
    for _ in range(5):
        store.create("staff-li", "Li")
    assert store.get(first.token) is None and len(store) == 3
    for i in range(100):
        store.create(f"staff-{i}", "x")
    assert len(store) == 50


def test_sessions_survive_a_restart_without_their_tokens_and_downtime_is_not_idle() -> None:
    clock = Clock()
    store = SessionStore(idle_s=60, clock=clock)
    s = store.create("staff-li", "Li Wei")
    clock.t += 50
    doc = store.dump()
    assert s.token not in str(doc) and doc["sessions"][0]["key"] == token_key(s.token)
    later = Clock()
    later.t = 5.0  # a new process: its monotonic clock has nothing to do with the old one
    again = SessionStore(idle_s=60, clock=later)
    assert again.restore(doc) == 1
    restored = again.get(s.token)
    assert restored is not None and restored.csrf == s.csrf
    later.t += 61
    assert again.get(s.token) is None
    with pytest.raises(ValueError, match="version"):
        again.restore({"sessions": []})


def test_an_open_stream_keeps_a_session_alive() -> None:
    clock = Clock()
    store = SessionStore(idle_s=60, clock=clock)
    s = store.create("staff-li", "Li")
    for _ in range(10):
        clock.t += 50
        assert store.touch(s.key)
    assert store.alive(s.key)
    clock.t += 61
    assert not store.touch(s.key) and not store.alive(s.key)


def test_a_device_is_trusted_for_its_staff_id_only_and_bounded() -> None:
    clock = Clock()
    devices = DeviceTrust(ttl_s=100, clock=clock, per_staff=2, max_devices=10)
    token = devices.trust("staff-li", None)
    assert devices.trusted("staff-li", token) == token_key(token)
    assert devices.trusted("staff-wang", token) is None
    assert devices.trusted("staff-li", "forged") is None
    renewed = devices.trust("staff-li", token)  # a new cookie at each sign-in
    assert devices.trusted("staff-li", token) is None and devices.trusted("staff-li", renewed)
    for _ in range(5):
        devices.trust("staff-li", None)
    assert len(devices) == 2
    for i in range(50):
        devices.trust(f"staff-{i}", None)
    assert len(devices) == 10
    kept = DeviceTrust(ttl_s=100, clock=Clock())
    kept.restore(devices.dump())
    assert len(kept) == 10
    clock.t += 101
    last = devices.trust("staff-x", None)
    assert devices.trusted("staff-x", last) and not devices.trusted("staff-li", renewed)
