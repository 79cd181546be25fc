"""The MQTT topic tree in both directions (docs/mqtt-api.md): every topic, spelled once.

`Topics` is one gateway's subtree, `{prefix}/{site}/{gateway}/…`: what it publishes
(status, health, devices' telemetry, events and availability, alarms, requests), the
commands it receives under `cmd/` and the replies it sends under `reply/`.
`Topics.fleet(prefix)` is the same tree with `+` for site and gateway: the filters a
central service subscribes to.  `CentralTopics` adds what the central side itself
publishes (tickets) and its MQTT 5 shared subscriptions.  `CommandPath` spells the
paths below `cmd/` (and below `reply/` for MQTT 3.1.1 gateways).
"""

from __future__ import annotations

from dataclasses import dataclass

from .ids import Identity

__all__ = [
    "ANY",
    "DEFAULT_PREFIX",
    "DEVICE_CHANNELS",
    "CentralTopics",
    "CommandPath",
    "Topics",
    "shared",
]

DEFAULT_PREFIX = "community/v1"
ANY = "+"  # one topic level, any value (an MQTT subscription wildcard)
# The channels of a device's subtree: `{base}/devices/{device}/{channel}`.
DEVICE_CHANNELS = ("telemetry", "events", "availability")


def _unchecked(site: str, gateway: str) -> Identity:
    """An Identity without the id check: `+` wildcards for the fleet's filters, and ids
    taken from topics a central service received (the broker's ACLs vouch for them)."""
    identity = object.__new__(Identity)
    object.__setattr__(identity, "site", site)
    object.__setattr__(identity, "gateway", gateway)
    return identity


class CommandPath:
    """The paths below `cmd/`: a command's family is its first level (`alarms`, `requests`)."""

    PING = "ping"
    ALARMS = "alarms"
    DEVICES = "devices"
    REQUESTS = "requests"
    # Remote diagnostics (docs/fleet.md): always signed, rate-limited, never a shell.
    DIAG = "diag"
    DIAG_CHECK = "diag/check"
    DIAG_OUTBOX = "diag/outbox"
    DIAG_HEALTH = "diag/health"
    DIAG_LOGS = "diag/logs"
    DIAG_READ = "diag/read"
    DIAG_RESTART = "diag/restart"
    DIAG_COMMANDS = (DIAG_CHECK, DIAG_OUTBOX, DIAG_HEALTH, DIAG_LOGS, DIAG_READ, DIAG_RESTART)
    # Software updates (docs/fleet.md): a manifest signed by an update key, and a URL.
    UPDATE = "update"
    # The chunks of an update delivered over MQTT (community_protocol.chunks): raw
    # bytes behind a header line, not a JSON command; never answered.
    UPDATE_CHUNK = "update/chunk"
    # The shapes of each family, as error messages show them.
    ALARM_ACK_FORM = "cmd/alarms/{alarm_id}/ack"
    REQUEST_STATUS_FORM = "cmd/requests/{code}/status"
    DEVICE_FORM = "cmd/devices/{device}/{command}"
    DIAG_FORM = "cmd/diag/{check|outbox|health|logs|read|restart}"

    @staticmethod
    def alarm_ack(alarm_id: str) -> str:
        """A staff acknowledgement of one alarm (alarm-ack.json)."""
        return f"alarms/{alarm_id}/ack"

    @staticmethod
    def request_status(code: str) -> str:
        """A status update of a resident's request (command-request.json request_status)."""
        return f"requests/{code}/status"

    @staticmethod
    def device(device_id: str, command: str) -> str:
        """A command run by a device's driver, e.g. `devices/door-1/unlock`."""
        return f"devices/{device_id}/{command}"

    @staticmethod
    def is_alarm_ack(parts: tuple[str, ...]) -> bool:
        return len(parts) == 3 and parts[0] == CommandPath.ALARMS and parts[2] == "ack"

    @staticmethod
    def is_request_status(parts: tuple[str, ...]) -> bool:
        return len(parts) == 3 and parts[0] == CommandPath.REQUESTS and parts[2] == "status"


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one gateway under a prefix, e.g. community/v1/site-a/gw-1/status."""

    prefix: str
    identity: Identity

    @classmethod
    def fleet(cls, prefix: str) -> Topics:
        """Every gateway under `prefix`: the same names with `+` for site and gateway."""
        return cls(prefix, _unchecked(ANY, ANY))

    @classmethod
    def of(cls, prefix: str, site: str, gateway: str) -> Topics:
        """One gateway's topics; ValueError for an id that cannot be a topic level."""
        return cls(prefix, Identity(site, gateway))

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.identity.site}/{self.identity.gateway}"

    @property
    def everything(self) -> str:
        """Filter for the whole subtree (what a gateway may publish to)."""
        return f"{self.base}/#"

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
    def config_desired(self) -> str:
        """The platform's signed desired configuration of this gateway (retained, QoS 1)."""
        return f"{self.base}/config/desired"

    @property
    def config_reported(self) -> str:
        """What configuration this gateway runs and how the last desired one went (retained)."""
        return f"{self.base}/config/reported"

    def check(self, token: str) -> str:
        """Where `gateway check` publishes a probe and reads it back; `#` for the filter."""
        return f"{self.base}/check/{token}"

    @property
    def commands(self) -> str:
        """Subscription filter for every command addressed to this gateway."""
        return f"{self.base}/cmd/#"

    def command(self, path: str) -> str:
        """The topic of the command `path` (a `CommandPath`), e.g. …/cmd/alarms/a1/ack."""
        return f"{self.base}/cmd/{path}"

    def command_path(self, topic: str) -> str | None:
        """'…/cmd/alarms/a1/ack' -> 'alarms/a1/ack'; None for a topic that is not ours."""
        head = f"{self.base}/cmd/"
        return topic[len(head) :] if topic.startswith(head) else None

    def reply(self, path: str) -> str:
        """Reply topic for MQTT 3.1.1 clients, which have no response-topic property."""
        return f"{self.base}/reply/{path}"

    def central_reply(self, client_id: str) -> str:
        """An MQTT 5 response topic of the central client `client_id` (`#`: every client).

        It lies in the gateway's own subtree, where its ACL lets it publish.
        """
        return f"{self.base}/reply/central/{client_id}"

    def split(self, topic: str) -> tuple[str, ...] | None:
        """The levels after the prefix, or None for a topic outside it."""
        head = self.prefix + "/"
        return tuple(topic[len(head) :].split("/")) if topic.startswith(head) else None


