"""A GSM modem simulator on the far end of a pty pair: the AT dialogue of TS 27.005.

The notifier's peer in tests: it answers AT commands like a Quectel/SIMCom module in
PDU mode, decodes what it is asked to send with its own PDU decoder (an oracle written
apart from gateway.notify.pdu), and can misbehave on request: refuse sends with
`+CMS ERROR`, lose its network registration, want a SIM PIN, or stop answering.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ModemSim", "Sms", "alarm_doc", "decode_submit"]

_GSM7 = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXT = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~"}
_GSM7_EXT |= {0x3E: "]", 0x40: "|", 0x65: "€"}


def alarm_doc(alarm_id: str = "A1", **over: Any) -> dict[str, Any]:
    """An alarm document (protocol/community_protocol/schemas/alarm.json) of an SOS pendant, for notifier tests."""
    doc: dict[str, Any] = {
        "alarm_id": alarm_id,
        "type": "care",
        "severity": "critical",
        "state": "active",
        "acknowledged": False,
        "cause": "elderly.sos",
        "device": {
            "id": "pendant-301",
            "name": "301 pendant",
            "location": {"building": "1", "floor": "3", "unit": "301"},
        },
        "raised_at": "2026-12-06T06:03:00.000Z",
        "escalation": 0,
    }
    doc.update(over)
    return doc


@dataclass
class Sms:
    """One SMS-SUBMIT as the network would see it."""

    number: str
    text: str
    concat: tuple[int, int, int] | None  # (reference, total, index)


def _unpack7(data: bytes, count: int, skip_bits: int) -> list[int]:
    bits = int.from_bytes(data, "little")
    return [(bits >> (skip_bits + 7 * i)) & 0x7F for i in range(count)]


def decode_submit(pdu_hex: str) -> tuple[Sms, int]:
    """An SMS-SUBMIT PDU (with its SMSC prefix) and the TPDU's length in octets."""
    raw = bytes.fromhex(pdu_hex)
    smsc_len = raw[0]
    tpdu = raw[1 + smsc_len :]
    first = tpdu[0]
    assert first & 0x03 == 0x01, "not an SMS-SUBMIT"
    vpf = (first >> 3) & 0x03
    udhi = bool(first & 0x40)
    n_digits, toa = tpdu[2], tpdu[3]
    addr_octets = (n_digits + 1) // 2
    semi = tpdu[4 : 4 + addr_octets].hex().upper()
    digits = "".join(semi[i + 1] + semi[i] for i in range(0, len(semi), 2))[:n_digits]
    number = ("+" if toa == 0x91 else "") + digits
    pos = 4 + addr_octets
    dcs = tpdu[pos + 1]
    pos += 2
    pos += {0: 0, 2: 1, 1: 7, 3: 7}[vpf]
    udl = tpdu[pos]
    ud = tpdu[pos + 1 :]
    concat = None
    header_octets = 0
    if udhi:
        udhl = ud[0]
        header_octets = udhl + 1
        h = ud[1 : 1 + udhl]
        i = 0
        while i < len(h):
            iei, ln = h[i], h[i + 1]
            if iei == 0x00:
                concat = (h[i + 2], h[i + 3], h[i + 4])
            i += 2 + ln
    if dcs & 0x0C == 0x08:
        body = ud[header_octets:udl]
        text = body.decode("utf-16-be")
    else:
        skip_septets = (header_octets * 8 + 6) // 7
        septets = _unpack7(ud, udl, 0)[skip_septets:] if header_octets else _unpack7(ud, udl, 0)
        out, esc = [], False
        for s in septets:
            if esc:
                out.append(_GSM7_EXT.get(s, "?"))
                esc = False
            elif s == 0x1B:
                esc = True
            else:
                out.append(_GSM7[s])
        text = "".join(out)
    return Sms(number, text, concat), len(tpdu)


