"""A zigbee2mqtt device's `driver:` section, validated before anything connects."""

from __future__ import annotations

from collections.abc import Mapping as AnyMapping
from collections.abc import Sequence
from typing import Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from drivers.zigbee2mqtt.mapping import DEFAULT_MAPPING, Mapping, load_mapping, mapping_names
from gateway.sdk.devicechecks import SharedLine
from gateway.sdk.driver import DeviceProblem, DeviceSpec
from gateway.sdk.model import Kind

__all__ = ["Zigbee2MqttSettings", "check_devices"]


def _topic_part(what: str, value: str) -> str:
    if not value or any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
        raise ValueError(f"{what} has no '+', '#', nor leading or trailing '/'")
    return value


class Zigbee2MqttSettings(BaseModel):
    """One Zigbee device, by the friendly name zigbee2mqtt knows it by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    broker_url: str = Field("mqtt://127.0.0.1:1883", description="zigbee2mqtt's own broker")
    base_topic: str = "zigbee2mqtt"
    friendly_name: str = Field(min_length=1, description="as in zigbee2mqtt's devices list")
    mapping: str | None = Field(None, description="a file in profiles/; default: by kind")

    @field_validator("broker_url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise ValueError(
                "must look like mqtt://127.0.0.1:1883: zigbee2mqtt's broker runs on the "
                "gateway or next to it, without TLS"
            )
        if parts.username or parts.password:
            raise ValueError("put no credentials in the URL")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        return value

    @field_validator("base_topic")
    @classmethod
    def _base(cls, value: str) -> str:
        return _topic_part("base_topic", value)

    @field_validator("friendly_name")
    @classmethod
    def _name(cls, value: str) -> str:
        _topic_part("friendly_name", value)
        if value.endswith("/availability") or value in ("bridge",) or value.startswith("bridge/"):
            raise ValueError(f"{value!r} is a topic of zigbee2mqtt itself, not a device name")
        return value

    @field_validator("mapping")
    @classmethod
    def _mapping(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value not in mapping_names():
            raise ValueError(f"unknown mapping {value!r} (known: {', '.join(mapping_names())})")
        return value

    @model_validator(mode="after")
    def _default_mapping(self, info: ValidationInfo) -> Self:
        if self.mapping is not None:
            return self
        ctx = info.context
        kind = ctx.get("kind") if isinstance(ctx, AnyMapping) else None
        name = DEFAULT_MAPPING.get(Kind(kind)) if kind is not None else None
        if name is None:
            raise ValueError(
                f"no default mapping for kind {kind}; set mapping: to one of "
                f"{', '.join(mapping_names())}"
            )
        # Frozen: record the default the way a user would have written it.
        object.__setattr__(self, "mapping", name)
        return self

    @property
    def profile(self) -> Mapping:
        assert self.mapping is not None
        return load_mapping(self.mapping)

    @property
    def host(self) -> str:
        host = urlsplit(self.broker_url).hostname
        assert host is not None
        return host

    @property
    def port(self) -> int:
        return urlsplit(self.broker_url).port or 1883


def check_devices(mine: Sequence[DeviceSpec], _every: Sequence[DeviceSpec]) -> list[DeviceProblem]:
    """Each device has its own friendly name on its zigbee2mqtt broker.

    Two devices on one name get the same messages: a smoke alarm would be filed under
    either, so both are in conflict.
    """
    brokers = SharedLine("broker")
    for spec in mine:
        s = spec.settings_as(Zigbee2MqttSettings)
        brokers.claim(
            spec,
            f"{s.host}:{s.port} ({s.base_topic}/)",
            "friendly_name",
            s.friendly_name,
            "each device has its own name in zigbee2mqtt",
        )
    return brokers.problems
