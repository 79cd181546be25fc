"""The protocol package: its enums, names, ids and builders agree with the JSON Schemas."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest

from community_protocol import documents, enums, names, signing
from community_protocol.enums import ENUM_SOURCES, AvailabilityState, ClockState, GatewayState
from community_protocol.ids import ID_PATTERN, Identity
from community_protocol.names import DOCUMENT_FILES, ENVELOPE_NAMES, SCHEMA_FILES, SchemaName
from community_protocol.schemas import load_schema, schema_dir, validator
from community_protocol.topics import CentralTopics, CommandPath, Topics

ROOT = Path(__file__).resolve().parents[1]


def _pointer(doc: Any, pointer: str) -> Any:
    for part in pointer.strip("/").split("/"):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


def _enums(node: Any, where: str = "") -> list[str]:
    """JSON pointers of every `enum` array in a schema."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "enum":
                out.append(f"{where}/enum")
            else:
                out += _enums(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _enums(value, f"{where}/{i}")
    return out


ENUM_CASES = [
    pytest.param(enum, schema, pointer, id=f"{enum.__name__}-{schema}{pointer}")
    for enum, places in ENUM_SOURCES.items()
    for schema, pointer in places
]


@pytest.mark.parametrize(("enum", "schema", "pointer"), ENUM_CASES)
def test_a_schema_enum_and_the_code_enum_are_the_same_values(
    enum: type[StrEnum], schema: str, pointer: str
) -> None:
    spelled = _pointer(load_schema(schema), pointer)
    assert len(spelled) == len(set(spelled)), f"{schema}.json{pointer} repeats a value"
    assert sorted(spelled) == sorted(str(v) for v in enum), (
        f"{schema}.json{pointer} and community_protocol.enums.{enum.__name__} differ"
    )


def test_every_enum_of_every_schema_has_a_code_enum() -> None:
    covered = {(s, p) for places in ENUM_SOURCES.values() for s, p in places}
    # The envelope's name enum lists the documents that use the envelope (ENVELOPE_NAMES).
    covered.add(("envelope", "/properties/schema/properties/name/enum"))
    found = {(name, p) for name in SCHEMA_FILES for p in _enums(load_schema(name))}
    assert found - covered == set(), "give these schema enums a code enum in ENUM_SOURCES"
    assert covered - found == set(), "ENUM_SOURCES names a place that has no enum"


def test_every_enum_of_the_module_is_checked_against_a_schema() -> None:
    defined = {
        v for v in vars(enums).values() if isinstance(v, type) and issubclass(v, StrEnum)
    } - {StrEnum}
    assert defined == set(ENUM_SOURCES)


def test_the_envelope_names_the_documents_that_use_it() -> None:
    spelled = load_schema("envelope")["properties"]["schema"]["properties"]["name"]["enum"]
    assert spelled == [str(n) for n in ENVELOPE_NAMES]


@pytest.mark.parametrize("name", list(SchemaName))
def test_each_document_name_is_the_const_of_its_schema_file(name: SchemaName) -> None:
    ref = load_schema(DOCUMENT_FILES[name])["properties"]["schema"]["properties"]
    assert ref == {"name": {"const": str(name)}, "version": {"const": names.SCHEMA_VERSION}}
    assert names.schema_ref(name) == {"name": str(name), "version": names.SCHEMA_VERSION}


def test_schema_files_are_exactly_the_package_files() -> None:
    files = {p.name for p in schema_dir().iterdir() if p.name.endswith(".json")}
    assert files == {f"{n}.json" for n in SCHEMA_FILES}
    assert len(SCHEMA_FILES) == len(set(SCHEMA_FILES))


def test_the_id_pattern_is_the_envelopes() -> None:
    assert load_schema("envelope")["$defs"]["id"]["pattern"] == ID_PATTERN
    with pytest.raises(ValueError, match="site id 'a/b' must be 1-64 characters"):
        Identity("a/b", "gw")
    with pytest.raises(ValueError, match="gateway id '\\+'"):
        Identity("site", "+")


IDENTITY = Identity("riverside", "gw-1")
TS = datetime(2026, 11, 26, 23, 58, 21, 123456, tzinfo=UTC)
DEVICE = {"id": "smoke-b1", "kind": "smoke", "location": {"building": "B1"}}


def test_the_status_builder_makes_valid_documents_online_and_offline() -> None:
    for state, reason in ((GatewayState.ONLINE, ""), (GatewayState.OFFLINE, "last will")):
        doc = documents.status_document(
            state,
            session=3,
            identity=IDENTITY,
            version="0.1.0",
            started=TS,
            ts=TS,
            clock=ClockState.SYNCED,
            reason=reason,
        )
        validator("status").validate(doc)
        assert doc["ts"] == "2026-11-26T23:58:21.123Z"
        assert ("reason" in doc) is bool(reason)


@pytest.mark.parametrize("state", list(AvailabilityState))
def test_the_availability_builder_makes_valid_documents(state: AvailabilityState) -> None:
    doc = documents.availability_document(
        state,
        reason="no reply to 3 polls",
        session=1,
        identity=IDENTITY,
        device=DEVICE,
        ts=TS,
        clock=ClockState.UNSYNCED,
    )
    validator("availability").validate(doc)


def test_the_reply_builder_makes_valid_replies_good_and_bad() -> None:
    ok = documents.reply_document("ping", "r1", True, "done", result={"pong": True, "session": 1})
    bad = documents.reply_document("alarms/a1/ack", None, False, "error", error="unknown alarm")
    for doc in (ok, bad):
        validator("command-reply").validate(
            {**doc, "ts": "2026-11-26T23:58:21.123Z", "clock": "synced"}
        )
    errors = list(
        validator("command-reply").iter_errors(
            {
                **documents.reply_document("ping", None, False, "error"),
                "ts": "2026-11-26T23:58:21.123Z",
                "clock": "synced",
            }
        )
    )
    assert errors, "a failed reply without an error must not validate"


def test_the_envelope_carries_boot_markers_only_while_unsynced() -> None:
    synced = documents.envelope(
        SchemaName.EVENT, "0" * 32, 1, TS, ClockState.SYNCED, IDENTITY, uptime_ms=5, boot_id="b"
    )
    assert "uptime_ms" not in synced and "boot_id" not in synced
    unsynced = documents.envelope(
        SchemaName.EVENT, "0" * 32, 1, TS, ClockState.UNSYNCED, IDENTITY, uptime_ms=5
    )
    assert unsynced["uptime_ms"] == 5 and "boot_id" not in unsynced
    with pytest.raises(ValueError):
        documents.dumps({"value": float("nan")})


def test_gateway_and_central_topics_meet() -> None:
    gateway = Topics("community/v1", IDENTITY)
    central = CentralTopics("community/v1", "tickets", "central-1")
    ack = central.ack_command("riverside", "gw-1", "a-1")
    assert gateway.command_path(ack) == CommandPath.alarm_ack("a-1") == "alarms/a-1/ack"
    assert central.alarms == "community/v1/+/+/alarms/+"
    assert _matches(central.alarms, gateway.alarm("a-1"))
    assert _matches(central.shared_alarms.split("/", 2)[2], gateway.alarm("a-1"))
    assert central.shared_alarms == "$share/tickets/community/v1/+/+/alarms/+"
    assert _matches(central.shared_status.split("/", 2)[2], gateway.status)
    assert _matches(central.shared_replies.split("/", 2)[2], gateway.reply("alarms/a-1/ack"))
    reply_to = central.reply_to("riverside", "gw-1")
    assert reply_to.startswith(gateway.base + "/reply/")  # where the gateway may publish
    assert _matches(central.replies, reply_to)
    assert central.ticket("T-000001") == "community/v1/central/tickets/T-000001"
    assert central.split(gateway.alarm("a-1")) == ("riverside", "gw-1", "alarms", "a-1")
    assert CommandPath.is_alarm_ack(("alarms", "a-1", "ack"))
    assert CommandPath.is_request_status(tuple(CommandPath.request_status("ABC").split("/")))


def _matches(topic_filter: str, topic: str) -> bool:
    """MQTT filter matching: `+` one level, a trailing `#` any number of levels."""
    f, t = topic_filter.split("/"), topic.split("/")
    if f[-1] == "#":
        f = f[:-1]
        if len(t) < len(f):
            return False
        t = t[: len(f)]
    return len(f) == len(t) and all(a in ("+", b) for a, b in zip(f, t, strict=True))


def test_the_package_needs_only_the_standard_library() -> None:
    # Producers import it without jsonschema; nothing in it imports the gateway.
    code = (
        "import sys, community_protocol, community_protocol.documents, "
        "community_protocol.schemas as s; s.load_schema('alarm'); "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('gateway', 'drivers', 'jsonschema', 'referencing', 'pydantic')]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT / "protocol")
    meta = (ROOT / "protocol" / "pyproject.toml").read_text("utf-8")
    assert "dependencies = []" in meta


