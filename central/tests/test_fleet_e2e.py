"""`community-central fleet` against real `gateway run` processes and a real Mosquitto.

Three gateways of one site run from config files that differ only in their gateway
id, and trust one configuration key.  A push of one template applies on each (its
ids filled in per gateway); a rollout whose config loses the broker stops at the
canary, which rolls itself back, and never reaches the other gateways.
"""

from __future__ import annotations

import copy
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from community_central.broker import BrokerSettings
from community_central.fleet import Fleet, Selector
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from central.tests.tickets_harness import CENTRAL
from community_protocol.ed25519 import generate_key, load_private_key
from tests.harness import GatewayProc, simulated_meter
from tests.peers import Mosquitto, free_port, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]

TRIAL_S = 5  # the shortest trial a gateway config allows
NAMES = ("gw-1", "gw-2", "gw-3")


@dataclass
class Site:
    prefix: str
    template: dict[str, Any]
    key_file: Path
    key: Ed25519PrivateKey
    gateways: dict[str, GatewayProc]
    fleet: Fleet

    def config_of(self, name: str) -> dict[str, Any]:
        doc: dict[str, Any] = yaml.safe_load(self.gateways[name].config.read_text())
        return doc


@pytest.fixture
def site(tmp_path: Path, broker: Mosquitto) -> Iterator[Site]:
    private, public, _ = generate_key(tmp_path / "keys", "ops")
    prefix = f"t{uuid.uuid4().hex[:8]}/v1"
    template: dict[str, Any] = {
        "version": 1,
        "site": {"id": "site-a"},
        "gateway": {"id": "placeholder"},
        "broker": {"url": broker.url, "topic_prefix": prefix},
        # Relative: each gateway's outbox beside its own config file.
        "outbox": {"path": "outbox.db", "commit_interval_ms": 20},
        "clock": {"check": "trust"},
        "health": {"interval_s": 1},
        "security": {"config_keys": [str(public)], "config_trial_s": TRIAL_S},
        "devices": [simulated_meter("m1", 5)],
    }
    gateways = {}
    for name in NAMES:
        doc = copy.deepcopy(template)
        doc["gateway"]["id"] = name
        path = tmp_path / name / "gateway.yaml"
        path.parent.mkdir()
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        gateways[name] = GatewayProc(path).start()
    fleet = Fleet(BrokerSettings(broker.url, prefix), tmp_path / "fleet.db")
    try:
        every = Selector.parse(["site-a/*"])

        def all_reported() -> bool:
            views = fleet.gateways(every, listen_s=0.3)
            return [v.config_result for v in views] == ["applied"] * len(NAMES)

        assert wait_for(all_reported, 30), {n: g.log()[-1500:] for n, g in gateways.items()}
        yield Site(prefix, template, private, load_private_key(private), gateways, fleet)
    finally:
        for g in gateways.values():
            if g.running():
                g.terminate()


def test_a_push_to_every_gateway_of_a_site_is_applied_by_each(site: Site, tmp_path: Path) -> None:
    wanted = copy.deepcopy(site.template)
    wanted["health"] = {"interval_s": 2}
    config = tmp_path / "site-a.yaml"
    config.write_text(yaml.safe_dump(wanted, sort_keys=False))
    done = subprocess.run(
        [CENTRAL, "fleet", "push", str(config), "site-a/*", "--key", str(site.key_file),
         "--signed-by", "ops-ann", "--wait", "60", "--db", str(tmp_path / "fleet.db"),
         "--broker", site.fleet.broker.url, "--prefix", site.prefix],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"site-a/{n}" for n in NAMES]
    assert all("version 1 applied" in line for line in lines), lines
    for name in NAMES:
        running = site.config_of(name)
        assert running["health"] == {"interval_s": 2}
        assert running["gateway"]["id"] == name  # each got its own identity
        assert site.gateways[name].running()
    views = site.fleet.gateways(Selector.parse(["site-a/*"]), listen_s=2.5)
    assert [(v.state, v.config_version, v.config_result) for v in views] == [
        ("online", 1, "applied")
    ] * len(NAMES)
    assert all(v.outbox_depth is not None and v.software for v in views), views
    # The audit trail: what was pushed, what each reported, and the gateways' own events
    # (seen while the push waited).
    trail = site.fleet.audit(Selector.parse(["site-a/gw-2"]))
    kinds = {(r.origin, r.result) for r in trail}
    assert {("pushed", "published"), ("reported", "applied")} <= kinds, trail
    assert all(r.signed_by == "ops-ann" for r in trail if r.origin in ("pushed", "event"))


def test_a_rollout_stops_at_a_canary_that_rolls_back(site: Site) -> None:
    broken = copy.deepcopy(site.template)
    broken["broker"]["url"] = f"mqtt://127.0.0.1:{free_port()}"
    before = {n: site.gateways[n].config.read_bytes() for n in NAMES}
    report = site.fleet.rollout(
        Selector.parse(["site-a/*"]), broken, site.key, "ops-ann", canary=1, batch=1,
        wait_s=TRIAL_S + 45,
    )  # fmt: skip
    assert [[o.gateway for o in w] for w in report.waves] == [["gw-1"]]
    assert report.stopped_by is not None
    assert (report.stopped_by.gateway, report.stopped_by.result) == ("gw-1", "rolled_back")
    assert f"within {TRIAL_S} s" in report.stopped_by.reason
    assert report.not_pushed == ["site-a/gw-2", "site-a/gw-3"]
    # The canary runs its previous config again; the others were never touched.
    for name in NAMES:
        assert site.gateways[name].config.read_bytes() == before[name]
        assert site.gateways[name].running()
    views = site.fleet.gateways(Selector.parse(["site-a/*"]), listen_s=0.5)
    assert [(v.key, v.config_version, v.state) for v in views] == [
        (f"site-a/{n}", 0, "online") for n in NAMES
    ]
