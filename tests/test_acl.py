"""`gateway security acl`: the inventory is checked whole, and the rules follow the contract."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from community_protocol.topics import Topics
from gateway.sdk.model import Identity
from gateway.security import broker_identity, parse_identity
from gateway.security.acl import Fleet, gateway_rules, load_fleet, render_emqx, render_mosquitto
from tests.harness import GATEWAY


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [GATEWAY, "security", "acl", *args], capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    ("site", "gateway"), [("a.b", "c"), ("a", "b.c"), ("site-a", "gw_1"), ("s", "g.h.i")]
)
def test_one_name_one_gateway(site: str, gateway: str) -> None:
    name = broker_identity(site, gateway)
    assert ":" not in name and "/" not in name
    assert parse_identity(name) == Identity(site, gateway)


def test_services_and_junk_are_no_gateway() -> None:
    for name in ("service.tickets", "a@b@c", "@site", "gw@", "gw@si te"):
        assert parse_identity(name) is None


def test_every_topic_the_gateway_uses_is_in_its_rules() -> None:
    t = Topics("p/v1", Identity("s", "g"))
    rules = gateway_rules("p/v1", "s", "g")
    writes = [r.topic.removesuffix("#") for r in rules if r.access == "write"]
    reads = {r.topic for r in rules if r.access == "read"}
    published = [t.status, t.health, t.availability("d"), t.device("d", "telemetry"),
                 t.alarm("a"), t.request("c"), t.reply("alarms/a/ack"),
                 f"{t.base}/reply/central/tickets-1", f"{t.base}/check/x"]  # fmt: skip
    assert all(any(topic.startswith(w) for w in writes) for topic in published)
    assert writes == [f"{t.base}/"]
    assert {t.commands, t.status} <= reads and all(r.startswith(t.base + "/") for r in reads)
    assert {t.config_desired, t.config_reported} <= reads


def test_a_bad_yaml_inventory_gets_every_problem_with_its_line(tmp_path: Path) -> None:
    inv = tmp_path / "fleet.yaml"
    inv.write_text(
        "prefix: a/+/b\n"
        "services:\n  tickets: [ok.name, 'gw@site']\n  billing: [x]\n"
        "gateways:\n"
        "  - {site: s, gateway: g}\n"
        "  - {site: s, gateway: 'bad id'}\n"
        "  - {site: s, gateway: g}\n"
        "  - just-a-string\n"
        "colour: red\n"
    )
    done = run("--inventory", str(inv))
    assert done.returncode == 2 and done.stdout == ""
    err = done.stderr
    assert f"{inv}:1 prefix: a topic prefix has no '+'" in err
    assert "services.tickets[1]: 'gw@site' cannot name a service" in err
    assert "services.billing: unknown role" in err
    assert f"{inv}:7 gateways[1]: gateway id 'bad id'" in err
    assert f"{inv}:8 gateways[2]: g at s is listed twice (first at {inv}:6 gateways[0])" in err
    assert "gateways[3]: expected {site: .., gateway: ..}" in err
    assert "colour: unknown key" in err
    assert err.rstrip().endswith("no ACL written")


def test_a_csv_inventory_and_the_written_file(tmp_path: Path) -> None:
    inv = tmp_path / "fleet.csv"
    inv.write_text("site,gateway\nsite-a,gw-1\n\n# spare\nsite-b,gw-1\n")
    out = tmp_path / "acl"
    done = run(
        "--inventory",
        str(inv),
        "--tickets-user",
        "service.tickets",
        "--prefix",
        "x/v2",
        "-o",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "2 gateways, 1 services" in done.stderr
    text = out.read_text()
    assert "pattern" not in text and text.count("\nuser ") == 3
    assert (
        "user gw-1@site-b\ntopic write x/v2/site-b/gw-1/#\ntopic read x/v2/site-b/gw-1/cmd/#"
        in text
    )
    assert "user service.tickets\ntopic read x/v2/+/+/alarms/+" in text
    bad = tmp_path / "bad.csv"
    bad.write_text("site-a,gw-1,extra\n")
    refused = run("--inventory", str(bad))
    assert (
        refused.returncode == 2
        and f"{bad}:1: expected 'site,gateway', got 3 fields" in refused.stderr
    )


def test_emqx_rules_mirror_mosquitto_and_end_in_deny() -> None:
    fleet = Fleet(gateways=[Identity("s", "g")], services={"tickets": ["service.tickets"]})
    mosq, emqx = render_mosquitto(fleet), render_emqx(fleet)
    assert mosq.count("\ntopic ") == emqx.count("{allow, ")
    assert '{allow, {username, "g@s"}, publish, ["community/v1/s/g/#"]}.' in emqx
    assert '{allow, {username, "g@s"}, subscribe, ["community/v1/s/g/cmd/#"]}.' in emqx
    assert emqx.rstrip().endswith("{deny, all}.")


def test_a_missing_services_section_is_fine(tmp_path: Path) -> None:
    inv = tmp_path / "f.yaml"
    inv.write_text("gateways:\n  - {site: s, gateway: g}\n")
    fleet = load_fleet(inv)
    assert (
        fleet.prefix == "community/v1"
        and fleet.services == {}
        and fleet.gateways == [Identity("s", "g")]
    )
