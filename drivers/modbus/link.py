"""Thin I/O glue: one pymodbus client per bus, one request at a time, faults classified.

Every device on a serial port (or a TCP endpoint) shares one `Link`.  Requests take
turns under a lock and keep the bus's inter-frame silence before each one.  Each
request has its caller's timeout, so a dead meter costs the others at most that.
A failure becomes a `LinkFault` saying exactly what happened (no reply, a corrupted
reply, an exception code, a port that cannot be opened) and what to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType

from gateway.sdk.backoff import Backoff

from .faults import EXCEPTION_NAMES, Fault, FaultKind, LinkFault, hint_for
from .profile import Table
from .settings import Framer, SerialBus, TcpBus

__all__ = ["Link", "LinkStats", "quiet_pymodbus"]

_CONNECT_BACKOFF_MIN_S = 0.5
_CONNECT_BACKOFF_MAX_S = 30.0
# pymodbus's own reply timeout, only a backstop: above the largest timeout_s a device may
# have (10 s), since each request is cut at its own device's timeout here.
_PYMODBUS_TIMEOUT_S = 11.0


def quiet_pymodbus() -> None:
    """Keep pymodbus from logging every timeout; the driver logs each fault once, with a hint.

    Only when nobody configured the pymodbus logger: a level set for debugging stays.
    """
    log = logging.getLogger("pymodbus")
    if log.level == logging.NOTSET:
        log.setLevel(logging.CRITICAL)


@dataclass(slots=True)
class LinkStats:
    """Counters of one link, for the driver's health report and the benchmark."""

    requests: int = 0
    no_response: int = 0
    garbled: int = 0
    exceptions: int = 0
    port_errors: int = 0
    reconnects: int = 0


AnyClient = AsyncModbusSerialClient | AsyncModbusTcpClient


