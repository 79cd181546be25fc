"""A gateway's MQTT side of remote configuration, scripted, for the fleet command's tests.

It speaks the contract as `gateway.fleet` does (retained status and reported documents,
Ed25519 verification of each desired document, a `gateway.config` audit event) and
answers with what its `answer` function says, so a test can make a canary roll back.
The real gateway processes are in central/tests/test_fleet_e2e.py.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from community_protocol.documents import (
    config_reported_document,
    dumps,
    reply_document,
    status_document,
)
from community_protocol.ed25519 import SignatureError, verify_config
from community_protocol.enums import ClockState, ConfigResult, GatewayState
from community_protocol.ids import Identity
from community_protocol.names import SchemaName, schema_ref
from community_protocol.topics import CommandPath, Topics

__all__ = ["ScriptedGateway", "health_document"]

Answer = Callable[[dict[str, Any]], tuple[ConfigResult, str]]


def apply_all(_doc: dict[str, Any]) -> tuple[ConfigResult, str]:
    return ConfigResult.APPLIED, ""


class ScriptedGateway:
    """One gateway's documents on a real broker; `answer` decides each desired document."""

    def __init__(
        self, port: int, prefix: str, identity: Identity, key: Ed25519PublicKey,
        answer: Answer = apply_all, *, depth: int = 7, update: str = "committed",
    ) -> None:  # fmt: skip
        self.topics = Topics(prefix, identity)
        self.identity = identity
        self.key = key
        self.answer = answer
        self.depth = depth
        self.update = update  # how an update command ends: committed, rolled_back, refused
        self.software = "1.2.3"
        self.commands: list[dict[str, Any]] = []
        self.version = 0
        self.seq = 0
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"gw-{uuid.uuid4().hex[:8]}",
            protocol=mqtt.MQTTv5,
        )
        self.client.on_connect = lambda c, *_: c.subscribe(
            [(self.topics.config_desired, 1), (self.topics.commands, 1)]
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def start(self) -> ScriptedGateway:
        now = datetime.now(UTC)
        status = status_document(
            GatewayState.ONLINE, session=1, identity=self.identity, version="1.2.3",
            started=now, ts=now, clock=ClockState.SYNCED,
        )  # fmt: skip
        self._publish(self.topics.status, status, retain=True)
        self._report(ConfigResult.APPLIED, None, "")
        self.health()
        return self

    def health(self) -> None:
        self._publish(self.topics.health, health_document(self.identity, self.depth), retain=False)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _publish(self, topic: str, doc: dict[str, Any], *, retain: bool) -> None:
        info = self.client.publish(topic, dumps(doc), qos=1, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:  # not after stop(): the test is over
            info.wait_for_publish(5)

    def _report(
        self, result: ConfigResult, desired: int | None, reason: str, signed_by: str | None = None
    ) -> None:
        doc = config_reported_document(
            self.identity, version=self.version, sha256=hashlib.sha256(b"%d" % self.version).hexdigest(),
            applied_at=None, signed_by=signed_by, result=result, desired_version=desired,
            previous_version=None, problems=[], ts=datetime.now(UTC), clock=ClockState.SYNCED,
            reason=reason,
        )  # fmt: skip
        self._publish(self.topics.config_reported, doc, retain=True)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        doc = json.loads(msg.payload)
        if self.topics.command_path(msg.topic) == CommandPath.UPDATE:
            threading.Thread(target=self._on_update, args=(doc, msg.properties)).start()
            return
        with self._lock:
            self.received.append(doc)
        try:
            kid: str | None = verify_config(self.identity, [self.key], doc)
            result, reason = self.answer(doc)
        except SignatureError as exc:
            kid, result, reason = None, ConfigResult.REFUSED, str(exc)
        if doc["version"] <= self.version:
            return  # an old retained document, as the real gateway ignores it
        if result is ConfigResult.APPLIED:
            self.version = doc["version"]
        # The reported document first: the fleet waits for it; then the audit event.
        threading.Thread(target=self._answer, args=(doc, result, reason, kid)).start()

    def _answer(
        self, doc: dict[str, Any], result: ConfigResult, reason: str, kid: str | None
    ) -> None:
        self._report(result, doc["version"], reason, doc.get("signed_by"))
        self.seq += 1
        event = {
            "schema": schema_ref(SchemaName.GATEWAY_EVENT), "msg_id": uuid.uuid4().hex,
            "seq": self.seq, "ts": _now(), "clock": "synced", "site": self.identity.site,
            "gateway": self.identity.gateway,
            "event": {"type": "gateway.config", "data": {
                "result": str(result), "version": doc["version"], "running_version": self.version,
                "signed_by": doc.get("signed_by"), "key_id": kid, "reason": reason,
            }},
        }  # fmt: skip
        self._publish(self.topics.gateway_events, event, retain=False)

    def _on_update(self, args: dict[str, Any], props: Any) -> None:
        """As gateway.fleet.update_service answers: a reply now, the end as events."""
        self.commands.append(args)
        release = args["manifest"]["version"]
        ok = self.update != "refused"
        extra = {"result": {"version": release, "result": "accepted"}} if ok else {
            "error": "the manifest's signature does not verify"}  # fmt: skip
        reply = reply_document(
            CommandPath.UPDATE, args.get("request_id"), ok, "ok" if ok else "refused", **extra
        )
        reply.update(ts=_now(), clock="synced")
        to = getattr(props, "ResponseTopic", None) or self.topics.reply(CommandPath.UPDATE)
        self.client.publish(to, dumps(reply), qos=1)
        if not ok:
            self._event("gateway.update", {"result": "refused", "version": release,
                        "running_version": self.software, "reason": extra["error"]})  # fmt: skip
            return
        self._event("gateway.update", {"result": "switched", "version": release,
                    "running_version": self.software})  # fmt: skip
        if self.update == "committed":
            self.software = release
        data = {"result": self.update, "version": release, "running_version": self.software}
        if self.update == "rolled_back":
            data["reason"] = "the health gate did not pass within 60 s"
        self._event("gateway.update", data)

    def _event(self, kind: str, data: dict[str, Any]) -> None:
        self.seq += 1
        event = {
            "schema": schema_ref(SchemaName.GATEWAY_EVENT), "msg_id": uuid.uuid4().hex,
            "seq": self.seq, "ts": _now(), "clock": "synced", "site": self.identity.site,
            "gateway": self.identity.gateway, "event": {"type": kind, "data": data},
        }  # fmt: skip
        self._publish(self.topics.gateway_events, event, retain=False)


def _now() -> str:
    from community_protocol.documents import format_ts

    return format_ts(datetime.now(UTC))


def health_document(identity: Identity, depth: int) -> dict[str, Any]:
    """A valid health document (health.json) whose outbox depth is `depth`."""
    return {
        "schema": schema_ref(SchemaName.HEALTH), "site": identity.site,
        "gateway": identity.gateway, "ts": _now(), "session": 1, "uptime_s": 10.0,
        "clock": "synced",
        "outbox": {
            "depth": depth, "depth_events": 0, "depth_telemetry": depth, "oldest_age_s": None,
            "dropped_telemetry": 0, "accepted_total": 0, "commits_total": 0,
            "bytes_written_per_hour": 0.0, "disk_write_bytes_per_hour": None, "queued": 0,
            "lowest_seq": 1, "free_bytes": None, "reserve_bytes": 0, "unstored_events": 0,
        },
        "publish": {
            "published_total": 0, "acked_total": 0, "rate_per_s": 0.0, "inflight": 0,
            "connected": True, "connects_total": 1,
        },
        "drivers": {},
        "from_a_newer_gateway": {"tolerated": True},
    }  # fmt: skip
