"""Config models of the sinks: the `sinks:` section of the gateway config.

Imports nothing of the runtime, so `gateway.config` can use it without a cycle.
Validated with the rest of the file by `gateway validate`; nothing here connects.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.sdk.secrets import SecretRef, refuse_inline

__all__ = ["InfluxConfig", "RetryConfig", "SinksConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryConfig(_Strict):
    """Backoff between failed writes: doubles from min to max, with jitter."""

    min_delay_s: float = Field(1.0, gt=0)
    max_delay_s: float = Field(60.0, gt=0)

    def model_post_init(self, _: Any) -> None:
        if self.min_delay_s > self.max_delay_s:
            raise ValueError("min_delay_s must not exceed max_delay_s")


class InfluxConfig(_Strict):
    """Where and how meter telemetry is written to an InfluxDB v2 write endpoint."""

    url: str = Field(description="http://host:8086 or https://host:8086")
    org: str = Field(min_length=1)
    bucket: str = Field(min_length=1)
    token: SecretRef | None = None
    # Also the prefix of VictoriaMetrics' series names (`meter_power`): a plain name.
    measurement: str = Field("meter", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
    batch_size: int = Field(500, ge=1, le=5000)
    flush_interval_s: float = Field(1.0, gt=0, le=60)
    retry: RetryConfig = RetryConfig()
    timeout_s: float = Field(10.0, gt=0, le=300)

    _no_inline_token = field_validator("token", mode="before")(refuse_inline)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must look like http://host:8086 or https://host:8086")
        if parts.username or parts.password:
            raise ValueError("put no credentials in the URL; use token")
        return value


class SinksConfig(_Strict):
    """Optional extra destinations of the outbox besides MQTT; none by default."""

    influxdb: InfluxConfig | None = None
