"""The ack payload's two checks agree, the `alarms:` config section, and the alarm CLI offline."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from community_protocol.schemas import validator
from gateway.alarms.book import AlarmBook
from gateway.alarms.commands import parse_ack
from gateway.alarms.model import DeviceInfo, Via
from gateway.alarms.rules import RuleSet
from gateway.alarms.settings import EscalationConfig
from gateway.alarms.store import AlarmStore
from gateway.config import load_config
from gateway.mqtt.commands import CommandFailed, CommandRouter
from tests.harness import GATEWAY
from tests.harness import config_problems as _problems

# ---- the pydantic model and alarm-ack.json agree ------------------------------------

GOOD_ACKS: list[Any] = [
    {"by": "staff-li"},
    {"by": "s"},
    {"by": "x" * 64, "note": "n" * 500},
    {"by": "staff-li", "note": ""},
    {"by": "staff-li", "note": "on my way", "request_id": "r-1"},
    {"by": "李老师", "note": "马上到"},
    {"by": "staff li", "request_id": "r" * 64},
]
BAD_ACKS: list[Any] = [
    {},
    {"note": "no by"},
    {"by": ""},
    {"by": "x" * 65},
    {"by": 42},
    {"by": None},
    {"by": ["staff-li"]},
    {"by": True},
    {"by": "staff-li", "note": 7},
    {"by": "staff-li", "note": None},
    {"by": "staff-li", "note": "n" * 501},
    {"by": "staff-li", "comment": "unknown field"},
    {"by": "staff-li", "request_id": ""},
    {"by": "staff-li", "request_id": "r" * 65},
    {"by": "staff-li", "request_id": 5},
    {"by": {"id": "staff-li"}},
    [{"by": "staff-li"}],
    "staff-li",
    17,
]


def _runtime_accepts(doc: Any) -> bool:
    """What the gateway does with the payload: the router's parse, then the ack model."""
    try:
        cmd = CommandRouter().parse("alarms/a-1/ack", json.dumps(doc).encode())
        parse_ack(cmd.args)
    except CommandFailed:
        return False
    return True


@pytest.mark.parametrize("doc", GOOD_ACKS + BAD_ACKS, ids=lambda d: json.dumps(d)[:40])
def test_runtime_check_and_json_schema_agree(doc: Any) -> None:
    schema_ok = validator("alarm-ack").is_valid(doc)
    assert _runtime_accepts(doc) == schema_ok
    assert schema_ok == (doc in GOOD_ACKS)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"note": "x"}, "field 'by' required"),
        ({"by": 42}, "field 'by' must be a string, not int"),
        ({"by": ""}, "field 'by' must not be empty"),
        ({"by": "a", "note": "n" * 501}, "field 'note' is longer than 500 characters"),
        ({"by": "a", "comment": "x"}, "unknown field 'comment'"),
    ],
)
def test_refusals_name_the_field_and_the_problem(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandFailed, match=message):
        parse_ack(doc)


# ---- the alarms: config section --------------------------------------------------------

CONFIG = """\
version: 1
site: {id: sunrise}
gateway: {id: gw-1}
broker: {url: "mqtt://127.0.0.1:1883"}
outbox: {path: state/outbox.db}
devices:
  - id: smoke-1
    name: Stairwell
    kind: smoke
    location: {building: "2", floor: 1, unit: stairwell}
    driver: {type: simulated}
  - id: buzzer-office
    kind: door
    location: {building: "1", unit: office}
    driver: {type: simulated}
"""


def _write(tmp_path: Path, alarms: str) -> Path:
    path = tmp_path / "gw.yaml"
    path.write_text(CONFIG + textwrap.dedent(alarms))
    return path


def test_defaults_store_next_to_the_outbox(tmp_path: Path) -> None:
    loaded = load_config(_write(tmp_path, ""))
    cfg = loaded.config.alarms
    assert cfg.store_path(loaded.config.outbox.path) == tmp_path / "state" / "alarms.db"
    assert cfg.escalation.after_s("critical") == 120  # type: ignore[arg-type]
    assert {r.name for r in cfg.rule_set().rules} >= {"fire", "care", "offline", "tamper"}


