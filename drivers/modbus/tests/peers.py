"""Real Modbus peers for the driver's tests: pymodbus servers on loopback TCP or a pty.

`ModbusPeer` serves several unit ids from one server, like meters sharing a line.
pymodbus 3.16 answers an unknown unit id with exception 4 even with
ignore_missing_devices (its SimCore raises KeyError, not NoSuchIdException), so the peer
drops every reply of a unit that is not `answering`, at the server's transport hook: a
missing or silenced meter stays silent, as on a real bus.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType as SimType
from pymodbus.simulator import SimData, SimDevice

from drivers.modbus.profile import Table

__all__ = ["JunkWriter", "ModbusPeer", "PeerUnit", "float32_words"]

_BLOCK_ORDER = (Table.COIL, Table.DISCRETE, Table.HOLDING, Table.INPUT)
_WRITE_FC = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}


def float32_words(value: float) -> list[int]:
    """Big-endian float32 registers, encoded by pymodbus (independent of the driver's code)."""
    words = AsyncModbusTcpClient.convert_to_registers(
        value, AsyncModbusTcpClient.DATATYPE.FLOAT32, word_order="big"
    )
    return [int(w) for w in words]


@dataclass
class PeerUnit:
    """One simulated device: values by table and address; others are illegal addresses."""

    unit: int
    tables: dict[Table, dict[int, int]] = field(
        default_factory=lambda: {t: {} for t in _BLOCK_ORDER}
    )

    def set(self, table: Table, address: int, values: Sequence[int | bool]) -> PeerUnit:
        for i, v in enumerate(values):
            self.tables[table][address + i] = int(v)
        return self

    def fill(self, table: Table, start: int, count: int) -> PeerUnit:
        """Define registers start..start+count-1 (zero) where nothing is set yet."""
        for a in range(start, start + count):
            self.tables[table].setdefault(a, 0)
        return self

    def _blocks(self, table: Table) -> list[SimData]:
        cells = self.tables[table]
        kind = SimType.BITS if table.is_bits else SimType.REGISTERS
        blocks: list[SimData] = []
        run: list[int] = []
        start = prev = -2
        for a in sorted(cells):
            if a != prev + 1 and run:
                blocks.append(SimData(start, values=run, datatype=kind))
                run = []
            if not run:
                start = a
            run.append(bool(cells[a]) if table.is_bits else cells[a])
            prev = a
        if run:
            blocks.append(SimData(start, values=run, datatype=kind))
        if not blocks:  # pymodbus wants every block list non-empty
            far = 0xFFF0
            blocks.append(SimData(far, values=[0], datatype=kind))
        return blocks

    def sim_device(self) -> SimDevice:
        coils, discrete, holding, inputs = (self._blocks(t) for t in _BLOCK_ORDER)
        return SimDevice(id=self.unit, simdata=(coils, discrete, holding, inputs))


class ModbusPeer:
    """A pymodbus server playing several units; units can be silenced and changed live."""

    def __init__(self, units: Sequence[PeerUnit]) -> None:
        self.units = {u.unit: u for u in units}
        self.silent: set[int] = set()
        self.requests = 0
        self.server: ModbusTcpServer | ModbusSerialServer | None = None
        self._rtu = False

    def _trace(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        self.requests += 1
        unit = data[0] if self._rtu else data[6]
        return data if unit in self.units and unit not in self.silent else b""

    def _devices(self) -> list[SimDevice]:
        return [u.sim_device() for u in self.units.values()]

    async def start_tcp(self, port: int, *, rtu_framing: bool = False) -> ModbusPeer:
        self._rtu = rtu_framing
        self.server = ModbusTcpServer(
            self._devices(),
            framer=FramerType.RTU if rtu_framing else FramerType.SOCKET,
            address=("127.0.0.1", port),
            ignore_missing_devices=True,
            trace_packet=self._trace,
        )
        await self.server.serve_forever(background=True)
        return self

    async def start_rtu(self, port: Path, baud: int = 9600) -> ModbusPeer:
        self._rtu = True
        self.server = ModbusSerialServer(
            self._devices(),
            framer=FramerType.RTU,
            port=str(port),
            baudrate=baud,
            ignore_missing_devices=True,
            trace_packet=self._trace,
        )
        await self.server.serve_forever(background=True)
        return self

    async def set(
        self, unit: int, table: Table, address: int, values: Sequence[int | bool]
    ) -> None:
        """Change values while serving (as a meter's registers change)."""
        assert self.server is not None
        vals: list[int] | list[bool] = (
            [bool(v) for v in values] if table.is_bits else [int(v) for v in values]
        )
        await self.server.async_setValues(unit, _WRITE_FC[table], address, vals)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None


class JunkWriter:
    """A thread writing random bytes into a pty now and then: noise on the line."""

    def __init__(self, path: Path, *, every_s: float = 0.05, size: int = 7, seed: int = 1) -> None:
        self.path = path
        self.every_s = every_s
        self.size = size
        self.rng = random.Random(seed)
        self.written = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="junk", daemon=True)

    def _run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_NOCTTY)
        try:
            while not self._stop.wait(self.every_s * (0.5 + self.rng.random())):
                junk = bytes(self.rng.randrange(256) for _ in range(self.rng.randint(1, self.size)))
                self.written += os.write(fd, junk)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def running(self) -> Iterator[JunkWriter]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
