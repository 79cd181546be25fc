"""The MQTT topic contract (docs/mqtt-api.md): every topic the gateway uses, in one place."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.sdk.model import Identity

__all__ = ["Topics"]


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one gateway under a prefix, e.g. community/v1/site-a/gw-1/status."""

    prefix: str
    identity: Identity

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.identity.site}/{self.identity.gateway}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        return f"{self.base}/health"

    @property
    def gateway_events(self) -> str:
        """Events of the gateway itself, not of a device (`gateway.storage`)."""
        return f"{self.base}/events"

    def availability(self, device_id: str) -> str:
        return f"{self.base}/devices/{device_id}/availability"

    def device(self, device_id: str, channel: str) -> str:
        """`channel` is "telemetry" or "events"."""
        return f"{self.base}/devices/{device_id}/{channel}"

    def alarm(self, alarm_id: str) -> str:
        return f"{self.base}/alarms/{alarm_id}"

    def request(self, code: str) -> str:
        """A resident's service request filed on a kiosk (gateway/web)."""
        return f"{self.base}/requests/{code}"

    @property
    def commands(self) -> str:
        """Subscription filter for every command addressed to this gateway."""
        return f"{self.base}/cmd/#"

    def command_path(self, topic: str) -> str | None:
        """'…/cmd/alarms/a1/ack' -> 'alarms/a1/ack'; None for a topic that is not ours."""
        head = f"{self.base}/cmd/"
        return topic[len(head) :] if topic.startswith(head) else None

    def reply(self, path: str) -> str:
        """Reply topic for MQTT 3.1.1 clients, which have no response-topic property."""
        return f"{self.base}/reply/{path}"
