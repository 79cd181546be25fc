"""What one driver instance sees of the runtime: its devices' emit and availability."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from gateway.sdk.driver import DeviceSpec, DriverContext
from gateway.sdk.model import DeviceRef, Message

__all__ = ["DriverSeat"]

# emit(message, source=driver name); availability(ref, available, reason)
Emit = Callable[..., Awaitable[None]]
Availability = Callable[[DeviceRef, bool | None, str], None]


class DriverSeat(DriverContext):
    """The `DriverContext` of one driver: it may emit for, and report on, its own devices only."""

    def __init__(
        self, name: str, devices: list[DeviceSpec], *, emit: Emit, availability: Availability
    ) -> None:
        self._name = name
        self._devices = {d.id: d.ref for d in devices}
        self._logger = logging.getLogger(f"drivers.{name}")
        self._emit = emit
        self._availability = availability

    @property
    def logger(self) -> logging.Logger:
        return self._logger

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def emit(self, message: Message) -> None:
        if message.device.id not in self._devices:
            raise KeyError(f"driver emitted for device {message.device.id!r}, which is not its own")
        await self._emit(message, source=self._name)

    def set_available(self, device_id: str, available: bool | None, reason: str = "") -> None:
        self._availability(self._devices[device_id], available, reason)
