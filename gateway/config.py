"""The gateway's YAML configuration: models, loading, and complete validation.

`load_config` reads the file, validates the core sections, then each device's
`driver:` section with that driver's own model, and collects *every* problem with its
file, line and key path before raising `ConfigError`.  Nothing here connects anywhere.
Relative paths in the file are relative to the file's own folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from gateway.alarms.settings import AlarmsConfig, alarms_problems
from gateway.driver import DeviceSpec, DriverInfo
from gateway.model import DeviceRef, Identity, Kind, Location
from gateway.notify.settings import NotifyConfig
from gateway.secrets import SecretRef, refuse_inline
from gateway.sinks.settings import SinksConfig
from gateway.web.settings import WebConfig
from gateway.wellness_settings import WellnessConfig, wellness_problems
from gateway.yamlsource import Located, Problem, YamlSyntaxError, load_located

__all__ = [
    "CONFIG_VERSION",
    "BrokerConfig",
    "ClockCheck",
    "ConfigError",
    "GatewayConfig",
    "LoadedConfig",
    "LogFormat",
    "MqttProtocol",
    "SecretRef",
    "SyncMode",
    "load_config",
    "pydantic_problems",
]

CONFIG_VERSION = 1
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
    topic_prefix: str = "community/v1"
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


class SyncMode(StrEnum):
    """`full` survives power loss; `normal` survives a crash of the process only."""

    FULL = "full"
    NORMAL = "normal"


class OutboxConfig(_Strict):
    path: Path = Path("state/outbox.db")
    max_messages: int = Field(200_000, ge=100)
    commit_interval_ms: int = Field(50, ge=0, le=5000)
    sync: SyncMode = SyncMode.FULL


class ClockCheck(StrEnum):
    """How the gateway knows its clock is right: the kernel's NTP flag, or trust it."""

    KERNEL = "kernel"
    TRUST = "trust"


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
    """The whole file, core sections only; device driver sections are checked after."""

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
    devices: list[DeviceConfig] = Field(default_factory=list)

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

    def devices_of(self, driver: str) -> list[DeviceSpec]:
        return [d for d in self.devices if d.driver == driver]

    def device(self, device_id: str) -> DeviceSpec:
        for spec in self.devices:
            if spec.id == device_id:
                return spec
        raise KeyError(f"no device {device_id!r} in {self.path}")


class ConfigError(Exception):
    """Raised with every problem found; str() lists them one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def pydantic_problems(
    src: Located, exc: ValidationError, prefix: tuple[str | int, ...] = ()
) -> list[Problem]:
    """A pydantic error as problems with file, line and key path (below `prefix`)."""
    problems = []
    for err in exc.errors():
        loc = (*prefix, *err["loc"])
        msg = err["msg"]
        if err["type"] == "missing":
            msg = "field required"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see the sample config)"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        problems.append(src.problem(loc, msg))
    return problems


def _resolve_paths(value: Any, base: Path) -> Any:
    """Make relative Path fields absolute against the config file's folder."""
    if isinstance(value, Path):
        return value if value.is_absolute() else (base / value)
    if isinstance(value, BaseModel):
        updates = {
            name: _resolve_paths(getattr(value, name), base) for name in type(value).model_fields
        }
        changed = {k: v for k, v in updates.items() if v is not getattr(value, k)}
        return value.model_copy(update=changed) if changed else value
    if isinstance(value, list):
        return [_resolve_paths(v, base) for v in value]
    return value


def _check_secrets(src: Located, cfg: GatewayConfig) -> list[Problem]:
    influx = cfg.sinks.influxdb
    refs: list[tuple[tuple[str | int, ...], SecretRef | None]] = [
        (("broker", "password"), cfg.broker.password),
        (("sinks", "influxdb", "token"), influx.token if influx is not None else None),
    ]
    problems = []
    for path, ref in refs:
        if ref is None:
            continue
        if ref.file is not None and not ref.file.is_file():
            problems.append(src.problem((*path, "file"), f"secret file {ref.file} not found"))
    tls = cfg.broker.tls
    if tls is not None:
        problems += _missing_files(
            src, ("broker", "tls"), tls, ("ca_file", "cert_file", "key_file")
        )
    if tls is not None and not cfg.broker.uses_tls:
        problems.append(
            src.problem(("broker", "url"), "tls is configured but the URL is mqtt://; use mqtts://")
        )
    if cfg.web.enabled and cfg.web.tls is not None:
        problems += _missing_files(src, ("web", "tls"), cfg.web.tls, ("cert_file", "key_file"))
    if cfg.notify.sms is not None:
        problems += _missing_files(src, ("notify", "sms"), cfg.notify.sms, ("pin_file",))
    return problems


