"""Software updates end to end: real bundles of this tree, the launcher restarted as systemd would, a real broker.

Two bundles of this checkout, once per session: A made by scripts/bundle (the one the
install tests use too; tests/bundles.py builds it once per run), and B, a copy of the
tree with another version number, derived from A with its own gateway wheel
(tests/bundles.py, `derive_bundle`).  A is installed as the
"factory" venv; each test then runs the launcher (gateway/fleet/launch.py) under a
small stand-in for systemd's Restart=always and sends `cmd/update` for B:

- B passes its health gate and is committed;
- B crash-loops (its program is broken after it was installed): the launcher switches
  back to A after `update_max_starts` starts, before importing B again;
- B cannot reach the broker within `update_trial_s`: B switches back itself; A then
  opens the outbox and alarm databases B wrote and delivers everything, no seq lost.

And B delivered over MQTT in chunks (community_protocol.chunks) instead of a URL:

- sent by the fleet's own `roll_update(..., bundle=...)`: installed and committed;
- a chunk damaged on the way (the others redelivered and out of order): its block's
  hash in the signed manifest fails, that block alone is asked for again, and the
  transfer then completes (a manifest without block hashes: tests/test_update_chunks.py);
- an announce whose manifest is not signed: refused with the reason, no transfer
  opened, chunks that follow dropped;
- half the chunks, then SIGTERM and a new start: the same announce resumes with the
  chunks kept on disk, a second transfer is refused meanwhile, and B commits.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import paho.mqtt.publish as publish
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from community_protocol.chunks import Transfer, chunk_count, encode_chunk
from community_protocol.ed25519 import generate_key, load_private_key, sign_update
from community_protocol.topics import CommandPath
from gateway.fleet import launch
from gateway.fleet.update import check_manifest
from gateway.fleet.update_install import Layout, install_release
from gateway.storage.outbox_sql import SCHEMA_VERSION
from tests.bundles import derive_bundle, own_copy, shared_bundle, tree_files
from tests.harness import Received, Subscriber, simulated_meter, topic_base, write_config
from tests.peers import Mosquitto, wait_for
from tests.test_commands import Requester

# One worker builds the bundles once for all of them (./scripts/test: --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.xdist_group("update-bundles")]

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = Path(launch.__file__)
A = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
B = A + ".post1"


@dataclass(frozen=True)
class Release:
    bundle: Path
    manifest: dict[str, Any]


@dataclass(frozen=True)
class Kit:
    key: Path
    public: Path
    a: Release
    b: Release
    factory: Path


def manifest_for(bundle: Path, key: Path) -> dict[str, Any]:
    made = subprocess.run(
        [sys.executable, str(ROOT / "scripts/update-manifest"), str(bundle), "--key", str(key)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert made.stdout.startswith("update-manifest: wrote"), made.stdout
    doc: dict[str, Any] = json.loads(Path(f"{bundle}.manifest.json").read_text())
    return doc


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    """Bundles A and B of this tree, their manifests, and A installed as the factory venv."""
    top = tmp_path_factory.mktemp("update-kit")
    key, public, _ = generate_key(top / "keys", "update")
    tree_b = top / "tree-b"
    for name in tree_files(ROOT):
        (tree_b / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree_b / name)
    pyproject = tree_b / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'version = "{A}"', f'version = "{B}"', 1))
    bundle_a = own_copy(shared_bundle(tmp_path_factory), top / "a")  # manifests go beside it
    bundle_b = derive_bundle(bundle_a, tree_b, top / "b")
    a = Release(bundle_a, manifest_for(bundle_a, key))
    b = Release(bundle_b, manifest_for(bundle_b, key))
    pub = load_private_key(key).public_key()
    factory = install_release(
        Layout(top / "factory", top / "none"),
        check_manifest(a.manifest, [pub]),
        bundle_a,
        getattr(sys, "_base_executable", sys.executable),
    )
    return Kit(key, public, a, b, factory)


@dataclass
class Systemd:
    """Restart=always for the launcher: starts it again whenever it exits, unless held."""

    state: Path
    factory: Path
    config: Path
    exits: list[int] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Systemd:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        cmd = [sys.executable, "-I", str(LAUNCH), "--state", str(self.state)]
        cmd += [
            "--factory",
            str(self.factory),
            "--log-level",
            "info",
            "run",
            "-c",
            str(self.config),
        ]
        for _ in range(20):  # bounded: a runaway loop ends the test, not the machine
            while self.hold.is_set() and not self.stopping.is_set():
                self.stopping.wait(0.05)
            if self.stopping.is_set():
                return
            with open(self.config.parent / "gateway.log", "ab") as log:
                self.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
                self.exits.append(self.proc.wait())

    def stop(self) -> None:
        self.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        self._thread.join(30)

    def log(self) -> str:
        return (self.config.parent / "gateway.log").read_text(errors="replace")


@dataclass
class Site:
    kit: Kit
    config: Path
    base: str
    events: Subscriber
    service: Systemd
    req: Requester

    def updates(self) -> list[dict[str, Any]]:
        out = []
        for m in self.events.matching("/events"):
            event = m.json()["event"]
            if event["type"] == "gateway.update":
                out.append(event["data"])
        return out

    def wait_update(self, result: str, timeout: float) -> dict[str, Any]:
        assert self.events.wait(
            lambda _: any(u["result"] == result for u in self.updates()), timeout
        ), f"no {result} event: {self.updates()}\n{self.service.log()[-4000:]}"
        return next(u for u in self.updates() if u["result"] == result)

    def running(self) -> str | None:
        healths = self.events.matching("/health")
        return healths[-1].json().get("update", {}).get("version") if healths else None

    def update_to(self, release: Release) -> dict[str, Any]:
        body = {"manifest": release.manifest, "url": release.bundle.as_uri()}
        return self.req.ask(f"{self.base}/cmd/update", json.dumps(body).encode(), timeout=30)

    def state(self) -> dict[str, Any]:
        return launch.read_state(self.config.parent / "state")


@pytest.fixture
def site(tmp_path: Path, kit: Kit, broker: Mosquitto) -> Iterator[Site]:
    config = write_config(
        tmp_path / "gw" / "gw.yaml",
        broker.url,
        [simulated_meter("m1", 5)],
        security={"update_keys": [str(kit.public)], "update_trial_s": 15},
    )
    base = topic_base(config)
    events = Subscriber(broker.port, f"{base}/#").start()
    service = Systemd(config.parent / "state", kit.factory, config).start()
    req = Requester(broker.port)
    s = Site(kit, config, base, events, service, req)
    assert wait_for(lambda: s.running() == A, 60), service.log()[-4000:]
    yield s
    req.close()
    service.stop()
    events.stop()


def seqs(received: list[Received]) -> list[int]:
    out = []
    for m in received:
        if m.topic.endswith(("/telemetry", "/events")):
            out.append(int(m.json()["seq"]))
    return sorted(set(out))


def test_an_update_that_passes_its_health_gate_is_committed(site: Site) -> None:
    # First B as if it migrated the outbox to a schema A cannot read: refused at once.
    schemas = {**site.kit.b.manifest["schemas"], "outbox": {"min": 0, "max": SCHEMA_VERSION + 1}}
    newer = sign_update(load_private_key(site.kit.key), {**site.kit.b.manifest, "schemas": schemas})
    body = {"manifest": newer, "url": site.kit.b.bundle.as_uri()}
    refused = site.req.ask(f"{site.base}/cmd/update", json.dumps(body).encode())
    assert refused["status"] == "refused", refused
    assert f"which this version (schema {SCHEMA_VERSION}) cannot read" in refused["error"]
    assert site.wait_update("refused", 10)["version"] == B
    assert not (site.config.parent / "state" / "releases").exists()
    # Then B as built.
    reply = site.update_to(site.kit.b)
    assert reply["ok"] and reply["status"] == "accepted", reply
    assert site.wait_update("switched", 300)["key_id"] == site.kit.b.manifest["auth"]["key_id"]
    site.wait_update("committed", 120)
    assert wait_for(lambda: site.running() == B, 30)
    state = site.state()
    assert state["trial"] is None and state["last"]["result"] == "committed"
    current = os.readlink(site.config.parent / "state" / "current")
    assert current.endswith(f"releases/{B}/venv")
    # The same version again is refused at once, with the reason.
    again = site.update_to(site.kit.b)
    assert not again["ok"] and f"version {B} runs already" in again["error"]


def test_a_crash_looping_release_is_switched_back_by_the_launcher(site: Site) -> None:
    site.service.hold.set()  # systemd waits while the test breaks B after its install
    assert site.update_to(site.kit.b)["ok"]
    site.wait_update("switched", 300)
    assert wait_for(lambda: len(site.service.exits) == 1, 60)
    venv = site.config.parent / "state" / "releases" / B / "venv"
    (runtime,) = venv.glob("lib/python*/site-packages/gateway/process/runtime.py")
    runtime.write_text("raise SystemExit('a release that crashes on start')\n")
    site.service.hold.clear()
    event = site.wait_update("rolled_back", 120)
    assert "started 2 times" in event["reason"] and event["version"] == B
    assert site.service.exits[1:3] == [1, 1], site.service.log()[-4000:]
    assert wait_for(lambda: site.running() == A, 30)
    assert site.state()["last"]["result"] == "rolled_back"


def test_a_release_that_cannot_reach_the_broker_switches_back_and_nothing_is_lost(
    site: Site, broker: Mosquitto
) -> None:
    site.service.hold.set()
    assert site.update_to(site.kit.b)["ok"]
    site.wait_update("switched", 300)
    assert wait_for(lambda: len(site.service.exits) == 1, 60)
    broker.stop()
    site.service.hold.clear()
    # B runs without a broker, keeps its meter's readings in the outbox, gives up after
    # update_trial_s, switches back and stops; then A starts on B's databases.
    assert wait_for(lambda: (site.state().get("last") or {}).get("result") == "rolled_back", 90), (
        site.service.log()[-4000:]
    )
    broker.start()
    event = site.wait_update("rolled_back", 60)
    assert "failed its health gate within 15 s" in event["reason"]
    assert wait_for(lambda: site.running() == A, 30)
    # Every reading and event, A's, B's offline ones and A's again: no seq missing.
    # Some may still be on their way when newer ones are in (a run under stress-ng had
    # 227 and later but not yet 185-226, 1.6 s after A connected), so every seq up to
    # the newest is waited for, bounded, as test_delivery's assert_nothing_lost does.
    stamp = seqs(site.events.snapshot())
    assert site.events.wait(lambda ms: len(seqs(ms)) > len(stamp) + 10, 30)

    def whole(ms: list[Received]) -> bool:
        got = seqs(ms)
        return got == list(range(got[0], got[-1] + 1))

    assert site.events.wait(whole, 30), f"a seq is missing: {seqs(site.events.snapshot())}"
    assert "alarm database" not in site.service.log()  # A opened B's files without a word


# ---- the bundle delivered over MQTT in chunks (docs/fleet.md, "Updates over MQTT") ------


def _announce(site: Site, manifest: dict[str, Any], transfer: Transfer) -> dict[str, Any]:
    body = {"manifest": manifest, "transfer": transfer.as_dict()}
    return site.req.ask(f"{site.base}/cmd/update", json.dumps(body).encode(), timeout=30)


def _transfer(bundle: Path, chunk_size: int = 64 * 1024) -> tuple[bytes, Transfer]:
    data = bundle.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    count = chunk_count(len(data), chunk_size)
    return data, Transfer(uuid.uuid4().hex, len(data), digest, chunk_size, count)


def _staging(site: Site) -> Path:
    return site.config.parent / "state" / "update" / "transfer"


def test_an_update_sent_over_mqtt_in_chunks_installs_and_commits(
    site: Site, broker: Mosquitto
) -> None:
    from community_central.broker import BrokerSettings
    from community_central.fleet import Fleet, Selector
    from community_central.fleet.update import roll_update

    prefix, ident = site.base.rsplit("/", 2)[0], site.base.split("/")[-2:]
    fleet = Fleet(BrokerSettings(broker.url, prefix), settle_s=0.5)
    # Small chunks, so that the bundle takes hundreds of them (out of the broker's
    # order nothing is guaranteed across a resend; the gateway places each by index).
    started = time.monotonic()
    report = roll_update(
        fleet, Selector.parse(["/".join(ident)]), site.kit.b.manifest, None,
        bundle=site.kit.b.bundle, chunk_size=16 * 1024, wait_s=400,
    )  # fmt: skip
    took = time.monotonic() - started
    [[outcome]] = report.waves
    assert outcome.result == "committed", (outcome, site.service.log()[-4000:])
    assert wait_for(lambda: site.running() == B, 30)
    assert not _staging(site).exists()  # handed to the install, then deleted
    size = site.kit.b.bundle.stat().st_size
    print(
        f"\nover MQTT: {size} bytes in {chunk_count(size, 16 * 1024)} chunks, committed in {took:.1f} s"
    )


def test_a_damaged_chunk_costs_its_block_which_is_asked_for_again(
    site: Site, broker: Mosquitto
) -> None:
    data, transfer = _transfer(site.kit.b.bundle)
    per_block = site.kit.b.manifest["archive"]["blocks"]["size"] // transfer.chunk_size
    reply = _announce(site, site.kit.b.manifest, transfer)
    assert reply["ok"] and reply["result"]["missing"] == [[0, transfer.chunks - 1]], reply
    # Redelivered and out of order: chunk 0 twice, the rest backwards; one byte of
    # chunk 2 flipped on the way (or a forged chunk 2 that came before the real one).
    order = [0, *reversed(range(transfer.chunks)), 0]
    _publish_chunks(broker.port, site.base, data, transfer, order, damaged=2)

    def lacking() -> list[int]:
        reply = _announce(site, site.kit.b.manifest, transfer)
        ranges = reply["result"]["missing"] if reply["ok"] else [[-1, -1]]
        return [i for first, last in ranges for i in range(first, last + 1)]

    # Once every chunk is in, only the damaged chunk's block is asked for again.
    assert wait_for(lambda: 2 in (got := lacking()) and max(got) < per_block, 60), lacking()
    assert "block 0 (chunks 0-" in site.service.log()
    assert not any(u["result"] == "refused" for u in site.updates()), site.updates()
    assert not (site.config.parent / "state" / "releases").exists()
    # Sent again as it should be: the transfer completes and B is installed.
    _deliver(site, broker.port, data, transfer, [])
    site.wait_update("switched", 300)


def test_an_unsigned_announce_is_ignored_with_its_reason(site: Site, broker: Mosquitto) -> None:
    unsigned = {k: v for k, v in site.kit.b.manifest.items() if k != "auth"}
    data, transfer = _transfer(site.kit.b.bundle)
    reply = _announce(site, unsigned, transfer)
    assert not reply["ok"] and reply["status"] == "refused", reply
    assert "manifest" in reply["error"] and "sign" in reply["error"], reply
    assert site.wait_update("refused", 10)["version"] == B
    assert not _staging(site).exists()
    # Chunks that follow open nothing: they are dropped and counted, nothing is written.
    for index in range(3):
        offset, length = transfer.span(index)
        publish.single(
            f"{site.base}/cmd/{CommandPath.UPDATE_CHUNK}",
            encode_chunk(transfer.id, index, data[offset : offset + length]),
            qos=1, hostname="127.0.0.1", port=broker.port,
        )  # fmt: skip
    assert not _staging(site).exists() and site.running() == A
    healths = site.events.matching("/health")
    assert healths[-1].json()["update"]["transfer"] is None


def _publish_chunks(
    port: int,
    base: str,
    data: bytes,
    transfer: Transfer,
    indexes: Any,
    *,
    damaged: int | None = None,
) -> None:
    """Publish chunks as the platform does (QoS 1, each confirmed); one byte of `damaged` flipped."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for index in indexes:
            offset, length = transfer.span(index)
            chunk = bytearray(data[offset : offset + length])
            if index == damaged:
                chunk[100] ^= 0x01
            payload = encode_chunk(transfer.id, index, bytes(chunk))
            client.publish(
                f"{base}/cmd/{CommandPath.UPDATE_CHUNK}", payload, qos=1
            ).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def _deliver(
    site: Site,
    port: int,
    data: bytes,
    transfer: Transfer,
    indexes: Any,
    *,
    damaged: int | None = None,
) -> None:
    """Send `indexes`, then what the gateway still lacks, as the platform does, until
    it lacks nothing (a chunk dropped on a full queue, or in flight when the gateway
    stopped, is asked for again) or it has judged the bundle (a new `refused` event:
    one from before, e.g. of a second transfer refused meanwhile, judges nothing)."""
    refused = lambda: sum(u["result"] == "refused" for u in site.updates())  # noqa: E731
    before = refused()
    _publish_chunks(port, site.base, data, transfer, indexes, damaged=damaged)
    for _ in range(20):
        if refused() > before:
            return
        reply = _announce(site, site.kit.b.manifest, transfer)
        missing = reply["result"]["missing"] if reply["ok"] else []
        if not missing:
            return
        again = [i for first, last in missing for i in range(first, last + 1)]
        _publish_chunks(port, site.base, data, transfer, again, damaged=damaged)
    raise AssertionError("the gateway still lacks chunks after 20 rounds")