def shared(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription: each message goes to one member of `group`."""
    return f"$share/{group}/{topic_filter}"


@dataclass(frozen=True, slots=True)
class CentralTopics:
    """The central ticket service's topics under a prefix (docs/mqtt-api.md, "Tickets")."""

    prefix: str
    group: str
    client_id: str

    @property
    def fleet(self) -> Topics:
        return Topics.fleet(self.prefix)

    @property
    def alarms(self) -> str:
        return self.fleet.alarm(ANY)

    @property
    def shared_alarms(self) -> str:
        return shared(self.group, self.alarms)

    @property
    def shared_replies(self) -> str:
        """Replies of gateways on MQTT 3.1.1, which cannot use our response topic."""
        return shared(self.group, self.fleet.reply(CommandPath.alarm_ack(ANY)))

    @property
    def shared_status(self) -> str:
        """Gateways' status: an acknowledgement waiting for one goes out when it is online."""
        return shared(self.group, self.fleet.status)

    @property
    def replies(self) -> str:
        """Subscription for this instance's MQTT 5 response topics, in every gateway."""
        return self.fleet.central_reply(self.client_id)

    def gateway(self, site: str, gateway: str) -> Topics:
        return Topics(self.prefix, _unchecked(site, gateway))

    def reply_to(self, site: str, gateway: str) -> str:
        """The response topic for a command to one gateway, in that gateway's own subtree."""
        return self.gateway(site, gateway).central_reply(self.client_id)

    def ticket(self, ticket_id: str) -> str:
        return self.ticket_topic(self.prefix, ticket_id)

    @staticmethod
    def ticket_topic(prefix: str, ticket_id: str) -> str:
        """A ticket's retained state (ticket.json), outside every gateway's subtree."""
        return f"{prefix}/central/tickets/{ticket_id}"

    def ack_command(self, site: str, gateway: str, alarm_id: str) -> str:
        return self.gateway(site, gateway).command(CommandPath.alarm_ack(alarm_id))

    def split(self, topic: str) -> tuple[str, ...] | None:
        """The levels after the prefix, or None for a topic outside it."""
        return self.fleet.split(topic)
