"""The installer's one-off read of one reader (`gateway read`, `gateway check`).

Opens the reader's bus alone, waits until the reader is online (or its key is refused),
then asks for its identity and capabilities.  The service polls the same bus, so this
is for commissioning, with the service stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import osdp

from gateway.sdk.driver import DeviceSpec, PointValue, ReadResult

from .bus import Bus, BusError, PdConfig, Queued, thread_safe_sink
from .events import Notification, OsdpEventError, parse_event
from .keypad import KeypadBuffer
from .reader import Reader, describe_offline, key_refused
from .settings import OsdpSettings, SecretError, SecureChannel, read_scbk

__all__ = ["read_once"]


async def read_once(spec: DeviceSpec, timeout_s: float = 10.0) -> ReadResult:
    """Connect to one reader once, for `gateway read`: online, secure channel, ID, features."""
    s = spec.settings_as(OsdpSettings)
    try:
        scbk = read_scbk(s.scbk) if s.scbk is not None else None
    except SecretError as exc:
        return ReadResult(spec.id, fault=str(exc), hint="check the scbk file")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Queued] = asyncio.Queue()
    pd = PdConfig(s.address, scbk, s.secure_channel is SecureChannel.INSTALL, spec.id)
    bus = Bus(s.port, s.baudrate, [pd], thread_safe_sink(loop, queue))
    sc_failed = False
    try:
        await asyncio.to_thread(bus.start)
        started = time.monotonic()
        online, sc = False, False
        while time.monotonic() < started + timeout_s:
            online, sc = (await asyncio.to_thread(bus.online))[s.address]
            while not queue.empty():
                _, raw, ts = queue.get_nowait()
                with contextlib.suppress(OsdpEventError):
                    event = parse_event(raw)
                    sc_failed = sc_failed or (
                        isinstance(event, Notification) and key_refused(event, s, ts, started)
                    )
            if online or sc_failed:
                break
            await asyncio.sleep(0.1)
        if not online:
            probe = Reader(spec, s, b"", scbk, KeypadBuffer(), None, sc_failed=sc_failed)
            hint = (
                "compare the scbk file with the key given to the reader"
                if sc_failed
                else "is the gateway service running? it polls the bus too; stop it first"
            )
            return ReadResult(spec.id, fault=describe_offline(probe), hint=hint)
        ident = await asyncio.to_thread(bus.identity, s.address)
        led = await asyncio.to_thread(bus.capability, s.address, osdp.Capability.LEDControl)
        buzzer = await asyncio.to_thread(bus.capability, s.address, osdp.Capability.AudibleControl)
        readers = await asyncio.to_thread(bus.capability, s.address, osdp.Capability.Readers)
    except BusError as exc:
        return ReadResult(spec.id, fault=str(exc), hint="check the port name and its permissions")
    finally:
        await asyncio.to_thread(bus.close)
    points = [
        PointValue("online", True, note=f"address {s.address} on {s.port} at {s.baudrate} baud"),
        PointValue("secure_channel", sc),
        PointValue("vendor_code", f"{ident['vendor_code']:06X}"),
        PointValue("model", ident["model"]),
        PointValue("version", ident["version"]),
        PointValue("serial_number", f"{ident['serial_number']:08X}"),
        PointValue("firmware", f"{ident['firmware_version']:06X}"),
        PointValue("led_control", led[0] > 0, raw=f"level {led[0]}, {led[1]} LEDs"),
        PointValue("buzzer", buzzer[0] > 0, raw=f"level {buzzer[0]}"),
        PointValue("readers", readers[1], raw=f"level {readers[0]}"),
    ]
    return ReadResult(spec.id, tuple(points))