def _missing_files(
    src: Located, where: tuple[str, ...], section: BaseModel, keys: tuple[str, ...]
) -> list[Problem]:
    """A problem for each of the section's file settings that names no file."""
    problems = []
    for key in keys:
        p = getattr(section, key)
        if p is not None and not p.is_file():
            problems.append(src.problem((*where, key), f"file {p} not found"))
    return problems


def _device_specs(
    src: Located, cfg: GatewayConfig, drivers: dict[str, DriverInfo]
) -> tuple[list[DeviceSpec], list[Problem]]:
    specs: list[DeviceSpec] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    base = Path(src.file).parent
    for i, dev in enumerate(cfg.devices):
        if dev.id in seen:
            problems.append(
                src.problem(
                    ("devices", i, "id"), f"duplicate id {dev.id!r} (also devices[{seen[dev.id]}])"
                )
            )
        seen.setdefault(dev.id, i)
        info = drivers.get(dev.driver.type)
        if info is None:
            known = ", ".join(sorted(drivers)) or "none installed"
            problems.append(
                src.problem(
                    ("devices", i, "driver", "type"),
                    f"unknown driver {dev.driver.type!r} (known: {known})",
                )
            )
            continue
        if dev.kind not in info.kinds:
            kinds = ", ".join(sorted(str(k) for k in info.kinds))
            problems.append(
                src.problem(
                    ("devices", i, "kind"),
                    f"driver {info.name} does not handle kind {dev.kind} (it handles: {kinds})",
                )
            )
        raw = dict(dev.driver.model_extra or {})
        try:
            settings = info.settings_model.model_validate(raw, context={"kind": dev.kind})
        except ValidationError as exc:
            problems.extend(pydantic_problems(src, exc, ("devices", i, "driver")))
            continue
        settings = _resolve_paths(settings, base)
        loc = dev.location
        ref = DeviceRef(dev.id, dev.kind, Location(loc.building, loc.floor, loc.unit))
        specs.append(DeviceSpec(ref=ref, settings=settings, name=dev.name, driver=info.name))
    return specs, problems


def _cross_device_problems(
    src: Located, cfg: GatewayConfig, specs: list[DeviceSpec], drivers: dict[str, DriverInfo]
) -> list[Problem]:
    # Each driver checks its devices against the others (a shared bus, a reader a door
    # takes grants from); run only once every device is valid on its own.
    index = {dev.id: i for i, dev in enumerate(cfg.devices)}
    problems: list[Problem] = []
    for name, info in sorted(drivers.items()):
        mine = [s for s in specs if s.driver == name]
        if info.check_devices is None or not mine:
            continue
        for p in info.check_devices(mine, specs):
            problems.append(
                src.problem(("devices", index[p.device_id], "driver", *p.path), p.message)
            )
    return problems


def load_config(path: Path, drivers: dict[str, DriverInfo] | None = None) -> LoadedConfig:
    """Read and validate a config file completely; raises ConfigError listing every problem."""
    if drivers is None:
        from gateway.registry import available_drivers

        drivers = available_drivers()
    try:
        src = load_located(path)
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from exc
    except YamlSyntaxError as exc:
        raise ConfigError([exc.problem]) from exc
    if not isinstance(src.data, dict):
        raise ConfigError([src.problem((), "the file must be a YAML mapping (key: value)")])
    if "version" not in src.data:
        raise ConfigError(
            [src.problem((), f"no 'version:' key; add 'version: {CONFIG_VERSION}' at the top")]
        )
    try:
        cfg = GatewayConfig.model_validate(src.data)
    except ValidationError as exc:
        problems = pydantic_problems(src, exc)
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0)) from exc
    cfg = _resolve_paths(cfg, path.parent)
    problems = _check_secrets(src, cfg)
    specs, device_problems = _device_specs(src, cfg, drivers)
    problems.extend(device_problems)
    if not device_problems:
        problems.extend(_cross_device_problems(src, cfg, specs, drivers))
        problems.extend(src.problem(p, m) for p, m in wellness_problems(cfg.wellness, specs))
        problems.extend(src.problem(p, m) for p, m in alarms_problems(cfg.alarms, specs))
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0))
    return LoadedConfig(path=path, config=cfg, devices=tuple(specs))
