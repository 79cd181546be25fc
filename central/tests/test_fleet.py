"""The fleet command's central side: config files checked, documents signed per gateway,
the audit trail on both stores, and list / push / rollout against a real Mosquitto
with scripted gateways (the real gateway processes: test_fleet_e2e.py)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from community_central.broker import BrokerSettings
from community_central.fleet import (
    AuditRow,
    AuditStore,
    Fleet,
    Selector,
    audit_trail,
    desired_for,
    load_config_file,
)
from community_central.yamlfile import ConfigError
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.tests.fleet_peers import ScriptedGateway, health_document
from central.tests.tickets_harness import CENTRAL
from community_protocol.ed25519 import (
    SignatureError,
    generate_key,
    key_id,
    load_private_key,
    verify_config,
)
from community_protocol.enums import ConfigResult
from community_protocol.ids import Identity
from community_protocol.schemas import validator
from tests.peers import Mosquitto, free_port, wait_for

CONFIG = {
    "version": 1,
    "site": {"id": "placeholder"},
    "gateway": {"id": "placeholder"},
    "broker": {"url": "mqtt://broker:1883", "password": {"file": "/etc/gateway/broker.pw"}},
    "health": {"interval_s": 30},
    "devices": [],
}


def _write(path: Path, doc: Any) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False) if not isinstance(doc, str) else doc)
    return path


# ---- the config file ---------------------------------------------------------------------


def test_a_good_config_file_loads(tmp_path: Path) -> None:
    assert load_config_file(_write(tmp_path / "c.yaml", CONFIG)) == CONFIG


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "c.yaml:1: a gateway config is a mapping"),
        (
            "version: 1\nsite: {id: s}\ngateway: x\nbroker: {}\n",
            "c.yaml:3 gateway: a mapping is required",
        ),
        (
            "site: {id: s}\ngateway: {id: g}\nbroker: {}\n",
            "c.yaml:1 version: the config file format",
        ),
        (
            "version: 1\nsite: {id: s}\ngateway: {id: g}\nbroker:\n  url: mqtt://b\n  password: hunter2\n",
            "c.yaml:6 broker.password: a secret is never sent inline",
        ),
        (
            "version: 1\nsite: {}\ngateway: {}\nbroker: {}\ndevices:\n  - id: d\n    driver:\n      scbk: 00112233\n",
            "c.yaml:8 devices[0].driver.scbk: a secret is never sent inline",
        ),
        ("version: 1\nsite: [\n", "c.yaml:3: not valid YAML"),
    ],
)
def test_a_bad_config_file_is_refused_with_file_line_and_path(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config_file(_write(tmp_path / "c.yaml", text))
    shown = [str(p).replace(str(tmp_path) + "/", "") for p in info.value.problems]
    assert any(s.startswith(expected) for s in shown), shown


def test_a_huge_config_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(b"#" * (300 * 1024))
    with pytest.raises(ConfigError, match="over 256 KiB"):
        load_config_file(path)


def test_the_desired_document_is_signed_for_its_gateway_only() -> None:
    key = Ed25519PrivateKey.generate()
    me, other = Identity("site-a", "gw-1"), Identity("site-a", "gw-2")
    doc = desired_for(me, CONFIG, version=4, key=key, signed_by="ops-ann")
    assert list(validator("config-desired").iter_errors(doc)) == []
    assert doc["config"]["site"]["id"] == "site-a" and doc["config"]["gateway"]["id"] == "gw-1"
    assert doc["version"] == 4 and doc["signed_by"] == "ops-ann"
    verify_config(me, [key.public_key()], doc)
    with pytest.raises(SignatureError):
        verify_config(other, [key.public_key()], doc)
    assert CONFIG["site"] == {"id": "placeholder"}  # the template is not changed


def test_selectors() -> None:
    sel = Selector.parse(["site-a/*", "site-b/gw-9"])
    assert sel.matches("site-a", "gw-1") and sel.matches("site-b", "gw-9")
    assert not sel.matches("site-b", "gw-1")
    assert sel.exact() == [Identity("site-b", "gw-9")]
    for bad in (["site-a"], ["a/b/c"], ["/gw"], []):
        with pytest.raises(ValueError):
            Selector.parse(bad)


# ---- the audit trail ---------------------------------------------------------------------


def test_audit_trail_on_each_store(db_target: str) -> None:
    store = AuditStore(db_target)
    try:
        assert store.last_pushed_version("s", "g") == 0
        store.record(AuditRow(1.0, "pushed", "s", "g", 3, "published", "ann", "ab" * 8, "0" * 64))
        store.record(AuditRow(2.0, "pushed", "s", "h", 9, "published", "ann"))
        event = AuditRow(3.0, "event", "s", "g", 3, "applied", "ann", msg_id="m-1")
        assert store.record(event) is True
        assert store.record(event) is False  # the same event seen twice is stored once
        assert store.last_pushed_version("s", "g") == 3
        rows = store.rows(gateway="g")
        assert [(r.origin, r.result) for r in rows] == [
            ("event", "applied"),
            ("pushed", "published"),
        ]
    finally:
        store.close()
    assert [r.gateway for r in audit_trail(db_target, Selector.parse(["s/h"]))] == ["h"]


# ---- against a broker --------------------------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Ed25519PrivateKey]:
    private, _public, _kid = generate_key(tmp_path / "keys", "ops")
    return private, load_private_key(private)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}/v1"


@contextlib.contextmanager
def _gateways(
    broker: Mosquitto, prefix: str, key: Ed25519PrivateKey, names: list[str], **answers: Any
) -> Iterator[dict[str, ScriptedGateway]]:
    gws = {
        n: ScriptedGateway(
            broker.port,
            prefix,
            Identity("site-a", n),
            key.public_key(),
            *([answers[n]] if n in answers else []),
        ).start()
        for n in names
    }
    try:
        yield gws
    finally:
        for g in gws.values():
            g.stop()


def _rolls_back(_doc: dict[str, Any]) -> tuple[ConfigResult, str]:
    return ConfigResult.ROLLED_BACK, "did not reach the broker within 5 s"


@contextlib.contextmanager
def _update_gateways(
    broker: Mosquitto, prefix: str, key: Ed25519PrivateKey, ends: dict[str, str]
) -> Iterator[dict[str, ScriptedGateway]]:
    """Scripted gateways whose update command ends as `ends` says."""
    gws = {
        name: ScriptedGateway(
            broker.port, prefix, Identity("site-a", name), key.public_key(), update=end
        ).start()
        for name, end in ends.items()
    }
    try:
        yield gws
    finally:
        for g in gws.values():
            g.stop()


@pytest.mark.broker
def test_list_shows_status_versions_config_outbox_and_last_seen(
    broker: Mosquitto, prefix: str, keys: tuple[Path, Ed25519PrivateKey]
) -> None:
    settings = BrokerSettings(broker.url, prefix)
    with _gateways(broker, prefix, keys[1], ["gw-1", "gw-2"]) as gws:
        # Junk under the prefix is ignored: bad JSON, a document naming another gateway.
        gws["gw-1"].client.publish(f"{prefix}/site-a/gw-3/status", b"{", retain=True)
        lying = health_document(Identity("site-a", "gw-9"), 1)
        gws["gw-1"].client.publish(f"{prefix}/site-a/gw-1/health", json.dumps(lying).encode())
        wrong = health_document(Identity("site-a", "gw-1"), 1)
        wrong["outbox"]["depth"] = "deep"
        gws["gw-1"].client.publish(f"{prefix}/site-a/gw-1/health", json.dumps(wrong).encode())
        stop = threading.Event()

        def heartbeat() -> None:
            while not stop.wait(0.2):
                for g in gws.values():
                    g.health()

        beat = threading.Thread(target=heartbeat)
        beat.start()
        try:
            views = Fleet(settings).gateways(listen_s=1.0)
        finally:
            stop.set()
            beat.join()
        assert [v.key for v in views] == ["site-a/gw-1", "site-a/gw-2"]
        for v in views:
            assert (v.state, v.software, v.config_version, v.config_result) == (
                "online",
                "1.2.3",
                0,
                "applied",
            )
            assert v.outbox_depth == 7 and v.last_seen is not None


@pytest.mark.broker
def test_push_signs_publishes_retained_and_reports_each_gateway(
    broker: Mosquitto, prefix: str, keys: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    db = tmp_path / "fleet.db"
    fleet = Fleet(BrokerSettings(broker.url, prefix), db, settle_s=0.5)
    with _gateways(broker, prefix, keys[1], ["gw-1", "gw-2"], **{"gw-2": _rolls_back}) as gws:
        outcomes = fleet.push(Selector.parse(["site-a/*"]), CONFIG, keys[1], "ops-ann", wait_s=10)
        assert [(o.gateway, o.version, o.result) for o in outcomes] == [
            ("gw-1", 1, "applied"),
            ("gw-2", 1, "rolled_back"),
        ]
        assert "within 5 s" in outcomes[1].reason
        # Next push: one above everything reported or pushed, also for the rolled-back one.
        again = fleet.push(Selector.parse(["site-a/*"]), CONFIG, keys[1], "ops-ann", wait_s=10)
        assert [o.version for o in again] == [2, 2]
        assert [d["version"] for d in gws["gw-2"].received] == [1, 2]
    rows = audit_trail(db, Selector.parse(["site-a/gw-2"]))
    assert {(r.origin, r.version, r.result) for r in rows} >= {
        ("pushed", 1, "published"),
        ("reported", 1, "rolled_back"),
    }
    assert all(r.signed_by == "ops-ann" for r in rows if r.origin == "pushed")


@pytest.mark.broker
def test_a_gateway_that_never_answers_is_no_answer_not_success(
    broker: Mosquitto, prefix: str, keys: tuple[Path, Ed25519PrivateKey]
) -> None:
    fleet = Fleet(BrokerSettings(broker.url, prefix), settle_s=0.3)
    [outcome] = fleet.push(Selector.parse(["site-a/gw-away"]), CONFIG, keys[1], "ops", wait_s=1)
    assert outcome.result == "no_answer" and not outcome.ok
    assert "never seen" in outcome.reason


@pytest.mark.broker
def test_rollout_stops_at_the_first_failed_canary(
    broker: Mosquitto, prefix: str, keys: tuple[Path, Ed25519PrivateKey]
) -> None:
    fleet = Fleet(BrokerSettings(broker.url, prefix), settle_s=0.5)
    names = [f"gw-{i}" for i in range(1, 6)]
    with _gateways(broker, prefix, keys[1], names, **{"gw-3": _rolls_back}) as gws:
        report = fleet.rollout(
            Selector.parse(["site-a/*"]), CONFIG, keys[1], "ops", canary=1, batch=2, wait_s=10
        )
        assert [[o.gateway for o in w] for w in report.waves] == [["gw-1"], ["gw-2", "gw-3"]]
        assert report.stopped_by is not None and report.stopped_by.gateway == "gw-3"
        assert report.not_pushed == ["site-a/gw-4", "site-a/gw-5"]
        assert gws["gw-4"].received == [] and gws["gw-5"].received == []


@pytest.mark.broker
def test_the_cli_pushes_with_a_key_file_and_prints_one_line_per_gateway(
    broker: Mosquitto, prefix: str, keys: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    config = _write(tmp_path / "site.yaml", CONFIG)
    base = [CENTRAL, "fleet"]
    common = ["--broker", broker.url, "--prefix", prefix]
    with _gateways(broker, prefix, keys[1], ["gw-1"]):
        done = subprocess.run(
            [*base, "push", str(config), "site-a/gw-1", "--key", str(keys[0]),
             "--signed-by", "ops-ann", "--wait", "10", "--db", str(tmp_path / "a.db"), *common],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("site-a/gw-1: version 1 applied in ")
        listed = subprocess.run(
            [*base, "list", "--json", "--listen", "0.5", *common],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(listed.stdout)["config_version"] == 1
    audit = subprocess.run(
        [*base, "audit", "--db", str(tmp_path / "a.db")], capture_output=True, text=True, timeout=60
    )
    assert "pushed" in audit.stdout and "ops-ann" in audit.stdout
    # An inline secret: refused before anything is published, with file and line.
    bad = _write(tmp_path / "bad.yaml", {**CONFIG, "broker": {"url": "mqtt://b", "password": "x"}})
    done = subprocess.run(
        [*base, "push", str(bad), "site-a/gw-1", "--key", str(keys[0]), "--signed-by", "o", *common],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "bad.yaml:8 broker.password" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.broker
def test_watch_records_each_gateway_audit_event_once(
    broker: Mosquitto, prefix: str, keys: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    db = tmp_path / "audit.db"
    watcher = Fleet(BrokerSettings(broker.url, prefix), db)
    pusher = Fleet(BrokerSettings(broker.url, prefix), settle_s=0.3)
    stop, ready = threading.Event(), threading.Event()
    seen: list[AuditRow] = []
    thread = threading.Thread(target=lambda: watcher.watch(stop, on_row=seen.append, ready=ready))
    thread.start()
    try:
        with _gateways(broker, prefix, keys[1], ["gw-1"], **{"gw-1": _rolls_back}):
            assert ready.wait(10)
            pusher.push(Selector.parse(["site-a/gw-1"]), CONFIG, keys[1], "ops-li", wait_s=10)
            assert wait_for(lambda: len(seen) == 1, 10), seen
    finally:
        stop.set()
        thread.join(10)
    [row] = audit_trail(db)
    assert (row.origin, row.version, row.result, row.signed_by) == (
        "event",
        1,
        "rolled_back",
        "ops-li",
    )
    assert row.key_id == key_id(keys[1].public_key())


def test_an_unreachable_broker_is_one_line_not_a_traceback() -> None:
    done = subprocess.run(
        [CENTRAL, "fleet", "list", "--broker", f"mqtt://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("Error: cannot reach the broker mqtt://127.0.0.1:")
    assert "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1


@pytest.mark.broker
def test_an_update_rolls_out_in_waves_and_stops_at_the_first_that_does_not_commit(
    broker: Mosquitto, prefix: str, keys: tuple[Path, Ed25519PrivateKey], tmp_path: Path
) -> None:
    from community_central.fleet.update import roll_update
    from community_central.signing import CommandSigner

    fleet = Fleet(BrokerSettings(broker.url, prefix), tmp_path / "audit.db", settle_s=0.5)
    manifest = {"kind": "community-gateway.update", "version": "2.0.0", "auth": {"key_id": "x"}}
    ends = {"gw-1": "committed", "gw-2": "committed", "gw-3": "rolled_back", "gw-4": "committed"}
    with _update_gateways(broker, prefix, keys[1], ends) as gws:
        signer = CommandSigner(keys[1])
        report = roll_update(
            fleet, Selector.parse(["site-a/*"]), manifest, "https://releases.example/2.0.0.tar.gz",
            signer=signer, canary=1, batch=2, wait_s=10,
        )  # fmt: skip
        assert [[(o.gateway, o.result) for o in w] for w in report.waves] == [
            [("gw-1", "committed")],
            [("gw-2", "committed"), ("gw-3", "rolled_back")],
        ]
        assert report.stopped_by is not None and "health gate" in report.stopped_by.reason
        assert report.not_pushed == ["site-a/gw-4"] and gws["gw-4"].commands == []
        # The command as the gateway got it: the manifest untouched, the URL, signed.
        sent = gws["gw-1"].commands[0]
        assert sent["manifest"] == manifest and sent["url"].endswith("2.0.0.tar.gz")
        assert sent["auth"]["key_id"] == signer.key_id and "expires" in sent
    trail = audit_trail(tmp_path / "audit.db", Selector.parse(["site-a/gw-3"]))
    assert {(r.origin, r.result, r.release) for r in trail} >= {
        ("pushed", "update sent", "2.0.0"),
        ("reported", "rolled_back", "2.0.0"),
    }


@pytest.mark.broker
def test_an_update_a_gateway_refuses_stops_the_rollout_with_its_reason(
    broker: Mosquitto, prefix: str, keys: tuple[Path, Ed25519PrivateKey]
) -> None:
    from community_central.fleet.update import roll_update

    fleet = Fleet(BrokerSettings(broker.url, prefix), settle_s=0.5)
    with _update_gateways(broker, prefix, keys[1], {"gw-1": "refused", "gw-2": "committed"}):
        report = roll_update(
            fleet, Selector.parse(["site-a/*"]), {"version": "2.0.0"}, "https://r.example/b",
            wait_s=10,
        )  # fmt: skip
    assert report.stopped_by is not None
    assert (report.stopped_by.gateway, report.stopped_by.result) == ("gw-1", "refused")
    assert "signature does not verify" in report.stopped_by.reason
    assert report.not_pushed == ["site-a/gw-2"]


def test_an_audit_database_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = subprocess.run(
        [CENTRAL, "fleet", "audit", "--db", str(blocker / "audit.db")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"Error: {blocker / 'audit.db'}: ")
    assert len(done.stderr.splitlines()) == 1
