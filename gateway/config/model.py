"""The gateway's YAML configuration: the pydantic models of every core section.

`load_config` reads the file, validates the core sections, then each device's
`driver:` section with that driver's own model, and collects *every* problem with its
file, line and key path before raising `ConfigError`.  Nothing here connects anywhere.
Relative paths in the file are relative to the file's own folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from community_protocol.topics import DEFAULT_PREFIX
from gateway.alarms.settings import AlarmsConfig
from gateway.notify.settings import NotifyConfig
from gateway.sdk.clock import ClockCheck
from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import Identity, Kind
from gateway.sdk.problems import Problem
from gateway.sdk.secrets import SecretRef, refuse_inline
from gateway.security.settings import SecurityConfig
from gateway.sinks.settings import SinksConfig
from gateway.storage.sqlitestore import SyncMode
from gateway.web.settings import WebConfig
from gateway.wellness.settings import WellnessConfig

__all__ = [
    "CONFIG_VERSION",
    "BrokerConfig",
    "ClockCheck",
    "DeviceConfig",
    "GatewayConfig",
    "LoadedConfig",
    "LogFormat",
    "MqttProtocol",
    "SyncMode",
]

CONFIG_VERSION = 1
# Linux limits: a path (with its NUL) and one name in it.
PATH_MAX = 4096
NAME_MAX = 255
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttProtocol(StrEnum):
    MQTT5 = "mqtt5"
    MQTT311 = "mqtt311"


class TlsConfig(_Strict):
    """Server verification (CA), and optionally a client certificate for mutual TLS."""

    ca_file: Path | None = None  # None: the system's trusted CAs
    cert_file: Path | None = None
    key_file: Path | None = None  # a file only readable by the gateway's user

    def model_post_init(self, _: Any) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mutual TLS needs both cert_file and key_file")


class ReconnectConfig(_Strict):
    # A maximum of 8 s (jittered into 4..8 s) brings a gateway back within 10 s of its
    # broker; the attempts in between are TCP probes, cheap for a broker that is down.
    min_delay_s: float = Field(1.0, gt=0)
    max_delay_s: float = Field(8.0, gt=0)


class CommandLimits(_Strict):
    """How many commands a gateway takes: a rate, a burst, and how many run at once."""

    rate_per_s: float = Field(20.0, gt=0, le=10000)
    burst: int = Field(40, ge=1, le=10000)
    max_pending: int = Field(64, ge=1, le=10000)


class BrokerConfig(_Strict):
    """Where and how the gateway publishes."""

    url: str = Field(description="mqtt://host:port or mqtts://host:port")
    protocol: MqttProtocol = MqttProtocol.MQTT5
    client_id: str | None = None
    username: str | None = None
    password: SecretRef | None = None
    tls: TlsConfig | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    topic_prefix: str = DEFAULT_PREFIX
    max_inflight: int = Field(100, ge=1, le=1000)
    reconnect: ReconnectConfig = ReconnectConfig()
    # How long the broker keeps this gateway's session (and the commands sent to it)
    # while it is away; commands waiting longer are dropped by the broker.
    session_expiry_s: int = Field(86400, ge=0, le=4294967295)
    commands: CommandLimits = CommandLimits()

    _no_inline_password = field_validator("password", mode="before")(refuse_inline)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        if parts.username or parts.password:
            raise ValueError("put no credentials in the URL; use username and password")
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if (
            not value
            or any(c in value for c in "+#")
            or value.startswith("/")
            or value.endswith("/")
        ):
            raise ValueError("a topic prefix has no '+', '#', nor leading or trailing '/'")
        return value

    @property
    def host(self) -> str:
        host = urlsplit(self.url).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.uses_tls else 1883)

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


class OutboxConfig(_Strict):
    path: Path = Path("state/outbox.db")
    max_messages: int = Field(200_000, ge=100)
    commit_interval_ms: int = Field(50, ge=0, le=5000)
    # How long the writer waits for the next reading before committing (issue 16): set
    # it to commit_interval_ms for a fixed linger (older data, fewer SD-card writes).
    commit_quiet_ms: float = Field(2.0, ge=0, le=5000)
    sync: SyncMode = SyncMode.FULL
    # Disk space kept free for events (gateway/storage/diskspace.py); 0 turns the reserve off.
    reserve_bytes: int = Field(4 * 1024 * 1024, ge=0, le=1024**3)
    # Telemetry waits in a file in RAM until the broker has it, and goes to the SD card
    # only if the broker has not acknowledged it within spill_after_s (issue 16:
    # gateway/storage/outbox_ram.py).  false: every reading is committed to the card.
    memory_tier: bool = True
    spill_after_s: float = Field(1.0, ge=0.05, le=60)


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class SiteConfig(_Strict):
    id: Id
    name: str = ""


class GatewayIdConfig(_Strict):
    id: Id
    state_dir: Path = Path("state")


class HealthConfig(_Strict):
    interval_s: float = Field(60.0, ge=1)


class ClockConfig(_Strict):
    check: ClockCheck = ClockCheck.KERNEL


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: LogFormat = LogFormat.TEXT


class LocationConfig(_Strict):
    building: str = Field(min_length=1)
    floor: str | None = None
    unit: str | None = None

    @field_validator("building", "floor", "unit", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        # Installers write `floor: 3`; the model keeps it as text ("B1", "3", "roof").
        return str(value) if isinstance(value, int) else value


class DriverSection(BaseModel):
    """`type` picks the driver; every other key belongs to that driver's model."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


class DeviceConfig(_Strict):
    id: Id
    name: str = ""
    kind: Kind
    location: LocationConfig
    driver: DriverSection


class GatewayConfig(_Strict):
    """The whole file but its `devices`, which `LoadedConfig.devices` holds validated.

    The device sections as written are not kept beside them: 0.9 KB a device that a
    running gateway never read (docs/benchmarks.md, issue 16).
    """

    version: int
    site: SiteConfig
    gateway: GatewayIdConfig
    broker: BrokerConfig
    outbox: OutboxConfig = OutboxConfig()
    health: HealthConfig = HealthConfig()
    clock: ClockConfig = ClockConfig()
    logging: LoggingConfig = LoggingConfig()
    sinks: SinksConfig = SinksConfig()
    web: WebConfig = WebConfig()
    wellness: WellnessConfig = WellnessConfig()
    alarms: AlarmsConfig = AlarmsConfig()
    notify: NotifyConfig = NotifyConfig()
    security: SecurityConfig = SecurityConfig()

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != CONFIG_VERSION:
            raise ValueError(
                f"this gateway reads config version {CONFIG_VERSION}; "
                f"version {value} is not supported (see docs/config.md for what changed)"
            )
        return value

    @property
    def identity(self) -> Identity:
        return Identity(self.site.id, self.gateway.id)


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A fully validated config and the devices ready for their drivers."""

    path: Path
    config: GatewayConfig
    devices: tuple[DeviceSpec, ...]
    # Problems between devices, only with load_config(allow_conflicts=True): `run`
    # starts every device but these (see device_conflicts).
    conflicts: tuple[Problem, ...] = ()

    def devices_of(self, driver: str) -> list[DeviceSpec]:
        return [d for d in self.devices if d.driver == driver]

    def device(self, device_id: str) -> DeviceSpec:
        for spec in self.devices:
            if spec.id == device_id:
                return spec
        raise KeyError(f"no device {device_id!r} in {self.path}")
