"""The fleet operations as a Python API: list, push, roll out in waves, audit.

`Fleet` holds the broker settings and the audit database; each operation opens its own
short connection (`FleetLink`).  A push publishes, per gateway, a desired document
signed for it (retained, QoS 1: a gateway offline now gets it when it comes back) and
then waits for that gateway's reported document about that very version: `applied`,
`refused` (nothing changed) or `rolled_back` (tried, did not come back in time, the
previous config runs again).  No answer within the wait is reported as such, never as
success.  A rollout pushes in waves, canary first, and stops at the first wave with
any outcome other than `applied`: the gateways after it are not touched.

The version of a push is one above anything the gateway reported (running or desired)
and anything this fleet pushed to it before, so a gateway never sees an old version
again (it refuses those) and a version it rolled back is never reused.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from community_protocol.documents import dumps
from community_protocol.ed25519 import key_id
from community_protocol.enums import ConfigResult, GatewayEventType
from community_protocol.ids import Identity
from community_protocol.schemas import validator
from community_protocol.topics import Topics

from ..broker import BrokerSettings
from .audit import AuditRow, AuditStore
from .desired import desired_for
from .inventory import GatewayView, Inventory, Selector, acceptable
from .link import FleetLink

__all__ = ["Fleet", "PushOutcome", "RolloutReport", "WaveFn", "audit_trail"]

NO_ANSWER = "no_answer"
QUIET_S = 0.3
# One wave of a rollout: its gateways in, their outcomes out (in the same order).
WaveFn = Callable[
    [FleetLink, Inventory, "AuditStore | None", list[GatewayView]], list["PushOutcome"]
]
FINAL = frozenset({ConfigResult.APPLIED, ConfigResult.REFUSED, ConfigResult.ROLLED_BACK})


@dataclass(frozen=True, slots=True)
class PushOutcome:
    """How one gateway answered one push: a ConfigResult value, or `no_answer`."""

    site: str
    gateway: str
    version: int | str  # a config version, or a software release (update)
    result: str
    reason: str = ""
    problems: tuple[dict[str, str], ...] = ()
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result == ConfigResult.APPLIED

    @property
    def key(self) -> str:
        return f"{self.site}/{self.gateway}"

    def row(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "gateway": self.gateway,
            "version": self.version,
            "result": self.result,
            "reason": self.reason,
            "problems": list(self.problems),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class RolloutReport:
    """The waves pushed, the outcome that stopped the rollout, and who was not touched."""

    waves: list[list[PushOutcome]] = field(default_factory=list)
    stopped_by: PushOutcome | None = None
    not_pushed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.stopped_by is None


class Fleet:
    """Fleet operations against one broker, recording to one audit database (optional)."""

    def __init__(
        self,
        broker: BrokerSettings,
        db: str | Path | None = None,
        *,
        max_gateways: int = 10_000,
        settle_s: float = 5.0,
    ) -> None:
        self.broker = broker
        self.db = db
        self.max_gateways = max_gateways
        # The most time retained documents get to arrive before a push; it ends sooner,
        # at the first quiet moment (the broker sends them right after the SUBACK).
        self.settle_s = settle_s
        self.topics = Topics.fleet(broker.prefix)
        self._event_check = validator("gateway-event")

    # ---- list ------------------------------------------------------------------------

    def gateways(
        self, selector: Selector | None = None, *, listen_s: float = 2.0
    ) -> list[GatewayView]:
        """Every gateway with a retained document under the prefix (or those selected).

        Health is not retained: a gateway's outbox depth shows when one of its health
        messages arrives within `listen_s`.
        """
        inventory = Inventory(self.broker.prefix, self.max_gateways)
        with FleetLink(self.broker) as link:
            link.subscribe(*inventory.filters)
            self.drain(link, inventory, time.monotonic() + listen_s)
        if selector is None:
            return [v for _, v in sorted(inventory.gateways.items())]
        return inventory.select(selector)

    # ---- push and rollout ---------------------------------------------------------------

    def push(
        self,
        selector: Selector,
        config: Mapping[str, Any],
        key: Ed25519PrivateKey,
        signed_by: str,
        *,
        wait_s: float = 120.0,
    ) -> list[PushOutcome]:
        """Push `config` to every selected gateway at once; their outcomes, sorted."""
        report = self.rollout(
            selector, config, key, signed_by, canary=10**9, batch=1, wait_s=wait_s
        )
        return [o for wave in report.waves for o in wave]

    def rollout(
        self,
        selector: Selector,
        config: Mapping[str, Any],
        key: Ed25519PrivateKey,
        signed_by: str,
        *,
        canary: int = 1,
        batch: int = 10,
        wait_s: float = 120.0,
    ) -> RolloutReport:
        """Push in waves (`canary` gateways, then `batch` at a time); stop at the first failure."""

        def wave(
            link: FleetLink, inv: Inventory, audit: AuditStore | None, views: list[GatewayView]
        ) -> list[PushOutcome]:
            return self._wave(link, inv, audit, views, config, key, signed_by, wait_s)

        return self.in_waves(selector, canary, batch, wave, ConfigResult.APPLIED)

    def in_waves(
        self,
        selector: Selector,
        canary: int,
        batch: int,
        wave: WaveFn,
        success: str,
        filters: Callable[[FleetLink], list[str]] = lambda _link: [],
    ) -> RolloutReport:
        """Run `wave` on the selected gateways, `canary` first, then `batch` at a time.

        The first wave with an outcome other than `success` ends it: the gateways of
        the later waves are named in the report and never touched.  `filters` adds
        subscriptions (they may depend on the link's client id).
        """
        if canary < 1 or batch < 1:
            raise ValueError("canary and batch are at least 1")
        inventory = Inventory(self.broker.prefix, self.max_gateways)
        report = RolloutReport()
        audit = AuditStore(self.db) if self.db is not None else None
        try:
            with FleetLink(self.broker) as link:
                link.subscribe(*inventory.filters, self.topics.gateway_events, *filters(link))
                self.settle(link, inventory, audit)
                targets = self.targets(inventory, selector)
                if not targets:
                    raise LookupError(
                        f"no gateway matches {' '.join(selector.patterns)} under {self.broker.prefix}"
                    )
                rest = targets[canary:]
                waves = [
                    targets[:canary],
                    *(rest[i : i + batch] for i in range(0, len(rest), batch)),
                ]
                for n, views in enumerate(waves):
                    outcomes = wave(link, inventory, audit, views)
                    report.waves.append(outcomes)
                    failed = next((o for o in outcomes if o.result != success), None)
                    if failed is not None:
                        report.stopped_by = failed
                        report.not_pushed = [v.key for w in waves[n + 1 :] for v in w]
                        break
        finally:
            if audit is not None:
                audit.close()
        return report

    def targets(self, inventory: Inventory, selector: Selector) -> list[GatewayView]:
        found = {v.key: v for v in inventory.select(selector)}
        for identity in selector.exact():
            # A gateway that never published (or whose documents expired) can still be
            # configured by name: its desired document waits retained for it.
            key = f"{identity.site}/{identity.gateway}"
            if key not in found:
                found[key] = GatewayView(identity.site, identity.gateway)
        return [found[k] for k in sorted(found)]

    def _wave(
        self,
        link: FleetLink,
        inventory: Inventory,
        audit: AuditStore | None,
        wave: list[GatewayView],
        config: Mapping[str, Any],
        key: Ed25519PrivateKey,
        signed_by: str,
        wait_s: float,
    ) -> list[PushOutcome]:
        kid = key_id(key.public_key())
        pending: dict[str, tuple[GatewayView, int, float]] = {}
        for view in wave:
            version = self._next_version(view, audit)
            doc = desired_for(
                Identity(view.site, view.gateway),
                config,
                version=version,
                key=key,
                signed_by=signed_by,
            )
            payload = dumps(doc)
            link.publish(
                Topics.of(self.broker.prefix, view.site, view.gateway).config_desired, payload
            )
            pending[view.key] = (view, version, time.monotonic())
            if audit is not None:
                audit.record(
                    AuditRow(
                        time.time(), "pushed", view.site, view.gateway, version, "published",
                        signed_by, kid, hashlib.sha256(payload).hexdigest(),
                    )
                )  # fmt: skip
        outcomes: dict[str, PushOutcome] = {}
        deadline = time.monotonic() + wait_s
        while len(outcomes) < len(pending):
            msg = link.receive(deadline)
            if msg is None:
                break
            updated = self.take(inventory, audit, msg.topic, msg.payload)
            if updated is None or updated.key not in pending or updated.key in outcomes:
                continue
            view, version, started = pending[updated.key]
            doc = updated.reported or {}
            if doc.get("desired_version") == version and doc.get("result") in FINAL:
                outcome = PushOutcome(
                    view.site,
                    view.gateway,
                    version,
                    str(doc["result"]),
                    str(doc.get("reason", "")),
                    tuple(doc.get("problems", ())),
                    time.monotonic() - started,
                )
                outcomes[view.key] = outcome
                self._record_outcome(audit, outcome, doc)
        for k, (view, version, started) in pending.items():
            if k not in outcomes:
                outcomes[k] = PushOutcome(
                    view.site, view.gateway, version, NO_ANSWER,
                    f"no reported document for version {version} within {wait_s:g} s"
                    f" (gateway {view.state or 'never seen'})",
                    seconds=time.monotonic() - started,
                )  # fmt: skip
                self._record_outcome(audit, outcomes[k], {})
        return [outcomes[v.key] for v in wave]

    @staticmethod
    def _next_version(view: GatewayView, audit: AuditStore | None) -> int:
        seen = [view.config_version or 0, view.desired_version or 0]
        if audit is not None:
            seen.append(audit.last_pushed_version(view.site, view.gateway))
        return max(seen) + 1

    @staticmethod
    def _record_outcome(audit: AuditStore | None, o: PushOutcome, doc: Mapping[str, Any]) -> None:
        if audit is None:
            return
        audit.record(
            AuditRow(
                time.time(), "reported", o.site, o.gateway,
                o.version if isinstance(o.version, int) else None, o.result,
                doc.get("signed_by"), None, doc.get("sha256"), o.reason,
            )
        )  # fmt: skip

    # ---- audit -------------------------------------------------------------------------

    def watch(
        self,
        stop: threading.Event,
        *,
        on_row: Callable[[AuditRow], None] | None = None,
        ready: threading.Event | None = None,
    ) -> int:
        """Record every `gateway.config` and `gateway.update` event until `stop` is set; how many were new.

        `ready` is set once the broker confirmed the subscription.  Events published
        while no watcher runs are not seen (they are not retained): push and rollout
        record those they wait for; run the watcher as a service for the rest.
        """
        if self.db is None:
            raise ValueError("watching needs an audit database")
        audit = AuditStore(self.db)
        stored = 0
        try:
            with FleetLink(self.broker) as link:
                link.subscribe(self.topics.gateway_events)
                if ready is not None:
                    ready.set()
                while not stop.is_set():
                    msg = link.receive(time.monotonic() + 0.2)
                    if msg is None:
                        continue
                    row = self.event_row(msg.topic, msg.payload)
                    if row is not None and audit.record(row):
                        stored += 1
                        if on_row is not None:
                            on_row(row)
        finally:
            audit.close()
        return stored

    def audit(self, selector: Selector | None = None, *, limit: int = 100) -> list[AuditRow]:
        """The audit trail, newest first (of the selected gateways)."""
        if self.db is None:
            raise ValueError("the audit trail needs an audit database")
        return audit_trail(self.db, selector, limit=limit)

    # ---- incoming messages -----------------------------------------------------------

    def drain(
        self,
        link: FleetLink,
        inventory: Inventory,
        until: float,
        audit: AuditStore | None = None,
    ) -> None:
        while (msg := link.receive(until)) is not None:
            self.take(inventory, audit, msg.topic, msg.payload)

    def settle(self, link: FleetLink, inventory: Inventory, audit: AuditStore | None) -> None:
        """Take the retained documents: until `settle_s`, or a quiet `QUIET_S` before it.

        A gateway whose reported document has not arrived would get a version too low
        (and refuse it without a word), so this errs on the long side: health
        messages of a busy fleet keep it from ever being quiet, up to `settle_s`.
        """
        until = time.monotonic() + self.settle_s
        while (msg := link.receive(min(until, time.monotonic() + QUIET_S))) is not None:
            self.take(inventory, audit, msg.topic, msg.payload)

    def take(
        self, inventory: Inventory, audit: AuditStore | None, topic: str, payload: bytes
    ) -> GatewayView | None:
        if audit is not None:
            row = self.event_row(topic, payload)
            if row is not None:
                audit.record(row)
                return None
        return inventory.feed(topic, payload)

    def event_row(self, topic: str, payload: bytes) -> AuditRow | None:
        parts = self.topics.split(topic)
        if parts is None or len(parts) != 3 or parts[2] != "events":
            return None
        try:
            doc = json.loads(payload)
        except ValueError:
            return None
        if (
            not isinstance(doc, dict)
            or not acceptable(self._event_check, doc)
            or (doc["site"], doc["gateway"]) != parts[:2]
        ):
            return None
        event = doc["event"]
        data = event["data"]
        if event["type"] == GatewayEventType.UPDATE:
            return AuditRow(
                time.time(), "event", doc["site"], doc["gateway"], None, data["result"],
                None, data.get("key_id"), None, data.get("reason", ""), doc["msg_id"],
                str(data["version"]),
            )  # fmt: skip
        if event["type"] != GatewayEventType.CONFIG:
            return None
        return AuditRow(
            time.time(), "event", doc["site"], doc["gateway"], data.get("version"),
            data["result"], data.get("signed_by"), data.get("key_id"), None,
            data.get("reason", ""), doc["msg_id"],
        )  # fmt: skip


def audit_trail(
    db: str | Path, selector: Selector | None = None, *, limit: int = 100
) -> list[AuditRow]:
    """The audit trail in `db`, newest first (of the selected gateways); no broker needed."""
    audit = AuditStore(db)
    try:
        # Globs are matched here, not in SQL: read a bounded window, then filter.
        rows = audit.rows(limit=limit if selector is None else max(limit * 20, 10_000))
    finally:
        audit.close()
    if selector is not None:
        rows = [r for r in rows if selector.matches(r.site, r.gateway)][:limit]
    return rows
