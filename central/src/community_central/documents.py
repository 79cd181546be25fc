"""The alarm documents the service reads, checked before anything is stored.

A document must pass its JSON Schema (gateway/schemas/alarm.json, the one contract
both sides import) and agree with its topic: the site and gateway in a document are
what a gateway claims, the topic is what the broker's ACL let it publish to, so a
document about another gateway than its topic names is refused (a spoofing attempt, or
a bug).  Only the fields a ticket needs are then modelled.  A document that fails is
skipped with a reason and a kind, for the service's counters, never half-applied.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .contract import AlarmState, Severity, validator
from .ids import Id

__all__ = [
    "MAX_ALARM_BYTES",
    "AlarmAck",
    "AlarmDoc",
    "AlarmState",
    "BadAlarm",
    "parse_alarm",
    "parse_ts",
]

# A real alarm document is about 700 bytes; anything near this is not one.
MAX_ALARM_BYTES = 64 * 1024


class BadAlarm(ValueError):
    """A message on an alarm topic that is not a usable alarm document; says why.

    `kind`: "malformed" (too big, not a JSON object), "schema" (fails alarm.json) or
    "mismatch" (about another site, gateway or alarm than its topic names).
    """

    def __init__(self, message: str, kind: str = "malformed") -> None:
        super().__init__(message)
        self.kind = kind


def _schema_error(raw: dict[str, Any]) -> str | None:
    """The first way `raw` fails alarm.json, or None."""
    from jsonschema.exceptions import best_match

    err = best_match(validator("alarm").iter_errors(raw))
    if err is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return f"{where.lstrip('.') or 'document'}: {err.message[:200]}"


class _SchemaRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["community.alarm"]
    version: Literal[1]


class AlarmAck(BaseModel):
    """Who acknowledged an alarm, and how."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    by: str = Field(min_length=1, max_length=64)
    note: str = Field("", max_length=500)
    at: str | None = None
    via: str | None = None


class AlarmDoc(BaseModel):
    """One alarm state message (`community.alarm` version 1), as far as tickets need it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_: _SchemaRef = Field(alias="schema")
    site: Id
    gateway: Id
    alarm_id: Id
    rev: int = Field(ge=0)
    type: str = Field(min_length=1, max_length=64)
    severity: Severity
    state: AlarmState
    acknowledged: bool
    cleared: bool
    raised_at: str
    device: dict[str, Any] = Field(default_factory=dict)
    cause: str | None = None
    ack: AlarmAck | None = None

    def raised_ts(self) -> float:
        return parse_ts(self.raised_at)

    def as_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def parse_ts(text: str) -> float:
    """Unix seconds of a contract timestamp such as 2026-11-27T04:00:00.123Z."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "document"
    msg = "field required" if err["type"] == "missing" else err["msg"]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {msg}{more}"


def parse_alarm(site: str, gateway: str, alarm_id: str, payload: bytes) -> AlarmDoc:
    """The alarm document in `payload` published on that gateway's alarm topic.

    Raises BadAlarm saying what is wrong: too big, not JSON, about another alarm than
    its topic names, or failing the alarm's JSON Schema.
    """
    if len(payload) > MAX_ALARM_BYTES:
        raise BadAlarm(f"{len(payload)} bytes, more than the {MAX_ALARM_BYTES} an alarm may have")
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadAlarm(f"not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BadAlarm(f"a JSON {type(raw).__name__}, not an object")
    problem = _schema_error(raw)
    if problem is not None:
        raise BadAlarm(f"fails alarm.json: {problem}", "schema")
    claimed = (raw.get("site"), raw.get("gateway"), raw.get("alarm_id"))
    if claimed != (site, gateway, alarm_id):
        raise BadAlarm(
            "document is about {}/{}/{}, the topic names {}/{}/{}".format(
                *(str(c)[:64] for c in claimed), site, gateway, alarm_id
            ),
            "mismatch",
        )
    try:
        doc = AlarmDoc.model_validate(raw)
    except ValidationError as exc:
        raise BadAlarm(_first_error(exc), "schema") from exc
    try:
        doc.raised_ts()
    except ValueError as exc:
        raise BadAlarm(f"raised_at: {doc.raised_at!r} is not a timestamp") from exc
    if doc.acknowledged and doc.ack is None:
        raise BadAlarm("acknowledged is true but there is no ack")
    return doc
