"""The `web:` section of the gateway config: where the local web listens, and its limits.

Validated with the rest of the config, before anything listens.  Relative paths are
relative to the config file's folder, like every other path in the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from community_protocol.enums import Lang as ProtocolLang

__all__ = ["KioskConfig", "Lang", "SigninLimit", "WebConfig", "WebLimits", "WebTls"]

KioskId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Languages of the kiosk and the staff console: those a service request may carry.
Lang = ProtocolLang


class WebTls(_Strict):
    """HTTPS with the installer's certificate and key (PEM files)."""

    cert_file: Path
    key_file: Path  # readable only by the gateway's user


class SigninLimit(_Strict):
    """Failed sign-ins allowed per client address and per staff id before a lockout."""

    max_failures: int = Field(5, ge=1, le=100)
    window_s: float = Field(300.0, gt=0)
    lockout_s: float = Field(60.0, gt=0)


class WebLimits(_Strict):
    """What one client (source address) and all clients together may hold open.

    Kiosks behind one lobby PC or router share an address, so the per-client caps are
    several times what one screen needs (one event stream, a few connections).
    """

    connections_per_client: int = Field(64, ge=4, le=10_000)
    connections_total: int = Field(512, ge=8, le=100_000)
    # Event streams, counted apart for the kiosk and the console, so that a flood of
    # kiosk streams never takes the console's.
    streams_per_client: int = Field(16, ge=1, le=1000)
    streams_total: int = Field(128, ge=1, le=10_000)
    # Unknown request codes looked up ("check my request") per client per window: the
    # codes are short, so guessing them must be slow; a known code costs nothing.
    wrong_codes_per_client: int = Field(20, ge=1, le=10_000)
    wrong_codes_window_s: float = Field(600.0, gt=0)
    # Refusals are logged once, then summed up once per this interval.
    log_every_s: float = Field(60.0, gt=0)


class KioskConfig(_Strict):
    """The resident kiosk(s): one screen per id, at /kiosk/{id}."""

    ids: list[KioskId] = Field(default_factory=lambda: ["lobby"], min_length=1)
    default_lang: Lang = Lang.ZH
    # Service requests accepted per window from one client (source address) and, as a
    # ceiling, by one kiosk from all its clients; more are refused with a message that
    # says to call the office (at `office_phone`).  Several screens behind one lobby PC
    # or router share an address, and so the client budget.
    max_requests_per_client: int = Field(10, ge=1, le=1000)
    max_requests: int = Field(60, ge=1, le=10_000)
    window_s: float = Field(600.0, gt=0)
    # The property office's phone number, shown to a resident the limit refuses.
    office_phone: str | None = Field(None, pattern=r"^\+?[0-9][0-9 ()-]{2,23}$")
    # Requests (with the flat, phone and text a resident typed) are deleted this many
    # days after they were filed: the platform keeps the record, the gateway need not.
    keep_days: int = Field(90, ge=1, le=3650)

    @field_validator("ids")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("kiosk ids must be unique")
        return value


class WebConfig(_Strict):
    """The staff console and the resident kiosk, served by the gateway process."""

    enabled: bool = False
    # Loopback by default so that turning the web on never exposes it by surprise; a
    # lobby kiosk or office PC on the LAN needs the installer to set the LAN address
    # (or 0.0.0.0) on purpose.
    bind: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    tls: WebTls | None = None
    # None: staff.json in the gateway's state_dir.
    staff_file: Path | None = None
    # None: web.db in the gateway's state_dir (service requests and their statuses).
    db_path: Path | None = None
    session_idle_s: float = Field(8 * 3600, gt=0)
    # The console's language until a staff member switches (kept in a cookie).
    console_lang: Lang = Lang.ZH
    # IANA name (Asia/Shanghai) of the zone the screens show times in; None: the system's.
    timezone: str | None = None
    signin: SigninLimit = SigninLimit()
    limits: WebLimits = WebLimits()
    kiosk: KioskConfig = KioskConfig()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}: give an IANA name such as Asia/Shanghai"
            ) from exc
        return value

    @field_validator("bind")
    @classmethod
    def _bind(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("bind must be one address, e.g. 127.0.0.1, 192.168.1.10 or 0.0.0.0")
        return value