class Link:
    """One connection to a bus, shared by its devices; requests are serialised."""

    def __init__(self, bus: SerialBus | TcpBus, logger: logging.Logger) -> None:
        self.bus = bus
        self.logger = logger
        self.stats = LinkStats()
        self._client: AnyClient | None = None
        self._lock = asyncio.Lock()
        self._last_io = 0.0
        self._rx_bytes = 0
        self._retry_at = 0.0
        self._connect_backoff = Backoff(
            _CONNECT_BACKOFF_MIN_S, _CONNECT_BACKOFF_MAX_S, jitter=False
        )
        self._port_fault_logged = False

    @property
    def serial(self) -> bool:
        return isinstance(self.bus, SerialBus)

    def describe(self) -> str:
        return self.bus.describe()

    # ---- connection ------------------------------------------------------------------

    def _trace(self, sending: bool, data: bytes) -> bytes:
        # pymodbus hands the receive buffer so far; its length says whether anything came.
        if not sending:
            self._rx_bytes = max(self._rx_bytes, len(data))
        return data

    def _new_client(self) -> AnyClient:
        # Retries and reconnects are ours (backoff per device, one log line per fault).
        if isinstance(self.bus, SerialBus):
            return AsyncModbusSerialClient(
                self.bus.port,
                framer=FramerType.RTU,
                baudrate=self.bus.baud,
                bytesize=self.bus.bytesize,
                parity=str(self.bus.parity),
                stopbits=self.bus.stopbits,
                timeout=_PYMODBUS_TIMEOUT_S,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._trace,
            )
        framer = FramerType.RTU if self.bus.framer is Framer.RTU else FramerType.SOCKET
        return AsyncModbusTcpClient(
            self.bus.host,
            port=self.bus.port,
            framer=framer,
            timeout=_PYMODBUS_TIMEOUT_S,
            retries=0,
            reconnect_delay=0,
            trace_packet=self._trace,
        )

    def _port_fault(self, detail: str) -> LinkFault:
        self.stats.port_errors += 1
        fault = Fault(FaultKind.PORT, detail, hint_for(FaultKind.PORT, serial=self.serial))
        if not self._port_fault_logged:
            self._port_fault_logged = True
            self.logger.warning("modbus bus %s: %s; check: %s", self.describe(), detail, fault.hint)
        return LinkFault(fault)

    def _why_not_open(self) -> str:
        if isinstance(self.bus, SerialBus):
            port = self.bus.port
            if not os.path.exists(port):
                return f"serial port {port} does not exist (adapter unplugged?)"
            if not os.access(port, os.R_OK | os.W_OK):
                return f"serial port {port}: permission denied"
            return f"serial port {port} cannot be opened (in use by another program?)"
        return f"cannot connect to {self.bus.host}:{self.bus.port}"

    async def _ensure_connected(self, timeout: float) -> AnyClient:
        client = self._client
        if client is not None and client.connected:
            return client
        loop = asyncio.get_running_loop()
        if loop.time() < self._retry_at:
            raise self._port_fault(self._why_not_open() + " (retrying)")
        if client is not None:
            client.close()
        self._client = client = self._new_client()
        error = ""
        try:
            async with asyncio.timeout(max(timeout, 1.0) + 1.0):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        except Exception as exc:  # termios.error, SerialException: the port refuses a setting
            ok, error = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            client.close()
            self._client = None
            self._retry_at = loop.time() + self._connect_backoff.next()
            detail = self._why_not_open()
            raise self._port_fault(f"{detail} ({error})" if error else detail)
        if self._port_fault_logged:
            self.logger.info("modbus bus %s: connected again", self.describe())
            self.stats.reconnects += 1
        self._port_fault_logged = False
        self._connect_backoff.reset()
        return client

    async def close(self) -> None:
        """Close the connection; the next request opens it again."""
        async with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    # ---- requests --------------------------------------------------------------------

    async def read(
        self, table: Table, unit: int, start: int, count: int, timeout: float
    ) -> list[int]:
        """Read `count` registers (or bits, as 0/1) of `table` from device `unit`.

        Raises LinkFault when no usable reply arrives within `timeout` seconds.
        """
        async with self._lock:
            loop = asyncio.get_running_loop()
            wait = self._last_io + self.bus.gap_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                client = await self._ensure_connected(timeout)
                return await self._request(client, table, unit, start, count, timeout)
            finally:
                self._last_io = loop.time()

    async def _request(
        self, client: AnyClient, table: Table, unit: int, start: int, count: int, timeout: float
    ) -> list[int]:
        method = {
            Table.COIL: client.read_coils,
            Table.DISCRETE: client.read_discrete_inputs,
            Table.HOLDING: client.read_holding_registers,
            Table.INPUT: client.read_input_registers,
        }[table]
        what = f"{table} {start}+{count}"
        self.stats.requests += 1
        self._rx_bytes = 0
        try:
            async with asyncio.timeout(timeout):
                reply = await method(start, count=count, device_id=unit)
        except (TimeoutError, ModbusException) as exc:
            if isinstance(exc, ConnectionException):
                self._drop()
                raise self._port_fault(f"connection lost ({exc})") from None
            if self._client is not None and not self._client.connected:
                self._drop()
                raise self._port_fault(self._why_not_open()) from None
            if self._rx_bytes:
                self.stats.garbled += 1
                raise self._fault(
                    FaultKind.GARBLED,
                    f"unit {unit}: {self._rx_bytes} bytes arrived but no valid reply "
                    f"(CRC error or noise) to {what}",
                ) from None
            self.stats.no_response += 1
            raise self._fault(
                FaultKind.NO_RESPONSE, f"no reply from unit {unit} within {timeout:g} s ({what})"
            ) from None
        if reply.isError():
            code = int(getattr(reply, "exception_code", 0))
            self.stats.exceptions += 1
            name = EXCEPTION_NAMES.get(code, "unknown exception")
            raise self._fault(
                FaultKind.EXCEPTION,
                f"unit {unit} answered exception {code} ({name}) to {what}",
                code,
            )
        values = [int(b) for b in reply.bits[:count]] if table.is_bits else list(reply.registers)
        # RTU has no transaction id: a late reply to an earlier, timed-out request of the
        # same unit would pass for this one.  Its length usually gives it away.
        if len(values) < count or (not table.is_bits and len(values) != count):
            self.stats.garbled += 1
            raise self._fault(
                FaultKind.GARBLED, f"unit {unit} sent {len(values)} values for {what}"
            )
        return values[:count]

    def _fault(self, kind: FaultKind, detail: str, code: int | None = None) -> LinkFault:
        return LinkFault(Fault(kind, detail, hint_for(kind, serial=self.serial, code=code), code))

    def _drop(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
