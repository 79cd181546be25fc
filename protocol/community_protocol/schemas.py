"""The JSON Schemas of the payloads (schemas/*.json), loaded and ready to check.

The schemas are package data.  Each file's `$id` ends in its own file name
(`…/schemas/v1/envelope.json`) and the files refer to one another by relative
references (`envelope.json#/$defs/ts`), so a file-based tool resolves every `$ref` to
the file next to it, offline; `validator` resolves them from the packaged files, never
from the network.

jsonschema is imported inside `validator` only (the `validate` extra): a producer that
only builds documents needs nothing but the standard library.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING, Any

from .names import SCHEMA_FILES

if TYPE_CHECKING:
    from jsonschema.protocols import Validator
    from referencing import Registry

__all__ = ["SCHEMA_NAMES", "load_schema", "schema_dir", "validator"]

# Kept under its old name for the gateway's callers: the file stems, e.g. "telemetry".
SCHEMA_NAMES: tuple[str, ...] = SCHEMA_FILES


def schema_dir() -> Traversable:
    """The folder holding the schema files (for tools that read files, e.g. code generators)."""
    return resources.files(__package__).joinpath("schemas")


def load_schema(name: str) -> dict[str, Any]:
    """The schema `name` (e.g. "telemetry") as a fresh dict; ValueError for an unknown name."""
    if name not in SCHEMA_FILES:
        raise ValueError(f"no schema {name!r}; known: {', '.join(SCHEMA_FILES)}")
    text = schema_dir().joinpath(f"{name}.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _registry() -> Registry:
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    resources_ = []
    for name in SCHEMA_FILES:
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
