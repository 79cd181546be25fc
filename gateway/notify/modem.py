"""A GSM/4G modem on a serial port that sends SMS in PDU mode: the thin I/O glue.

Blocking (pyserial); the notifier calls it from a worker thread, one call at a time.
Every wait is bounded: a modem that stops answering costs one timeout and a reopen, and
its error says what to check.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import serial

from .at import Final, Outcome, final_of, registration, sim_state
from .pdu import Part

__all__ = ["Modem", "ModemError"]

log = logging.getLogger(__name__)

_READ_CHUNK_S = 0.05
_MAX_LINE = 512  # a modem's line is short; a longer one is noise on the line


class ModemError(Exception):
    """The modem could not do what was asked; `transient` False means a person must act."""

    def __init__(self, reason: str, *, transient: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class Modem:
    """One modem; `prepare()` before the first `send()`, `close()` after a failure."""

    def __init__(
        self,
        port: str,
        baudrate: int,
        *,
        pin_file: Path | None = None,
        command_timeout_s: float = 2.0,
        send_timeout_s: float = 60.0,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.pin_file = pin_file
        self.command_timeout_s = command_timeout_s
        self.send_timeout_s = send_timeout_s
        self._serial: serial.Serial | None = None
        self._buffer = b""

    # ---- the dialogue ------------------------------------------------------------------

    def prepare(self) -> str:
        """Open the port and bring the modem to sending PDUs; returns its network state."""
        self._open()
        # A modem just powered may eat the first AT while it autobauds: try three times.
        for attempt in range(3):
            try:
                self.command("AT")
                break
            except ModemError:
                if attempt == 2:
                    raise
        self.command("ATE0")  # no echo: every line read is an answer
        self.command("AT+CMEE=1")  # numeric +CME/+CMS errors
        self._unlock_sim()
        registered, state = registration(self.command("AT+CREG?"))
        if not registered:
            raise ModemError(f"modem not on the mobile network: {state}; check antenna and SIM")
        self.command("AT+CMGF=0")
        return state

    def _unlock_sim(self) -> None:
        state = sim_state(self.command("AT+CPIN?"))
        if state == "READY":
            return
        if state != "SIM PIN":
            raise ModemError(f"SIM is not ready ({state})", transient=False)
        if self.pin_file is None:
            raise ModemError("SIM needs its PIN; set notify.sms.pin_file", transient=False)
        pin = self.pin_file.read_text(encoding="utf-8").strip()
        # The PIN goes to the modem only, never to a log line.
        self.command(f'AT+CPIN="{pin}"', log_as="AT+CPIN=<pin>")

    def send(self, parts: list[Part]) -> list[int]:
        """Send the parts of one message; returns the network's message references."""
        refs: list[int] = []
        for part in parts:
            self._write(f"AT+CMGS={part.tpdu_octets}\r".encode())
            self._wait_prompt()
            self._write(part.hex.encode() + b"\x1a")
            lines = self._until_final("AT+CMGS", self.send_timeout_s)
            refs.extend(int(x.split(":", 1)[1]) for x in lines if x.startswith("+CMGS:"))
        return refs

    # ---- lines ---------------------------------------------------------------------

    def command(self, cmd: str, *, log_as: str | None = None) -> list[str]:
        """Send one command; the lines before its OK, or ModemError with the reason."""
        self._write(cmd.encode() + b"\r")
        return self._until_final(log_as or cmd, self.command_timeout_s)

    def _until_final(self, what: str, timeout_s: float) -> list[str]:
        deadline = time.monotonic() + timeout_s
        lines: list[str] = []
        while True:
            line = self._read_line(deadline, what)
            final = final_of(line)
            if final is None:
                if line and not line.startswith("AT"):  # an echo we did not turn off yet
                    lines.append(line)
                continue
            if final.outcome is Outcome.OK:
                return lines
            raise _error(what, final)

    def _wait_prompt(self) -> None:
        deadline = time.monotonic() + self.command_timeout_s
        while b">" not in self._buffer:
            if b"\n" in self._buffer:  # an error instead of the prompt
                line = self._read_line(deadline, "AT+CMGS")
                final = final_of(line)
                if final is not None and final.outcome is Outcome.ERROR:
                    raise _error("AT+CMGS", final)
                continue
            self._fill(deadline, "AT+CMGS (waiting for the > prompt)")
        self._buffer = self._buffer.split(b">", 1)[1].lstrip(b" ")

    def _read_line(self, deadline: float, what: str) -> str:
        while True:
            for sep in (b"\r\n", b"\n", b"\r"):
                if sep in self._buffer:
                    raw, self._buffer = self._buffer.split(sep, 1)
                    text = raw.decode("ascii", "replace").strip()
                    if text:
                        return text
                    break
            else:
                if len(self._buffer) > _MAX_LINE:
                    self._buffer = b""  # noise: drop it rather than grow
                self._fill(deadline, what)

    def _fill(self, deadline: float, what: str) -> None:
        ser = self._require()
        if time.monotonic() >= deadline:
            raise ModemError(
                f"modem on {self.port} did not answer {what} in time; check power, cable and port"
            )
        try:
            chunk = ser.read(max(1, ser.in_waiting))
        except (OSError, serial.SerialException) as exc:
            raise ModemError(f"modem port {self.port} failed: {exc}") from exc
        self._buffer += chunk

    def _write(self, data: bytes) -> None:
        ser = self._require()
        try:
            ser.write(data)
            ser.flush()
        except (OSError, serial.SerialException) as exc:
            raise ModemError(f"modem port {self.port} failed: {exc}") from exc

    # ---- the port ------------------------------------------------------------------

    def _open(self) -> None:
        self.close()
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=_READ_CHUNK_S)
        except (OSError, serial.SerialException) as exc:
            raise ModemError(f"cannot open modem port {self.port}: {exc}") from exc
        self._buffer = b""

    def _require(self) -> serial.Serial:
        if self._serial is None:
            raise ModemError("modem port is not open")
        return self._serial

    def close(self) -> None:
        """Close the port; the next `prepare()` opens it again."""
        if self._serial is not None:
            with contextlib.suppress(OSError, serial.SerialException):
                self._serial.close()
        self._serial = None


def _error(what: str, final: Final) -> ModemError:
    return ModemError(f"{what}: {final.reason}", transient=final.transient)
