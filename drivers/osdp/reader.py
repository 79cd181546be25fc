"""One OSDP reader's state across bus restarts, and what is pure about it.

The driver (`driver.py`) keeps a `Reader` per configured device: its keys, keypad
buffer, allow list, reachability and retry backoff.  Deciding that a secure channel was
refused, describing why a reader is offline, and building the LED/buzzer commands of a
card decision take values and return values: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import osdp

from gateway.sdk.backoff import Backoff
from gateway.sdk.driver import DeviceSpec

from .allowlist import AllowList
from .events import Notification, NotificationType
from .keypad import KeypadBuffer
from .settings import Feedback, OsdpSettings, SecureChannel

__all__ = [
    "KEY_REFUSED_WITHIN_S",
    "RETRY_MAX_S",
    "Reader",
    "describe_offline",
    "feedback_commands",
    "key_refused",
    "retry_backoff",
]

RETRY_MAX_S = 300.0  # libosdp's own pause; never wait longer than it would
KEY_REFUSED_WITHIN_S = 3.0


def retry_backoff(first_s: float) -> Backoff:
    # Capped at libosdp's own pause, the first retry too: a reader is never left longer.
    return Backoff(min(first_s, RETRY_MAX_S), RETRY_MAX_S, jitter=False)


@dataclass(slots=True)
class Reader:
    """One reader's keys, buffers and reachability, kept across bus restarts."""

    spec: DeviceSpec
    settings: OsdpSettings
    secret: bytes
    scbk: bytes | None
    keypad: KeypadBuffer
    allow: AllowList | None
    online: bool | None = None  # None: not known yet on this bus start
    sc_active: bool = False
    sc_failed: bool = False
    started: float = 0.0
    retry_at: float | None = None
    retry: Backoff = field(default_factory=lambda: retry_backoff(10.0))
    quiet_until: float = 0.0  # notifications caused by our own reset are not news
    attempt: float = 0.0  # when libosdp last started to connect to the reader
    reason: str = ""
    tamper: bool = False
    keypad_reader_no: int = 0  # the reader (of a PD with several) being typed on
    caps: dict[str, bool] = field(default_factory=dict)

    @property
    def address(self) -> int:
        return self.settings.address


def key_refused(event: Notification, s: OsdpSettings, ts: float, attempt: float) -> bool:
    """True if `event` says the secure channel went down soon after connecting: a wrong key.

    libosdp also reports the secure channel down when a silent reader goes offline after
    ~8 s of probing; a refused key fails within a second.
    """
    return (
        event.type is NotificationType.SECURE_CHANNEL
        and event.arg0 == 0
        and s.secure_channel is not SecureChannel.OFF
        and ts - attempt < KEY_REFUSED_WITHIN_S
    )


def describe_offline(r: Reader) -> str:
    """Why the reader is offline, and what to check, in one line."""
    s = r.settings
    where = f"reader at address {s.address} on {s.port}"
    if r.sc_failed and s.secure_channel is SecureChannel.SCBK and s.scbk is not None:
        return (
            f"{where}: secure channel refused: the reader's key does not match the SCBK in "
            f"{s.scbk.file or s.scbk.env} (a new reader still in install mode needs "
            "secure_channel: install once)"
        )
    if r.sc_failed:
        return f"{where}: secure channel could not be set up (check the reader's key)"
    if r.online is None:
        return (
            f"{where}: no reply at {s.baudrate} baud (check power, A/B wiring, address, baud "
            "rate and termination)"
        )
    return f"{where}: stopped replying (power, cable, or the reader was replaced)"


def feedback_commands(
    mode: Feedback, caps: dict[str, bool], granted: bool, reader_no: int
) -> list[dict[str, Any]]:
    """The libosdp commands that show a card decision: LED green or red, a beep or three."""
    commands: list[dict[str, Any]] = []
    if mode is Feedback.NONE:
        return commands
    if caps.get("led"):
        color = osdp.CommandLEDColor.Green if granted else osdp.CommandLEDColor.Red
        commands.append(
            {
                "command": osdp.Command.LED,
                "reader": reader_no,
                "led_number": 0,
                "temporary": True,
                "control_code": 2,  # set the temporary state now
                "on_color": color,
                "off_color": osdp.CommandLEDColor.Black,
                "on_count": 5,
                "off_count": 0,
                "timer_count": 20,  # 2 s, then back to the permanent state
            }
        )
    if mode is Feedback.LED_AND_BUZZER and caps.get("buzzer"):
        commands.append(
            {
                "command": osdp.Command.Buzzer,
                "reader": reader_no,
                "control_code": 2,  # default tone
                "on_count": 2 if granted else 1,
                "off_count": 1,
                "rep_count": 1 if granted else 3,
            }
        )
    return commands