@dataclass
class ModemSim:
    """Answers on `port` (the far end of a pty pair) until `stop()`."""

    port: Path
    registration: int = 1  # +CREG stat: 1 home, 2 searching, 5 roaming
    pin: str | None = None  # the SIM wants this PIN before anything else
    cms_errors: deque[int] = field(default_factory=deque)  # the next sends fail with these
    mute: bool = False  # stops answering anything
    sent: list[Sms] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    _echo: bool = True
    _unlocked: bool = False
    _mr: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ModemSim:
        self._fd = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._serve, daemon=True, name="modem-sim")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def texts(self) -> list[tuple[str, str]]:
        """(number, whole text) of every message sent, concatenated parts joined."""
        out: list[tuple[str, str]] = []
        groups: dict[tuple[str, int], dict[int, str]] = {}
        totals: dict[tuple[str, int], int] = {}
        for sms in self.sent:
            if sms.concat is None:
                out.append((sms.number, sms.text))
                continue
            ref, total, index = sms.concat
            key = (sms.number, ref)
            groups.setdefault(key, {})[index] = sms.text
            totals[key] = total
            if len(groups[key]) == total:
                out.append((sms.number, "".join(groups[key][i] for i in range(1, total + 1))))
        return out

    # ---- the dialogue --------------------------------------------------------------

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError):
            os.write(self._fd, text.encode())

    def _serve(self) -> None:
        buf = b""
        pdu_len: int | None = None
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(self._fd, 4096)
            except OSError:
                continue
            if self.mute:
                continue
            buf += chunk
            while True:
                if pdu_len is not None:
                    if b"\x1a" not in buf:
                        break
                    pdu, buf = buf.split(b"\x1a", 1)
                    self._submit(pdu.decode().strip(), pdu_len)
                    pdu_len = None
                    continue
                if b"\r" not in buf:
                    break
                line, buf = buf.split(b"\r", 1)
                cmd = line.decode(errors="replace").strip().lstrip("\n")
                if not cmd:
                    continue
                if self._echo:
                    self._write(cmd + "\r")
                self.commands.append(cmd)
                pdu_len = self._command(cmd)

    def _ok(self, *lines: str) -> None:
        self._write("".join(f"\r\n{x}\r\n" for x in lines) + "\r\nOK\r\n")

    def _command(self, cmd: str) -> int | None:
        upper = cmd.upper()
        needs_sim = upper.startswith(("AT+CMGS", "AT+CREG", "AT+CMGF"))
        if needs_sim and self.pin is not None and not self._unlocked:
            self._write("\r\n+CME ERROR: 11\r\n")
            return None
        if upper in ("AT", "AT+CMEE=1", "AT+CMGF=0"):
            self._ok()
        elif upper == "ATE0":
            self._echo = False
            self._ok()
        elif upper == "AT+CPIN?":
            ready = self.pin is None or self._unlocked
            self._ok("+CPIN: READY" if ready else "+CPIN: SIM PIN")
        elif upper.startswith("AT+CPIN="):
            if cmd.split("=", 1)[1].strip('"') == self.pin:
                self._unlocked = True
                self._ok()
            else:
                self._write("\r\n+CME ERROR: 16\r\n")
        elif upper == "AT+CREG?":
            self._ok(f"+CREG: 0,{self.registration}")
        elif upper.startswith("AT+CMGS="):
            if self.registration not in (1, 5):
                self._write("\r\n+CMS ERROR: 331\r\n")
                return None
            self._write("\r\n> ")
            return int(upper.split("=", 1)[1])
        else:
            self._write("\r\nERROR\r\n")
        return None

    def _submit(self, pdu_hex: str, announced: int) -> None:
        sms, tpdu_len = decode_submit(pdu_hex)
        if tpdu_len != announced:
            self._write("\r\n+CMS ERROR: 304\r\n")
            return
        if self.cms_errors:
            self._write(f"\r\n+CMS ERROR: {self.cms_errors.popleft()}\r\n")
            return
        self.sent.append(sms)
        self._mr = (self._mr + 1) % 256
        self._ok(f"+CMGS: {self._mr}")
