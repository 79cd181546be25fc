"""The MQTT contract: schemas, documented examples, AsyncAPI document and code agree."""

from __future__ import annotations

import inspect
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from community_protocol.schemas import SCHEMA_NAMES, load_schema, validator
from community_protocol.topics import CommandPath, Topics
from gateway.sdk.model import (
    ClockState,
    DeviceRef,
    Event,
    EventType,
    Identity,
    Kind,
    Location,
    Reading,
    Telemetry,
    Unit,
    ValueType,
    encode,
)

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = ROOT / "protocol" / "community_protocol" / "schemas"
DOC = ROOT / "docs" / "mqtt-api.md"
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"

_EXAMPLE = re.compile(
    r"<!-- example: (?P<name>[\w-]+)(?:#(?P<definition>\w+))? -->\s*```json\n(?P<body>.*?)\n```",
    re.DOTALL,
)


def _examples() -> list[tuple[str, str | None, str]]:
    text = DOC.read_text("utf-8")
    return [(m["name"], m["definition"], m["body"]) for m in _EXAMPLE.finditer(text)]


EXAMPLES = _examples()


def _example(name: str) -> dict[str, Any]:
    """A fresh copy of the first documented example of schema `name`."""
    body = next(b for n, d, b in EXAMPLES if n == name and d is None)
    doc: dict[str, Any] = json.loads(body)
    return doc


def _errors(name: str, doc: Any, definition: str | None = None) -> list[str]:
    return [e.message for e in validator(name, definition).iter_errors(doc)]


# --- the schemas themselves -------------------------------------------------------------


