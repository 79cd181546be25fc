"""Who a document is about: site, gateway and device ids, which are also MQTT topic levels."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ID_PATTERN", "Identity", "check_id"]

# The same pattern as envelope.json `$defs/id`; tests/test_protocol.py checks they agree.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_ID = re.compile(ID_PATTERN)


def check_id(what: str, value: str) -> None:
    """ValueError unless `value` can be a topic level: no '/', '+', '#' or spaces, 1-64 chars."""
    if not _ID.match(value):
        raise ValueError(
            f"{what} {value!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
        )


@dataclass(frozen=True, slots=True)
class Identity:
    """Which site and gateway a message comes from."""

    site: str
    gateway: str

    def __post_init__(self) -> None:
        check_id("site id", self.site)
        check_id("gateway id", self.gateway)
