"""A fake GPIO chip behind the driver's `EdgeSource` interface, the only thing faked.

CI machines have no GPIO in the kernel; the driver tests and `scripts/bench_latency.py`
inject edges here and read back what the driver wrote to relay outputs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping

from drivers.gpio.source import ChipUnavailable, Edge, LineConfig

__all__ = ["FakeChip", "Opener"]


class FakeChip:
    """Stands in for a libgpiod line request: levels, a stream of stamped edges, outputs."""

    def __init__(self, levels: Mapping[int, int]) -> None:
        self.levels = dict(levels)
        self.queue: asyncio.Queue[Edge | None] = asyncio.Queue()
        self.closed = False
        self.requested: dict[int, LineConfig] = {}
        self.writes: list[tuple[int, int]] = []  # (offset, level) the driver wrote
        self.broken = False  # writes fail as on a chip that went away
        self.last_edge_ns = 0  # the stamp of the last injected edge

    def set(self, offset: int, level: int) -> None:
        self.levels[offset] = level
        self.last_edge_ns = time.monotonic_ns()  # stamped as the kernel stamps an edge
        self.queue.put_nowait((offset, level, self.last_edge_ns))

    def unplug(self) -> None:
        self.queue.put_nowait(None)

    def read(self, offset: int) -> int:
        return self.levels[offset]

    def write(self, offset: int, level: int) -> None:
        if self.broken:
            raise ChipUnavailable("/dev/gpiochip0: No such device")
        self.levels[offset] = level
        self.writes.append((offset, level))

    async def __aiter__(self) -> AsyncIterator[Edge]:
        while True:
            edge = await self.queue.get()
            if edge is None:
                raise ChipUnavailable("/dev/gpiochip0: No such device")
            yield edge

    def close(self) -> None:
        self.closed = True


class Opener:
    """Hands out `chip` after failing `failures` times the way a missing chip fails."""

    def __init__(self, chip: FakeChip, failures: int = 0) -> None:
        self.chip = chip
        self.failures = failures
        self.calls = 0

    def __call__(self, path: str, lines: Mapping[int, LineConfig]) -> FakeChip:
        self.calls += 1
        if self.calls <= self.failures:
            raise ChipUnavailable(f"no {path}: is this a Raspberry Pi? is the user in group gpio?")
        self.chip.requested = dict(lines)
        # A requested output starts at its configured level, as libgpiod sets it.
        for offset, cfg in lines.items():
            if cfg.output is not None:
                self.chip.levels[offset] = cfg.output
        return self.chip
