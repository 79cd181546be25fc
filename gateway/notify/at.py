"""The AT dialogue of a GSM/4G modem, as pure parsing (3GPP TS 27.007 and 27.005).

Lines in, meanings out: which line ends a command, what an error code means to an
installer, whether the modem is registered on the network and whether its SIM is ready.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Final", "Outcome", "final_of", "registration", "sim_state"]

# +CMS ERROR codes (TS 27.005 3.2.5) an installer can act on; the rest print as numbers.
_CMS = {
    38: "network out of order",
    41: "temporary network failure",
    42: "network congestion",
    50: "SMS not subscribed for this SIM",
    300: "modem failure",
    302: "operation not allowed",
    304: "invalid PDU",
    310: "no SIM inserted",
    311: "SIM needs its PIN",
    316: "SIM needs its PUK",
    330: "SMS centre number unknown (set it on the SIM with AT+CSCA)",
    331: "no network service",
    332: "network timeout",
    500: "unknown error",
}
_CME = {
    10: "no SIM inserted",
    11: "SIM needs its PIN",
    12: "SIM needs its PUK",
    30: "no network service",
}
# Errors that the next attempt may not have: the network, not the message, is at fault.
_TRANSIENT_CMS = {38, 41, 42, 300, 331, 332, 500}

_ERROR = re.compile(r"^\+(CMS|CME) ERROR:\s*(.+)$")
_CREG = re.compile(r"^\+C(?:E|G)?REG:\s*(?:\d+\s*,\s*)?(\d+)")
_REGISTERED = {1: "home", 5: "roaming"}
_NOT_REGISTERED = {
    0: "not registered and not searching",
    2: "searching for a network",
    3: "registration denied",
    4: "unknown registration state",
}


class Outcome(StrEnum):
    """How a command ended."""

    OK = "ok"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Final:
    """The line that ended a command; `reason` explains an error, `transient` says retry."""

    outcome: Outcome
    reason: str = ""
    transient: bool = True


def final_of(line: str) -> Final | None:
    """The final result a line is, or None for an intermediate or unsolicited line."""
    text = line.strip()
    if text == "OK":
        return Final(Outcome.OK)
    if text in ("ERROR", "NO CARRIER"):
        return Final(Outcome.ERROR, f"modem answered {text}")
    match = _ERROR.match(text)
    if match is None:
        return None
    family, value = match[1], match[2].strip()
    if not value.isdigit():  # AT+CMEE=2 gives words already
        return Final(Outcome.ERROR, f"+{family} ERROR: {value}")
    code = int(value)
    table = _CMS if family == "CMS" else _CME
    meaning = table.get(code, "see 3GPP TS 27.005" if family == "CMS" else "see 3GPP TS 27.007")
    transient = code in _TRANSIENT_CMS if family == "CMS" else code == 30
    return Final(Outcome.ERROR, f"+{family} ERROR {code} ({meaning})", transient)


def registration(lines: list[str]) -> tuple[bool, str]:
    """Whether the answer to AT+CREG? says registered, and the state in words."""
    for line in lines:
        match = _CREG.match(line.strip())
        if match:
            stat = int(match[1])
            if stat in _REGISTERED:
                return True, f"registered ({_REGISTERED[stat]})"
            return False, _NOT_REGISTERED.get(stat, f"registration state {stat}")
    return False, "no +CREG line in the answer"


def sim_state(lines: list[str]) -> str:
    """The SIM's state from the answer to AT+CPIN? (`READY`, `SIM PIN`, ...)."""
    for line in lines:
        text = line.strip()
        if text.startswith("+CPIN:"):
            return text.split(":", 1)[1].strip()
    return "unknown"