def test_a_schema_file_is_plain_json_with_its_own_name_in_its_id() -> None:
    for name in SCHEMA_FILES:
        schema = json.loads(schema_dir().joinpath(f"{name}.json").read_text("utf-8"))
        assert schema["$id"].rsplit("/", 1)[1] == f"{name}.json"


# ---- the protocol package is the only place the contract is spelled ------------------

_NAMES = "|".join(re.escape(str(n).split(".", 1)[1]) for n in SchemaName)
# What spelling a topic or a schema name by hand looks like in a string or f-string
# (an f-string's fields read as `{}`): a schema name, the prefix, a level of the
# command or reply subtrees, a shared subscription, the tickets' tree, a fleet-wide
# filter, a gateway's subtree below a placeholder.
SPELLINGS = (
    re.compile(rf"\bcommunity\.({_NAMES})\b"),
    re.compile(r"community/v\d"),
    re.compile(r"\bcmd/"),
    re.compile(r"\breply/"),
    re.compile(r"\$share/"),
    re.compile(r"central/tickets"),
    re.compile(r"(^|/)\+/\+(/|$)"),
    re.compile(r"\{\}/(status|health|events|alarms|requests|devices|check)(/|$)"),
    re.compile(r"/(alarms|requests|devices)/[+#]"),
)
# Code outside the protocol package, not counting tests (which spell topics on purpose,
# as an independent check of what the code publishes).
SCANNED = ("gateway", "drivers", "central")
# Files that still spell the contract, waiting for their owner to switch to the
# protocol package (issue 19: the central distribution's TicketTopics and its
# documents).  A file here that no longer spells anything is reported (a warning, so
# that its owner's fix lands without waiting for this list), to be taken off.
NOT_YET = frozenset(
    {
        "central/src/community_central/broker.py",
        "central/src/community_central/documents.py",
    }
)


