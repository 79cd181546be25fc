"""What the fleet knows of each gateway, folded from the documents gateways publish.

Sources (docs/mqtt-api.md): the retained status (online or offline, software version),
the retained reported configuration (config version and how the last desired one went)
and the periodic health (outbox depth; not retained, so it is seen only when one
arrives while we listen).  Each document must pass its JSON Schema and name the
gateway of its topic (fields the schema does not know are tolerated: a newer gateway
may add some); anything else is ignored and counted.  At most `max_gateways`
gateways are kept, so a broker with junk under the prefix costs bounded memory.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from community_protocol.ids import Identity
from community_protocol.schemas import validator
from community_protocol.topics import Topics

__all__ = ["GatewayView", "Inventory", "Selector"]

MAX_GATEWAYS = 10_000


@dataclass
class GatewayView:
    """One gateway as the fleet sees it; None where no document said it yet."""

    site: str
    gateway: str
    state: str | None = None  # online / offline (status.json)
    software: str | None = None
    config_version: int | None = None
    config_result: str | None = None
    desired_version: int | None = None
    config_sha256: str | None = None
    reason: str = ""
    outbox_depth: int | None = None
    last_seen: str | None = None  # the newest `ts` of any of its documents (RFC 3339 UTC)
    reported: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        return f"{self.site}/{self.gateway}"

    def seen(self, ts: Any) -> None:
        # Same format everywhere (format_ts), so the string order is the time order.
        if isinstance(ts, str) and (self.last_seen is None or ts > self.last_seen):
            self.last_seen = ts

    def row(self) -> dict[str, Any]:
        """The JSON form `fleet list --json` prints."""
        return {
            "site": self.site,
            "gateway": self.gateway,
            "state": self.state,
            "software": self.software,
            "config_version": self.config_version,
            "config_result": self.config_result,
            "desired_version": self.desired_version,
            "reason": self.reason,
            "outbox_depth": self.outbox_depth,
            "last_seen": self.last_seen,
        }


@dataclass(frozen=True, slots=True)
class Selector:
    """Which gateways an operation is for: `site/gateway` patterns (shell globs), any of them."""

    patterns: tuple[str, ...]

    @classmethod
    def parse(cls, values: Iterable[str]) -> Selector:
        """`site-a/gw-1`, `site-a/*`, `*/*`; ValueError naming a pattern that is not site/gateway."""
        out = []
        for value in values:
            if value.count("/") != 1 or not all(value.split("/")):
                raise ValueError(f"{value!r}: write SITE/GATEWAY (globs allowed: site-a/*)")
            out.append(value)
        if not out:
            raise ValueError("name at least one SITE/GATEWAY")
        return cls(tuple(out))

    def exact(self) -> list[Identity]:
        """The targets named without a glob (they need no inventory to be found)."""
        found = []
        for p in self.patterns:
            if not any(c in p for c in "*?["):
                site, gateway = p.split("/")
                found.append(Identity(site, gateway))
        return found

    def matches(self, site: str, gateway: str) -> bool:
        return any(fnmatch.fnmatchcase(f"{site}/{gateway}", p) for p in self.patterns)


def acceptable(check: Any, doc: Mapping[str, Any]) -> bool:
    """Valid, except for fields this schema does not know: a newer gateway may add some
    (a tolerant reader), but a known field of the wrong type or missing is refused."""
    return all(e.validator == "additionalProperties" for e in check.iter_errors(doc))


class Inventory:
    """Gateways by `site/gateway`, updated by `feed(topic, payload)`."""

    def __init__(self, prefix: str, max_gateways: int = MAX_GATEWAYS) -> None:
        self.fleet = Topics.fleet(prefix)
        self.max_gateways = max_gateways
        self.gateways: dict[str, GatewayView] = {}
        self.ignored = 0  # documents that failed their schema or named another gateway
        self.overflow = 0  # documents of gateways beyond max_gateways
        self._checks = {
            ("status",): validator("status"),
            ("health",): validator("health"),
            ("config", "reported"): validator("config-reported"),
        }

    @property
    def filters(self) -> list[str]:
        """What to subscribe to for this inventory."""
        return [self.fleet.status, self.fleet.health, self.fleet.config_reported]

    def feed(self, topic: str, payload: bytes) -> GatewayView | None:
        """Fold one message in; the gateway it updated, or None if it was not for us."""
        parts = self.fleet.split(topic)
        if parts is None or len(parts) < 3:
            return None
        site, gateway, rest = parts[0], parts[1], tuple(parts[2:])
        check = self._checks.get(rest)
        if check is None:
            return None
        try:
            doc = json.loads(payload)
        except ValueError:
            self.ignored += 1
            return None
        if not isinstance(doc, Mapping) or not acceptable(check, doc):
            self.ignored += 1
            return None
        if doc.get("site") != site or doc.get("gateway") != gateway:
            self.ignored += 1
            return None
        view = self._view(site, gateway)
        if view is None:
            return None
        view.seen(doc.get("ts"))
        if rest == ("status",):
            view.state = doc["state"]
            view.software = doc["version"]
        elif rest == ("health",):
            view.outbox_depth = doc["outbox"]["depth"]
        else:
            self.take_reported(view, doc)
        return view

    @staticmethod
    def take_reported(view: GatewayView, doc: Mapping[str, Any]) -> None:
        view.reported = dict(doc)
        view.config_version = doc["version"]
        view.config_result = doc["result"]
        view.desired_version = doc.get("desired_version")
        view.config_sha256 = doc["sha256"]
        view.reason = doc.get("reason", "")

    def _view(self, site: str, gateway: str) -> GatewayView | None:
        key = f"{site}/{gateway}"
        view = self.gateways.get(key)
        if view is None:
            if len(self.gateways) >= self.max_gateways:
                self.overflow += 1
                return None
            view = self.gateways[key] = GatewayView(site, gateway)
        return view

    def select(self, selector: Selector) -> list[GatewayView]:
        """The gateways the selector names, sorted by site/gateway."""
        return [v for k, v in sorted(self.gateways.items()) if selector.matches(v.site, v.gateway)]