def _transfer_health(site: Site) -> dict[str, Any] | None:
    healths = site.events.matching("/health")
    part: dict[str, Any] | None = healths[-1].json()["update"].get("transfer") if healths else None
    return part


def test_a_transfer_resumes_after_a_restart_of_the_gateway(site: Site, broker: Mosquitto) -> None:
    data, transfer = _transfer(site.kit.b.bundle)
    assert _announce(site, site.kit.b.manifest, transfer)["ok"]
    half = transfer.chunks // 2
    _publish_chunks(broker.port, site.base, data, transfer, range(half))
    received = lambda: (_transfer_health(site) or {}).get("received", 0)  # noqa: E731
    assert wait_for(lambda: received() > 0, 15)
    # Stopped as systemd stops it (SIGTERM), and started again by Restart=always.
    proc = site.service.proc
    assert proc is not None
    proc.terminate()
    assert wait_for(lambda: len(site.service.exits) == 1, 30)
    assert wait_for(
        lambda: site.service.proc is not proc and "resuming the transfer" in site.service.log(), 60
    )
    # What it had is still there; it asks only for the rest.
    kept = received()
    reply = _announce(site, site.kit.b.manifest, transfer)
    assert reply["ok"] and reply["result"]["received"] >= kept > 0, reply
    first, last = reply["result"]["missing"][-1]
    assert first <= half and last == transfer.chunks - 1, reply
    # A second transfer is refused while this one is open, saying which runs.
    _, other = _transfer(site.kit.b.bundle)
    refused = _announce(site, site.kit.b.manifest, other)
    assert not refused["ok"] and f"the transfer {transfer.id}" in refused["error"], refused
    site.wait_update("refused", 30)
    # Chunk `half` is left out, as chunks in flight at the stop are lost: the platform
    # learns it from the next announce's `missing` and sends it again.
    _deliver(site, broker.port, data, transfer, range(half + 1, transfer.chunks))
    # Announced again while it installs (a platform that missed the last answer): the
    # same update is in progress with nothing missing, not refused as a second one.
    assert wait_for(lambda: f"installing version {B}" in site.service.log(), 60)
    again = _announce(site, site.kit.b.manifest, transfer)
    assert again["ok"] and again["result"]["missing"] == [], (again, site.service.log()[-3000:])
    assert again["result"]["installing"] is True, again
    site.wait_update("committed", 300)
    assert wait_for(lambda: site.running() == B, 30)
