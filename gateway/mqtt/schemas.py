"""The JSON Schemas of the MQTT payloads (gateway/schemas/*.json), loaded and ready to check.

The schemas are package data; docs/mqtt-api.md explains them for the platform's
builders.  They refer to one another by `$id` (`envelope-1.json#/$defs/ts`), and
`validator` resolves those references from the packaged files, never from the network.

jsonschema is imported inside `validator` only, so the runtime imports this module
without needing jsonschema installed.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jsonschema.protocols import Validator
    from referencing import Registry

__all__ = ["SCHEMA_NAMES", "load_schema", "validator"]

# One entry per file in gateway/schemas/; tests/test_schemas.py checks the two agree.
SCHEMA_NAMES: tuple[str, ...] = (
    "envelope",
    "telemetry",
    "event",
    "gateway-event",
    "status",
    "availability",
    "health",
    "command-request",
    "command-reply",
    "alarm",
    "alarm-ack",
    "ticket",
    "service-request",
)


def load_schema(name: str) -> dict[str, Any]:
    """The schema `name` (e.g. "telemetry") as a fresh dict; ValueError for an unknown name."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"no schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    text = resources.files("gateway").joinpath("schemas", f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _registry() -> Registry:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resources_ = []
    for name in SCHEMA_NAMES:
        schema = load_schema(name)
        resources_.append(
            (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012))
        )
    # A registry without a retrieve function: an unknown $ref fails instead of fetching.
    return Registry().with_resources(resources_)


@cache
def validator(name: str, definition: str | None = None) -> Validator:
    """A draft 2020-12 validator for schema `name`, or for its `$defs/<definition>`.

    `validator("command-request", "alarm_ack")` checks the payload of one command.
    Call `.validate(doc)` to raise on the first problem, `.iter_errors(doc)` for all.
    """
    from jsonschema import Draft202012Validator

    schema_id = load_schema(name)["$id"]
    schema: dict[str, Any]
    if definition is None:
        schema = _registry().contents(schema_id)
    else:
        defs = load_schema(name).get("$defs", {})
        if definition not in defs:
            raise ValueError(f"schema {name!r} has no definition {definition!r}")
        schema = {"$ref": f"{schema_id}#/$defs/{definition}"}
    return Draft202012Validator(schema, registry=_registry())