def test_a_full_section_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        alarms:
          path: state/my-alarms.db
          damping_s: 2
          escalation:
            critical: 30
            low: 3600
            max_level: 5
            output: {device: buzzer-office, "on": "on", "off": "off"}
          rules:
            - {name: door-held-open, type: security, severity: high,
               raise_on: [door.held_open], clear_on: [door.closed], devices: [buzzer-office]}
        """,
    )
    cfg = load_config(path).config.alarms
    assert cfg.path == tmp_path / "state" / "my-alarms.db"
    assert cfg.escalation.output is not None and cfg.escalation.output.device == "buzzer-office"
    assert cfg.rule_set().by_name("door-held-open").severity == "high"  # type: ignore[union-attr]


def test_the_documented_example_section_is_valid() -> None:
    import re

    import yaml

    from gateway.alarms.settings import AlarmsConfig

    text = (Path(__file__).parent.parent / "docs" / "config.md").read_text("utf-8")
    section = text.split("## Alarms", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(r"```yaml\n(.*?)```", section, re.S)
    cfg = AlarmsConfig.model_validate(yaml.safe_load(block)["alarms"])
    assert cfg.escalation.output is not None
    assert (cfg.escalation.output.on, cfg.escalation.output.off) == ("on", "off")
    assert cfg.rule_set().by_name("tamper").enabled is False  # type: ignore[union-attr]
    assert cfg.rule_set().by_name("door-held-open").severity == "high"  # type: ignore[union-attr]


def test_unknown_output_device_and_bad_rule_are_reported_with_their_line(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        alarms:
          escalation:
            output: {device: no-such-relay}
          rules:
            - {name: fire, type: fire, severity: critical,
               raise_on: [smoke.alarm], clear_on: [smoke.cleared], devices: [smoke-9]}
        """,
    )
    assert _problems(path) == [
        f"{path}:18 alarms.escalation.output.device: no device 'no-such-relay' is configured",
        f"{path}:21 alarms.rules[0].devices[0]: no device 'smoke-9' is configured",
    ]


def test_misspelt_keys_and_bad_values_are_refused_before_anything_runs(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        alarms:
          dampng_s: 3
          escalation: {critical: -1}
          rules:
            - {name: fire, type: blaze, severity: critical, raise_on: [smoke.alarm], clear_on: [ack]}
        """,
    )
    found = _problems(path)
    assert any("alarms.dampng_s: unknown key" in p for p in found), found
    assert any("alarms.escalation.critical" in p for p in found), found
    assert any("alarms.rules.0.type" in p or "alarms.rules[0].type" in p for p in found), found


# ---- the CLI against a database, no gateway running -----------------------------------


def _db_with_alarms(tmp_path: Path) -> tuple[Path, list[str]]:
    config = _write(tmp_path, "")
    store = AlarmStore(tmp_path / "state" / "alarms.db")
    store.open()
    book = AlarmBook(RuleSet.merged(()), EscalationConfig(), 0, store.new_id)
    from datetime import UTC, datetime

    from gateway.alarms.model import Instant

    now = Instant(datetime.now(UTC), 0.0)
    smoke = DeviceInfo("smoke-1", "smoke", "Stairwell", {"building": "2", "floor": "1"})
    [fire] = book.signal(smoke, "smoke.alarm", now)
    store.save([fire])
    [offline] = book.signal(smoke, "offline", now)
    store.save([offline])
    store.save(book.acknowledge(offline.alarm.id, "staff-wu", "", Via.MQTT, now)[2])
    store.save(book.signal(smoke, "online", now))
    store.close()
    return config, [fire.alarm.id, offline.alarm.id]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([GATEWAY, *args], capture_output=True, text=True, timeout=30)


def test_alarms_table_lists_open_then_recent_closed(tmp_path: Path) -> None:
    config, (fire, offline) = _db_with_alarms(tmp_path)
    out = _cli("alarms", "-c", str(config))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:4] == ["ID", "TYPE", "SEVERITY", "STATE"]
    assert lines[1].split()[:5] == [fire, "fire", "critical", "active", "smoke-1"]
    assert lines[2].split()[:4] == [offline, "maintenance", "low", "closed"]
    assert lines[2].rstrip().endswith("staff-wu")
    docs = [
        json.loads(line) for line in _cli("alarms", "--json", "-c", str(config)).stdout.splitlines()
    ]
    for doc in docs:
        validator("alarm").validate(doc)
    assert [d["alarm_id"] for d in docs] == [fire, offline]


def test_ack_without_a_running_gateway_is_queued_and_unknown_ids_refused(tmp_path: Path) -> None:
    config, (fire, offline) = _db_with_alarms(tmp_path)
    out = _cli("ack", fire, "--by", "staff-li", "--wait", "0.3", "-c", str(config))
    assert out.returncode == 0 and out.stdout.startswith("queued:"), out
    out = _cli("ack", offline, "--by", "staff-li", "-c", str(config))
    assert out.returncode == 0 and "already acknowledged" in out.stdout and "staff-wu" in out.stdout
    out = _cli("ack", "zz-404", "--by", "staff-li", "-c", str(config))
    assert out.returncode == 1 and "unknown alarm 'zz-404'" in out.stderr
    out = _cli("ack", fire, "--by", "x" * 65, "-c", str(config))
    assert out.returncode == 2 and "field 'by'" in out.stderr
    store = AlarmStore(tmp_path / "state" / "alarms.db")
    store.open(create=False)
    [pending] = store.pending_acks()
    assert (pending.alarm_id, pending.by, pending.via) == (fire, "staff-li", "cli")
    store.close()


def test_alarms_on_a_gateway_that_never_ran(tmp_path: Path) -> None:
    config = _write(tmp_path, "")
    out = _cli("alarms", "-c", str(config))
    assert out.returncode == 0 and "no alarms yet" in out.stdout
    assert not (tmp_path / "state" / "alarms.db").exists(), "looking must not create it"