def _strings(source: str) -> Iterator[tuple[int, str]]:
    """(line, text) of every string and f-string in `source`, docstrings left out."""
    tree = ast.parse(source)
    skip: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            skip.add(id(body[0].value))
        if isinstance(node, ast.JoinedStr):
            skip.update(id(v) for v in node.values)
            text = "".join(
                v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
                for v in node.values
            )
            yield node.lineno, text
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def _spelled(source: str) -> list[str]:
    return [
        f"{line}: {text[:80]!r}"
        for line, text in _strings(source)
        if any(p.search(text) for p in SPELLINGS)
    ]


def _scanned_files() -> Iterator[Path]:
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if "tests" not in rel.parts and "build" not in rel.parts:
                yield path


def test_topics_and_schema_names_are_spelled_only_in_the_protocol_package() -> None:
    found = {}
    for path in _scanned_files():
        rel = str(path.relative_to(ROOT))
        hits = _spelled(path.read_text("utf-8"))
        if hits or rel in NOT_YET:
            found[rel] = hits
    spelled = {f: h for f, h in found.items() if h and f not in NOT_YET}
    assert spelled == {}, "use community_protocol (topics, names) instead of:\n" + "\n".join(
        f"{f}:{h}" for f, hits in spelled.items() for h in hits
    )
    stale = sorted(f for f in NOT_YET if not found.get(f))
    if stale:
        warnings.warn(f"take these off NOT_YET in {__file__}: {stale}", stacklevel=1)


def test_the_spelling_check_sees_each_kind_of_hand_written_topic() -> None:
    source = '''
"""Docstrings may say community/v1/{site}/{gateway}/cmd/# and community.alarm."""
a = "community.alarm"
b = f"{prefix}/{site}/{gw}/cmd/alarms/{alarm_id}/ack"
c = f"$share/{group}/{prefix}/+/+/status"
d = f"{base}/status"
e = "community/v1"
f = f"{prefix}/central/tickets/{ticket_id}"
g = "/kiosk/{kiosk}/status"
h = f"{every}/alarms/+"
'''
    lines = sorted(int(hit.split(":")[0]) for hit in _spelled(source))
    assert lines == [3, 4, 5, 6, 7, 8, 10]


def test_what_a_signature_covers_is_the_documented_lines() -> None:
    target = signing.signed_target(IDENTITY, CommandPath.alarm_ack("a-1"))
    assert target == "riverside/gw-1/cmd/alarms/a-1/ack"
    signed = signing.signed_message(
        target, "2026-12-06T17:00:00.000Z", "n" * 16, {"by": "李", "a": 1}
    )
    assert signed.decode().split("\n") == [
        "community.cmd.v1",
        "riverside/gw-1/cmd/alarms/a-1/ack",
        "2026-12-06T17:00:00.000Z",
        "n" * 16,
        '{"a":1,"by":"李"}',
    ]


def test_the_kiosks_request_statuses_are_the_contracts_plus_filed() -> None:
    # `filed` is the kiosk's own state until the platform answers; the rest it stores
    # as the platform sent them, so they must be the contract's words.
    from gateway.web.requests import RequestStatus

    assert {str(s) for s in RequestStatus} == {"filed"} | {
        str(s) for s in enums.RequestStatusUpdate
    }
