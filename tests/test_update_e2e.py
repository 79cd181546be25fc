"""Software updates end to end: real bundles of this tree, the launcher restarted as systemd would, a real broker.

Two bundles of this checkout are made by scripts/bundle (versions A and B: B is a copy
of the tree with another version number), once per session.  A is installed as the
"factory" venv; each test then runs the launcher (gateway/fleet/launch.py) under a
small stand-in for systemd's Restart=always and sends `cmd/update` for B:

- B passes its health gate and is committed;
- B crash-loops (its program is broken after it was installed): the launcher switches
  back to A after `update_max_starts` starts, before importing B again;
- B cannot reach the broker within `update_trial_s`: B switches back itself; A then
  opens the outbox and alarm databases B wrote and delivers everything, no seq lost.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from community_protocol.ed25519 import generate_key, load_private_key, sign_update
from gateway.fleet import launch
from gateway.fleet.update import check_manifest
from gateway.fleet.update_install import Layout, install_release
from gateway.storage.outbox_sql import SCHEMA_VERSION
from tests.harness import Received, Subscriber, simulated_meter, topic_base, write_config
from tests.peers import Mosquitto, wait_for
from tests.test_commands import Requester
from tests.test_install_script import make_bundle

# One worker builds the bundles once for all three (./scripts/test: --dist loadgroup).
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
    bundle_a = make_bundle(top / "a")
    tree_b = top / "tree-b"
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (tree_b / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree_b / name)
    pyproject = tree_b / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace(f'version = "{A}"', f'version = "{B}"', 1))
    bundle_b = make_bundle(top / "b", tree_b)
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
    stamp = seqs(site.events.snapshot())
    assert site.events.wait(lambda ms: len(seqs(ms)) > len(stamp) + 10, 30)
    got = seqs(site.events.snapshot())
    assert got == list(range(got[0], got[-1] + 1)), "a seq is missing"
    assert "alarm database" not in site.service.log()  # A opened B's files without a word
