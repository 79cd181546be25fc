"""Rolling a software update out in waves: the `update` command to each gateway, its outcome awaited.

The release is described by a manifest signed with an update key (the bundle's, made
where the release is built; docs/fleet.md, "Software updates"): the fleet sends it
as is, with the URL of the bundle, in the `cmd/update` command (QoS 1, not
retained; signed with a command key when given, for gateways that require signed
commands).  A gateway answers the command at once (`refused` with the reason, or
`accepted`), then installs the release beside the running one, switches, and reports
the end in a `gateway.update` event: `committed` (its health gate passed) or
`rolled_back` (the previous release runs again).  A wave waits for every gateway's
end; the first wave with anything but `committed` stops the rollout.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from community_protocol.chunks import DEFAULT_CHUNK_BYTES
from community_protocol.ed25519 import CommandSigner
from community_protocol.ids import Identity
from community_protocol.topics import CommandPath, Topics

from .api import NO_ANSWER, Fleet, PushOutcome, RolloutReport
from .audit import AuditRow, AuditStore
from .chunks import SENT, Bundle, SendResult, send_bundle, send_update
from .inventory import GatewayView, Inventory, Selector
from .link import FleetLink, Incoming

__all__ = ["COMMITTED", "roll_update"]

COMMITTED = "committed"
FINAL = frozenset({COMMITTED, "rolled_back", "refused"})


def roll_update(
    fleet: Fleet,
    selector: Selector,
    manifest: Mapping[str, Any],
    url: str | None,
    *,
    bundle: Path | None = None,
    chunk_size: int = DEFAULT_CHUNK_BYTES,
    signer: CommandSigner | None = None,
    canary: int = 1,
    batch: int = 10,
    wait_s: float = 900.0,
) -> RolloutReport:
    """Update the selected gateways in waves (`canary`, then `batch` at a time).

    The gateways fetch the bundle from `url`, or, with `bundle` (a file here) instead,
    receive it over MQTT in chunks of `chunk_size` (`fleet.chunks`).
    """
    release = manifest.get("version")
    if not isinstance(release, str) or not release:
        raise ValueError("the manifest has no 'version' (is it an update manifest?)")
    if (url is None) == (bundle is None):
        raise ValueError("give the bundle's URL, or the bundle file to send over MQTT")
    source: str | Bundle
    if bundle is not None:
        source = Bundle.of(bundle, manifest, chunk_size)
    else:
        assert url is not None
        source = url
    every = Topics.fleet(fleet.broker.prefix)

    def wave(
        link: FleetLink, _inv: Inventory, audit: AuditStore | None, views: list[GatewayView]
    ) -> list[PushOutcome]:
        return _wave(fleet, link, audit, views, dict(manifest), release, source, signer, wait_s)

    return fleet.in_waves(
        selector, canary, batch, wave, COMMITTED,
        lambda link: [every.central_reply(link.client_id), every.reply(CommandPath.UPDATE)],
    )  # fmt: skip


def _wave(
    fleet: Fleet,
    link: FleetLink,
    audit: AuditStore | None,
    wave: list[GatewayView],
    manifest: dict[str, Any],
    release: str,
    source: str | Bundle,
    signer: CommandSigner | None,
    wait_s: float,
) -> list[PushOutcome]:
    pending: dict[str, tuple[GatewayView, str, float]] = {}
    by_request: dict[str, str] = {}
    held: deque[Incoming] = deque()  # what arrived while a bundle was being sent
    sent: dict[str, SendResult] = {}
    url = source if isinstance(source, str) else f"mqtt:{source.path.name}"
    deadline = time.monotonic() + wait_s
    for view in wave:
        identity = Identity(view.site, view.gateway)
        topics = Topics(fleet.broker.prefix, identity)
        request_id = uuid.uuid4().hex
        if isinstance(source, Bundle):
            pending[view.key] = (view, request_id, time.monotonic())
            sent[view.key] = send_bundle(
                link, topics, manifest, source, signer=signer, deadline=deadline, held=held
            )
            done = sent[view.key]
            what = f"update sent over MQTT: {done.chunks_sent} chunks, {done.announces} announces"
            _pushed(audit, view, release, url, signer, what)
            continue
        send_update(link, topics, request_id, {"manifest": manifest, "url": url}, signer, wait_s)
        pending[view.key] = (view, request_id, time.monotonic())
        by_request[request_id] = view.key
        _pushed(audit, view, release, url, signer, "update sent")
    outcomes: dict[str, PushOutcome] = {}

    def end(key: str, result: str, reason: str) -> None:
        view, _, started = pending[key]
        o = PushOutcome(view.site, view.gateway, release, result, reason,
                        seconds=time.monotonic() - started)  # fmt: skip
        outcomes[key] = o
        if audit is not None:
            audit.record(
                AuditRow(time.time(), "reported", o.site, o.gateway, None, o.result,
                         reason=o.reason, release=release)
            )  # fmt: skip

    for key, result in sent.items():
        if result.result != SENT:
            end(key, result.result, result.reason)
    while len(outcomes) < len(pending):
        msg = held.popleft() if held else link.receive(deadline)
        if msg is None:
            break
        parts = fleet.topics.split(msg.topic)
        if parts is None or len(parts) < 3:
            continue
        key = f"{parts[0]}/{parts[1]}"
        if key not in pending or key in outcomes:
            other = fleet.event_row(msg.topic, msg.payload)
            if other is not None and audit is not None:
                audit.record(other)
            continue
        if parts[2] == "reply":
            refused = _refusal(msg.payload, by_request)
            if refused is not None and refused[0] == key:
                end(key, "refused", refused[1])
            continue
        row = fleet.event_row(msg.topic, msg.payload)
        if row is None:
            continue
        if audit is not None:
            audit.record(row)
        if row.release == release and row.result in FINAL:
            end(key, row.result, row.reason)
    for key, (view, _, _) in pending.items():
        if key not in outcomes:
            end(
                key,
                NO_ANSWER,
                f"no end of the update within {wait_s:g} s (gateway {view.state or 'never seen'})",
            )
    return [outcomes[v.key] for v in wave]


def _pushed(
    audit: AuditStore | None,
    view: GatewayView,
    release: str,
    url: str,
    signer: CommandSigner | None,
    what: str,
) -> None:
    if audit is not None:
        audit.record(
            AuditRow(
                time.time(), "pushed", view.site, view.gateway, None, what,
                None, signer.key_id if signer else None, None, url, release=release,
            )
        )  # fmt: skip


def _refusal(payload: bytes, by_request: Mapping[str, str]) -> tuple[str, str] | None:
    """(gateway key, reason) when `payload` is a reply refusing one of our commands."""
    try:
        reply = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(reply, dict) or reply.get("ok") is not False:
        return None
    key = by_request.get(str(reply.get("request_id")))
    if key is None:
        return None
    error = reply.get("error")
    reason = error.get("message") if isinstance(error, dict) else error
    return key, f"{reply.get('status', 'refused')}: {reason}"
