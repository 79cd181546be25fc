"""Sending an update's bundle to one gateway over MQTT, in chunks, until it has them all.

The fleet announces the transfer in the `cmd/update` command (the signed manifest, and
`transfer`: id, size, SHA-256, chunk size and count; signed with the command key when
given), and the gateway answers with the chunks it still lacks.  The fleet publishes
those on `cmd/update/chunk` (QoS 1, each confirmed by the broker) and announces again,
until the answer lacks nothing: a chunk lost on the way, a reconnect or a restart of
the gateway in between cost only the chunks it did not keep.  What follows (the hash
checked, the install, the health gate) comes as `gateway.update` events, awaited by
the caller like those of an update fetched from a URL.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from community_protocol.chunks import DEFAULT_CHUNK_BYTES, Transfer, chunk_count, encode_chunk
from community_protocol.documents import dumps, format_ts
from community_protocol.ed25519 import CommandSigner
from community_protocol.topics import CommandPath, Topics

from ..broker import publish_properties
from .api import NO_ANSWER
from .link import FleetLink, Incoming

__all__ = ["ANNOUNCE_WAIT_S", "SENT", "Bundle", "SendResult", "send_bundle", "send_update"]

SENT, REFUSED = "sent", "refused"
# How long one announce waits for the gateway's answer before it is sent again.
ANNOUNCE_WAIT_S = 20.0


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle file checked against its manifest, and how it is cut into chunks."""

    path: Path
    size: int
    sha256: str
    chunk_size: int

    @classmethod
    def of(
        cls, path: Path, manifest: Mapping[str, Any], chunk_size: int = DEFAULT_CHUNK_BYTES
    ) -> Bundle:
        """The bundle at `path`; ValueError when it is not the manifest's archive."""
        archive = manifest.get("archive")
        if not isinstance(archive, dict):
            raise ValueError("the manifest has no 'archive' (is it an update manifest?)")
        try:
            size = path.stat().st_size
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
        except OSError as exc:
            raise ValueError(f"cannot read the bundle {path}: {exc.strerror}") from None
        if (size, digest.hexdigest()) != (archive.get("size"), archive.get("sha256")):
            raise ValueError(
                f"{path} is not the archive the manifest describes (its size or SHA-256 differs)"
            )
        return cls(path, size, digest.hexdigest(), chunk_size)

    def transfer(self) -> Transfer:
        """A new transfer of this bundle (a fresh id for each gateway)."""
        chunks = chunk_count(self.size, self.chunk_size)
        return Transfer(uuid.uuid4().hex, self.size, self.sha256, self.chunk_size, chunks)


@dataclass(frozen=True, slots=True)
class SendResult:
    """How sending went: `sent` (the gateway has it all), `refused` with the gateway's
    reason, or `no_answer`; and how many chunks and announces it took."""

    result: str
    reason: str
    chunks_sent: int
    announces: int


def send_bundle(
    link: FleetLink,
    topics: Topics,
    manifest: Mapping[str, Any],
    bundle: Bundle,
    *,
    signer: CommandSigner | None,
    deadline: float,
    held: deque[Incoming],
) -> SendResult:
    """Announce and send until the gateway has every chunk, or refuses, or `deadline` passes.

    Messages that are not the answer awaited go to `held`, for the caller.
    """
    transfer = bundle.transfer()
    sent = announces = 0
    while time.monotonic() < deadline:
        announces += 1
        reply = _announce(link, topics, manifest, transfer, signer, deadline, held)
        if reply is None:
            continue  # offline or reconnecting: announce again, it resumes where it was
        if reply.get("ok") is not True:
            error = reply.get("error")
            reason = error.get("message") if isinstance(error, dict) else error
            status = reply.get("status", "refused")
            return SendResult(REFUSED, f"{status}: {reason}", sent, announces)
        missing = (reply.get("result") or {}).get("missing")
        if not isinstance(missing, list):
            return SendResult(REFUSED, "the gateway's answer has no 'missing'", sent, announces)
        if not missing:
            return SendResult(SENT, "", sent, announces)
        sent += _send(link, topics, bundle, transfer, missing)
    return SendResult(NO_ANSWER, "no answer to the announce in time", sent, announces)


def _announce(
    link: FleetLink,
    topics: Topics,
    manifest: Mapping[str, Any],
    transfer: Transfer,
    signer: CommandSigner | None,
    deadline: float,
    held: deque[Incoming],
) -> dict[str, Any] | None:
    request_id = uuid.uuid4().hex
    fields = {"manifest": dict(manifest), "transfer": transfer.as_dict()}
    send_update(link, topics, request_id, fields, signer, max(1.0, deadline - time.monotonic()))
    # MQTT 5 gateways answer on our response topic, MQTT 3.1.1 ones on reply/update.
    replies = (topics.central_reply(link.client_id), topics.reply(CommandPath.UPDATE))
    until = min(deadline, time.monotonic() + ANNOUNCE_WAIT_S)
    while (msg := link.receive(until)) is not None:
        try:
            doc = json.loads(msg.payload) if msg.topic in replies else None
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("request_id") == request_id:
            return doc
        held.append(msg)
    return None


def send_update(
    link: FleetLink,
    topics: Topics,
    request_id: str,
    fields: Mapping[str, Any],
    signer: CommandSigner | None,
    stale_after_s: float,
) -> None:
    """Publish one `cmd/update` command (signed when `signer`), its answer to our topic."""
    # Stale after the wait: a gateway offline now must not install it next week.
    expires = format_ts(datetime.now(UTC) + timedelta(seconds=stale_after_s))
    body = {"request_id": request_id, "expires": expires, **fields}
    payload = signer.sign(topics.identity, CommandPath.UPDATE, body) if signer is not None else body
    link.publish(
        topics.command(CommandPath.UPDATE),
        dumps(payload),
        retain=False,
        properties=publish_properties(
            ResponseTopic=topics.central_reply(link.client_id),
            CorrelationData=request_id.encode(),
        ),
    )


def _send(
    link: FleetLink, topics: Topics, bundle: Bundle, transfer: Transfer, missing: list[Any]
) -> int:
    """Publish the chunks in the `missing` ranges; how many."""
    topic = topics.command(CommandPath.UPDATE_CHUNK)
    sent = 0
    with open(bundle.path, "rb") as f:
        for span in missing:
            first, last = int(span[0]), int(span[1])
            for index in range(max(0, first), min(last, transfer.chunks - 1) + 1):
                offset, length = transfer.span(index)
                f.seek(offset)
                link.publish(topic, encode_chunk(transfer.id, index, f.read(length)), retain=False)
                sent += 1
    return sent
