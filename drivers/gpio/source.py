"""The only I/O of this driver: edges, levels and outputs of lines on one GPIO chip (libgpiod).

`EdgeSource` is the small interface the driver uses; `GpiodSource` implements it with
libgpiod's v2 API, reading edge events from the request's file descriptor with the
event loop's `add_reader`, so no thread blocks on the chip.  Tests fake only this.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from .settings import Bias

__all__ = [
    "ChipUnavailable",
    "Edge",
    "EdgeSource",
    "GpiodSource",
    "LineConfig",
    "Opener",
    "explain",
    "open_gpiod",
]

Edge = tuple[int, int, int]  # (line offset, level 0/1, kernel timestamp in ns, monotonic)


@dataclass(frozen=True, slots=True)
class LineConfig:
    """How one line is requested: an input with its bias and debounce, or an output."""

    bias: Bias
    debounce_ms: int
    # An output line, and the level it is driven to when requested; None: an input.
    output: int | None = None


class ChipUnavailable(Exception):
    """The chip cannot be opened or was lost; str() says what to check."""


class EdgeSource(Protocol):
    """Edges of the requested input lines as they happen, their levels, and outputs."""

    def __aiter__(self) -> AsyncIterator[Edge]: ...

    def read(self, offset: int) -> int: ...

    def write(self, offset: int, level: int) -> None: ...

    def close(self) -> None: ...


Opener = Callable[[str, Mapping[int, LineConfig]], EdgeSource]


def explain(chip: str, exc: OSError) -> str:
    """A reason an installer can act on, for an OSError from opening a chip."""
    if isinstance(exc, FileNotFoundError) or not os.path.exists(chip):
        return f"no {chip}: is this a Raspberry Pi? is the user in group gpio?"
    if isinstance(exc, PermissionError):
        return f"no access to {chip}: add the gateway's user to group gpio"
    if exc.errno == errno.EBUSY:
        return f"{chip}: a line is held by another program; `gpioinfo` shows its consumer"
    return f"{chip}: {exc.strerror or exc}"


class GpiodSource:
    """A libgpiod line request on one chip, read without blocking the event loop."""

    def __init__(self, chip: str, lines: Mapping[int, LineConfig]) -> None:
        # Imported here so the pure parts and the tests load where libgpiod cannot.
        import gpiod
        from gpiod.line import Bias as GBias
        from gpiod.line import Direction, Value
        from gpiod.line import Edge as GEdge

        biases = {
            Bias.PULL_UP: GBias.PULL_UP,
            Bias.PULL_DOWN: GBias.PULL_DOWN,
            Bias.NONE: GBias.DISABLED,
        }
        self._values = (Value.INACTIVE, Value.ACTIVE)
        config: dict[Any, Any] = {
            offset: gpiod.LineSettings(
                edge_detection=GEdge.BOTH,
                bias=biases[cfg.bias],
                # The kernel debounces in software where the chip cannot; ours runs too.
                debounce_period=timedelta(milliseconds=cfg.debounce_ms),
            )
            if cfg.output is None
            else gpiod.LineSettings(
                direction=Direction.OUTPUT, output_value=self._values[cfg.output]
            )
            for offset, cfg in lines.items()
        }
        self.chip = chip
        self._rising = gpiod.EdgeEvent.Type.RISING_EDGE
        try:
            self._request = gpiod.request_lines(chip, config=config, consumer="community-gateway")
        except OSError as exc:
            raise ChipUnavailable(explain(chip, exc)) from exc

    def read(self, offset: int) -> int:
        try:
            return int(self._request.get_value(offset).value)
        except OSError as exc:
            raise ChipUnavailable(explain(self.chip, exc)) from exc

    def write(self, offset: int, level: int) -> None:
        try:
            self._request.set_value(offset, self._values[level])
        except OSError as exc:
            raise ChipUnavailable(explain(self.chip, exc)) from exc

    async def __aiter__(self) -> AsyncIterator[Edge]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[list[Edge] | OSError] = asyncio.Queue()
        fd = self._request.fd

        def readable() -> None:
            try:
                events = self._request.read_edge_events()
            except OSError as exc:  # the chip went away (unplugged HAT, driver unbound)
                loop.remove_reader(fd)
                queue.put_nowait(exc)
                return
            queue.put_nowait(
                [
                    (e.line_offset, 1 if e.event_type is self._rising else 0, e.timestamp_ns)
                    for e in events
                ]
            )

        loop.add_reader(fd, readable)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, OSError):
                    raise ChipUnavailable(explain(self.chip, item))
                for edge in item:
                    yield edge
        finally:
            loop.remove_reader(fd)

    def close(self) -> None:
        self._request.release()


def open_gpiod(chip: str, lines: Mapping[int, LineConfig]) -> EdgeSource:
    """Request `lines` on `chip` for edge events; raises ChipUnavailable with a reason."""
    return GpiodSource(chip, lines)