def test_schema_names_list_every_schema_file() -> None:
    assert set(SCHEMA_NAMES) == {p.stem for p in SCHEMA_DIR.glob("*.json")}


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_is_a_valid_draft_2020_12_schema_with_a_versioned_id(name: str) -> None:
    schema = load_schema(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    # The $id ends in the file's own name: a tool resolving the relative $refs against
    # the file's path and one resolving them against the $id land on the same file.
    assert schema["$id"] == f"https://community-gateway.example/schemas/v1/{name}.json"
    assert schema["title"] and schema["description"]


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_every_reference_resolves_offline(name: str) -> None:
    # A registry without a retrieve function: a $ref to anything not packaged fails.
    schemas = [load_schema(n) for n in SCHEMA_NAMES]
    registry: Registry[Any] = Registry().with_resources(
        (s["$id"], Resource.from_contents(s, default_specification=DRAFT202012)) for s in schemas
    )
    schema = load_schema(name)
    resolver = registry.resolver(base_uri=schema["$id"])
    refs = list(_refs(schema))
    for ref in refs:
        resolver.lookup(ref)  # raises Unresolvable
    if name not in ("envelope", "command-request", "alarm-ack", "update-chunk"):
        # Shared fields (ts, ids, session) come from one place, not copies; command
        # payloads have none (alarm-ack's request_id comes from command-request, an
        # update chunk's transfer id too).
        assert any(r.startswith("envelope.json#/$defs/") for r in refs)


def test_load_schema_returns_a_fresh_copy_and_refuses_unknown_names() -> None:
    load_schema("telemetry")["title"] = "changed"
    assert load_schema("telemetry")["title"] == "Telemetry"
    with pytest.raises(ValueError, match="no schema 'telemetri'"):
        load_schema("telemetri")
    with pytest.raises(ValueError, match="no definition 'nack'"):
        validator("command-request", "nack")


def test_importing_the_module_does_not_need_jsonschema() -> None:
    # jsonschema is a test dependency only; the runtime may import community_protocol.schemas.
    code = (
        "import sys; import community_protocol.schemas as s; s.load_schema('status'); "
        "assert 'jsonschema' not in sys.modules and 'referencing' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# The enums against the schemas: tests/test_protocol.py, for every enum of the protocol.


# --- what the gateway really encodes validates ---------------------------------------------

IDENTITY = Identity("riverside", "gw-1")
METER = DeviceRef("meter-b2-0301", Kind.METER, Location("B2", "3", "301"))
SMOKE = DeviceRef("smoke-b1", Kind.SMOKE, Location("B1"))
TS = datetime(2026, 11, 26, 23, 58, 21, 123456, tzinfo=UTC)
CLOCKS = [
    pytest.param(ClockState.SYNCED, {}, id="synced"),
    pytest.param(
        ClockState.UNSYNCED,
        {"uptime_ms": 131402, "boot_id": "74eca34febd54e2e98bdab36a936aa6c"},
        id="unsynced",
    ),
    pytest.param(ClockState.UNSYNCED, {}, id="unsynced-without-uptime"),
]


@pytest.mark.parametrize(("clock", "extra"), CLOCKS)
def test_encoded_telemetry_validates(clock: ClockState, extra: dict[str, Any]) -> None:
    values: list[float | int | bool | str] = [18234.52, 7, True, "closed"]
    readings = tuple(
        Reading(
            f"r{i}", values[i % len(values)], unit, ValueType.COUNTER if i % 2 else ValueType.GAUGE
        )
        for i, unit in enumerate(Unit)
    )
    doc = json.loads(encode(Telemetry(METER, TS, readings), IDENTITY, 7, clock, **extra))
    assert _errors("telemetry", doc) == []
    assert _errors("envelope", doc) == []
    assert _errors("event", doc) != []


@pytest.mark.parametrize(("clock", "extra"), CLOCKS)
@pytest.mark.parametrize("event_type", list(EventType))
def test_encoded_event_validates(
    event_type: EventType, clock: ClockState, extra: dict[str, Any]
) -> None:
    event = Event(SMOKE, TS, event_type, {"detail": 1})
    doc = json.loads(encode(event, IDENTITY, 1, clock, **extra))
    assert _errors("event", doc) == []
    assert _errors("envelope", doc) == []
    assert _errors("telemetry", doc) != []


# --- the examples in docs/mqtt-api.md ------------------------------------------------------


def test_every_json_block_in_the_doc_is_a_checked_example() -> None:
    blocks = DOC.read_text("utf-8").count("```json")
    assert blocks == len(EXAMPLES), "each ```json block needs an <!-- example: NAME --> marker"
    documented = {n for n, _, _ in EXAMPLES}
    assert documented == set(SCHEMA_NAMES) - {"envelope"}
    defs = {d for n, d, _ in EXAMPLES if n == "command-request"}
    assert {"ping", "inject", "alarm_ack"} <= defs


@pytest.mark.parametrize(
    ("name", "definition", "body"),
    EXAMPLES,
    ids=[f"{n}{'#' + d if d else ''}-{i}" for i, (n, d, _) in enumerate(EXAMPLES)],
)
def test_doc_example_validates(name: str, definition: str | None, body: str) -> None:
    doc = json.loads(body)
    assert _errors(name, doc) == []
    if definition is not None:
        assert _errors(name, doc, definition) == []


def test_doc_ping_reply_has_the_documented_result() -> None:
    replies = [json.loads(b) for n, _, b in EXAMPLES if n == "command-reply"]
    ping = next(r for r in replies if r["command"] == "ping")
    assert _errors("command-reply", ping["result"], "ping_result") == []
    assert _errors("command-reply", {"pong": True}, "ping_result") != []


def test_doc_describes_every_event_type() -> None:
    rows = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", DOC.read_text("utf-8"), re.MULTILINE)
    assert sorted(rows) == sorted(str(t) for t in EventType)


# --- payloads the platform must be able to reject ------------------------------------------


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def apply(doc: dict[str, Any]) -> None:
        node = doc
        for key in parents:
            node = node[key]
        node[last] = value

    return apply


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def apply(doc: dict[str, Any]) -> None:
        node = doc
        for key in parents:
            node = node[key]
        del node[last]

    return apply


REJECTED = [
    ("telemetry", _set("values.energy_import.unit", "kW"), "unit kW is not canonical"),
    ("telemetry", _drop("seq"), "seq missing"),
    ("telemetry", _set("seq", 0), "seq starts at 1"),
    ("telemetry", _set("values", {}), "no values"),
    ("telemetry", _set("values.power.type", "rate"), "unknown value type"),
    ("telemetry", _set("values.power.value", None), "null value"),
    ("telemetry", _set("msg_id", "00CDF96393EF45F2A629C5DFC04324AA"), "upper-case msg_id"),
    ("telemetry", _set("msg_id", "00cdf963"), "short msg_id"),
    ("telemetry", _set("ts", "2026-11-26T23:58:21Z"), "ts without milliseconds"),
    ("telemetry", _set("ts", "2026-11-26T23:58:21.123+01:00"), "ts not in UTC"),
    ("telemetry", _set("uptime_ms", 5), "uptime_ms on a synced message"),
    ("telemetry", _set("boot_id", "b"), "boot_id on a synced message"),
    ("telemetry", _set("extra", 1), "unknown top-level field"),
    ("telemetry", _set("schema.name", "community.event"), "wrong schema name"),
    ("telemetry", _set("schema.version", 2), "wrong schema version"),
    ("telemetry", _set("site", "river side"), "site id with a space"),
    ("telemetry", _set("device.id", "a/b"), "device id with a slash"),
    ("telemetry", _set("device.kind", "camera"), "unknown device kind"),
    ("telemetry", _drop("device.location.building"), "location without building"),
    ("event", _set("event.type", "door.slammed"), "unknown event type"),
    ("event", _drop("event.data"), "event without data"),
    ("status", _set("session", 0), "session starts at 1"),
    ("status", _set("state", "sleeping"), "unknown state"),
    ("status", _drop("started"), "started missing"),
    ("availability", _drop("reason"), "reason missing"),
    ("availability", _set("state", "maybe"), "a state that is not online, offline or unknown"),
    ("availability", _drop("device.kind"), "device without kind"),
    ("health", _drop("outbox.dropped_telemetry"), "dropped_telemetry missing"),
    ("health", _drop("outbox.lowest_seq"), "lowest_seq missing: no gap rule under load"),
    ("health", _set("outbox.lowest_seq", 0), "lowest_seq below the first seq"),
    ("health", _set("outbox.queued", -1), "negative hand-off queue"),
    ("health", _set("publish.connected", "yes"), "connected not a boolean"),
    ("health", _set("drivers.modbus.errors", -1), "negative error count"),
    ("health", _set("drivers.modbus.flags", [1]), "driver figure that is a list"),
    ("command-reply", _set("ok", False), "ok false without error"),
    ("command-reply", _set("error", "oops"), "error while ok"),
    ("command-reply", _drop("request_id"), "request_id missing (null when unknown)"),
]


@pytest.mark.parametrize(("name", "mutate", "reason"), REJECTED, ids=[r for _, _, r in REJECTED])
def test_schema_rejects(name: str, mutate: Callable[[dict[str, Any]], None], reason: str) -> None:
    doc = _example(name)
    assert _errors(name, doc) == []
    mutate(doc)
    assert _errors(name, doc) != [], reason


@pytest.mark.parametrize(
    ("definition", "doc"),
    [
        ("alarm_ack", {"note": "no by"}),
        ("alarm_ack", {"by": "staff-1", "note": "x" * 1001}),
        ("alarm_ack", {"by": "staff-1", "comment": "unknown field"}),
        ("ping", {"request_id": "r" * 65}),
        ("ping", {"request_id": 17}),
        ("inject", {"type": "smoke.smouldering"}),
        ("inject", {"type": "smoke.alarm", "data": []}),
    ],
)
def test_command_schemas_reject(definition: str, doc: dict[str, Any]) -> None:
    assert _errors("command-request", doc, definition) != []


def test_command_request_must_be_an_object() -> None:
    assert _errors("command-request", ["ping"]) != []
    assert _errors("command-request", {"request_id": "r1", "anything": [1, 2]}) == []


# --- docs/asyncapi.yaml ---------------------------------------------------------------------


def _asyncapi() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text("utf-8"))
    return doc


PLACEHOLDERS = {
    "site": "SITE",
    "gateway": "GW",
    "device": "DEVICE",
    "alarm_id": "ALARM",
    "code": "CODE",
    "diag": "logs",
}
COMMAND_PATHS = [
    "ping",
    "devices/DEVICE/inject",
    "alarms/ALARM/ack",
    "requests/CODE/status",
    "diag/logs",
    "update",
    "update/chunk",
]


def _contract_topics() -> list[str]:
    """Every concrete topic protocol/community_protocol/topics.py can produce, with placeholder ids.

    Found by introspection, so a topic added to Topics without a channel fails here.
    """
    topics = Topics("community/v1", Identity(PLACEHOLDERS["site"], PLACEHOLDERS["gateway"]))
    args: dict[str, list[str]] = {
        "device_id": [PLACEHOLDERS["device"]],
        "channel": [Telemetry.channel, Event.channel],
        "alarm_id": [PLACEHOLDERS["alarm_id"]],
        "code": [PLACEHOLDERS["code"]],
        "path": COMMAND_PATHS,
    }
    # Not channels of the contract: constructors and parsers; the subtree filter; the
    # probe `gateway check` sends to itself; the response topic a requester chooses
    # (MQTT 5, documented by the operations' reply rule).
    not_topics = {"prefix", "identity", "base", "command_path", "fleet", "of", "split"}
    not_topics |= {"everything", "check", "central_reply"}
    out: list[str] = []
    for name in dir(Topics):
        if name.startswith("_") or name in not_topics:
            continue
        member = getattr(topics, name)
        if not callable(member):
            values = [member]
        else:
            params = list(inspect.signature(member).parameters)
            unknown = [p for p in params if p not in args]
            assert not unknown, f"Topics.{name}: teach this test about {unknown}"
            values = [member(*combo) for combo in itertools.product(*(args[p] for p in params))]
            if name == "reply":  # an update's chunks are never answered
                values = [v for v in values if not v.endswith("/" + CommandPath.UPDATE_CHUNK)]
        for value in values:
            if value.endswith("/#"):  # the command subscription filter
                for path in COMMAND_PATHS:
                    concrete = value[:-1] + path
                    assert topics.command_path(concrete) == path
                    out.append(concrete)
            else:
                out.append(value)
    return out


def _address_pattern(address: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", address)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))
    return re.compile(regex + "$")


def test_asyncapi_is_version_3_with_mqtt_and_mqtts_servers() -> None:
    doc = _asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["mqtt"]["protocol"] == "mqtt"
    assert doc["servers"]["mqtts"]["protocol"] == "secure-mqtt"


def test_asyncapi_has_a_channel_for_every_topic_and_no_other() -> None:
    channels = _asyncapi()["channels"]
    patterns = {name: _address_pattern(ch["address"]) for name, ch in channels.items()}
    used: set[str] = set()
    for topic in _contract_topics():
        matches = [(n, m) for n, p in patterns.items() if (m := p.match(topic))]
        assert len(matches) == 1, f"{topic}: matching channels {[n for n, _ in matches]}"
        name, match = matches[0]
        used.add(name)
        for param, value in match.groupdict().items():
            assert value == PLACEHOLDERS.get(param, "inject"), f"{name}: {{{param}}} = {value}"
    assert used == set(channels), f"channels for no topic: {set(channels) - used}"


def test_asyncapi_channel_parameters_match_their_addresses() -> None:
    doc = _asyncapi()
    declared = set(doc["components"]["parameters"])
    assert {"site", "gateway", "device", "alarm_id"} <= declared
    for name, channel in doc["channels"].items():
        in_address = set(re.findall(r"\{(\w+)\}", channel["address"]))
        assert set(channel.get("parameters", {})) == in_address, name


def _pointer(doc: Any, fragment: str) -> Any:
    node = doc
    for token in filter(None, fragment.lstrip("/").split("/")):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def test_asyncapi_references_resolve_to_existing_schema_files() -> None:
    doc = _asyncapi()
    files: set[Path] = set()
    for ref in _refs(doc):
        target, _, fragment = ref.partition("#")
        if target:
            path = (ASYNCAPI.parent / target).resolve()
            assert path.is_file(), f"{ref}: no such file"
            assert path.parent == SCHEMA_DIR
            files.add(path)
            _pointer(json.loads(path.read_text("utf-8")), fragment)
        else:
            _pointer(doc, fragment)
    referenced = {p.stem for p in files}
    # ticket.json is published by the central ticket service, not by a gateway.
    assert referenced == set(SCHEMA_NAMES) - {"envelope", "ticket"}


def test_asyncapi_operations_send_and_receive_the_right_channels() -> None:
    doc = _asyncapi()
    actions = {}
    for op in doc["operations"].values():
        channel = op["channel"]["$ref"].removeprefix("#/channels/")
        actions[channel] = op["action"]
        if "reply" in op:
            actions[op["reply"]["channel"]["$ref"].removeprefix("#/channels/")] = "send"
    for name, channel in doc["channels"].items():
        # Commands and the desired configuration come in; everything else goes out.
        incoming = "/cmd/" in channel["address"] or channel["address"].endswith("/config/desired")
        expected = "receive" if incoming else "send"
        assert actions.get(name) == expected, name
