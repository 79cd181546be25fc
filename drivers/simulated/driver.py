"""The simulated driver's asyncio glue: one scheduler runs every device's scenario.

All devices share one heap of "next thing due" (one entry per device) and one task
that sleeps until the earliest; 500 devices cost 500 heap entries, not 500 sleeping
tasks.  Each due item is performed in a short task of its own, because emitting an
event returns only once the outbox has committed it, and commits are batched: one
event after another would cap the rate at one per commit (telemetry's hand-off does
not wait).  A device's next item is scheduled only after its current one is done, so
its messages stay in order.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.sdk.driver import (
    CommandError,
    DeviceSpec,
    Driver,
    DriverContext,
    DriverHealth,
    PointValue,
    ReadResult,
)
from gateway.sdk.model import Event, EventType, Telemetry

from .meter import MeterModel
from .profile import load_profile
from .scenario import Availability, Due, ScriptedEvent, TelemetryTick, schedule
from .settings import EventRule, SimulatedSettings, check_event

__all__ = ["SimulatedDriver", "meter_of", "read_once"]

# Items due within this much of each other are started in one wake-up: 500 meters at
# 10 Hz would otherwise wake the loop 5000 times a second, each wake costing more than
# the reading.  Timestamps come from ctx.now() when performed, so they stay truthful.
_SLACK_S = 0.002


def meter_of(spec: DeviceSpec) -> MeterModel | None:
    """The meter model of a simulated meter; None for devices without a profile."""
    s = spec.settings_as(SimulatedSettings)
    if s.profile is None:
        return None
    return MeterModel(
        load_profile(s.profile),
        device_id=spec.id,
        seed=s.seed,
        scale=s.scale,
        utc_offset_s=s.utc_offset_h * 3600,
    )


@dataclass(slots=True)
class _Sim:
    spec: DeviceSpec
    stream: Iterator[Due]
    meter: MeterModel | None
    period: float | None
    next: Due | None = None


class SimulatedDriver(Driver):
    """Plays each device's scripted scenario in real time through the driver context."""

    def __init__(self, devices: Sequence[DeviceSpec], ctx: DriverContext) -> None:
        super().__init__(devices, ctx)
        self._online: dict[str, bool] = {}
        self._counts = {"events": 0, "telemetry": 0, "injected": 0, "late_skipped": 0}
        self._errors = 0
        self._last_error = ""
        self._faults: dict[str, str] = {}
        self._outputs: dict[
            str, bool
        ] = {}  # device id -> relay output on  # device id -> its current fault, logged once
        # Set by run(): the scheduler's state.
        self._sims: list[_Sim] = []
        self._heap: list[tuple[float, int]] = []
        self._wake: asyncio.Event | None = None
        self._target = math.inf
        self._t0 = 0.0

    def _elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self._t0

    async def run(self) -> None:
        """Perform every device's scenario until cancelled."""
        self._t0 = asyncio.get_running_loop().time()
        self._wake = wake = asyncio.Event()
        self._sims = []
        for spec in self.devices.values():
            s = spec.settings_as(SimulatedSettings)
            self._sims.append(
                _Sim(spec, schedule(s, spec.id), meter_of(spec), s.telemetry_period_s)
            )
        self._heap = []
        for i in range(len(self._sims)):
            self._advance(i)
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                now = self._elapsed()
                while self._heap and self._heap[0][0] <= now + _SLACK_S:
                    _, i = heapq.heappop(self._heap)
                    task = asyncio.create_task(self._perform(i))
                    running.add(task)
                    task.add_done_callback(running.discard)
                wake.clear()
                self._target = self._heap[0][0] if self._heap else math.inf
                delay = self._target - now if self._heap else None
                try:
                    async with asyncio.timeout(delay):
                        await wake.wait()
                except TimeoutError:
                    pass
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _advance(self, i: int) -> None:
        """Schedule device i's next item, dropping readings already a period late."""
        sim = self._sims[i]
        now = self._elapsed()
        due = next(sim.stream, None)
        # Under overload a real poller reads less often; it does not queue stale reads.
        while (
            due is not None
            and sim.period is not None
            and isinstance(due.action, TelemetryTick)
            and now - due.t > sim.period
        ):
            self._counts["late_skipped"] += 1
            due = next(sim.stream, None)
        sim.next = due
        if due is None:
            return
        heapq.heappush(self._heap, (due.t, i))
        if due.t < self._target and self._wake is not None:
            self._wake.set()

    async def _perform(self, i: int) -> None:
        sim = self._sims[i]
        due = sim.next
        assert due is not None
        device_id = sim.spec.id
        try:
            await self._act(sim, due.action)
        except Exception as exc:  # one device's fault must not stop the others
            self._errors += 1
            self._last_error = f"{device_id}: {exc}"
            # Once per distinct fault: at 10 Hz a persistent one would flood the log.
            if self._faults.get(device_id) != str(exc):
                self._faults[device_id] = str(exc)
                self.ctx.logger.warning("simulated device %s failed: %s", device_id, exc)
        else:
            if self._faults.pop(device_id, None) is not None:
                self.ctx.logger.info("simulated device %s works again", device_id)
        self._advance(i)

    async def _act(self, sim: _Sim, action: Availability | ScriptedEvent | TelemetryTick) -> None:
        ref = sim.spec.ref
        if isinstance(action, Availability):
            was = self._online.get(ref.id)
            self._online[ref.id] = action.available
            self.ctx.set_available(ref.id, action.available, action.reason)
            if was is not None and was != action.available:  # not the start-up "online"
                self.ctx.logger.info(
                    "simulated device %s is %s", ref.id, "back" if action.available else "offline"
                )
        elif isinstance(action, ScriptedEvent):
            await self.ctx.emit(Event(ref, self.ctx.now(), action.type, dict(action.data)))
            self._counts["events"] += 1
        else:
            assert sim.meter is not None
            ts = self.ctx.now()
            await self.ctx.emit(Telemetry(ref, ts, sim.meter.readings(ts)))
            self._counts["telemetry"] += 1

    async def inject(
        self, device_id: str, event_type: EventType | str, data: Mapping[str, Any]
    ) -> None:
        """Emit an event of `device_id` now, outside its scenario: an installer's "press test".

        Refused with CommandError if the device is unknown, cannot have such an event,
        or is in a simulated outage (a real one would not be heard either).
        """
        spec = self.devices.get(device_id)
        if spec is None:
            raise CommandError(f"no simulated device {device_id!r}")
        try:
            event = check_event(spec.kind, event_type)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if self._online.get(device_id) is False:
            raise CommandError(f"device {device_id} is offline (simulated outage)")
        await self.ctx.emit(Event(spec.ref, self.ctx.now(), event, dict(data)))
        self._counts["injected"] += 1
        self.ctx.logger.info("injected %s on simulated device %s", event, device_id)

    async def command(self, device_id: str, name: str, args: Mapping[str, Any]) -> Any:
        """`inject` with {"type": "smoke.alarm", "data": {...}}; `on`/`off` of an output.

        `on` and `off` play a relay output (the alarm engine's office buzzer): the state
        is logged and counted in health (`outputs_on`).  Other commands are refused.
        """
        if name in ("on", "off"):
            if device_id not in self.devices:
                raise CommandError(f"no simulated device {device_id!r}")
            if args:
                raise CommandError(f"{name} takes no fields")
            self._outputs[device_id] = name == "on"
            self.ctx.logger.info("simulated output %s switched %s", device_id, name)
            return {"output": name}
        if name != "inject":
            return await super().command(device_id, name, args)
        if unknown := sorted(set(args) - {"type", "data"}):
            raise CommandError(f"inject takes 'type' and 'data'; unknown: {', '.join(unknown)}")
        if "type" not in args:
            raise CommandError('inject needs a type, e.g. {"type": "smoke.alarm"}')
        data = args.get("data", {})
        if not isinstance(data, Mapping):
            raise CommandError("inject's 'data' must be an object")
        await self.inject(device_id, args["type"], data)
        return None  # the event itself is the result; docs/mqtt-api.md shows no `result`

    def health(self) -> DriverHealth:
        """Errors, devices online, and how many messages of each sort were emitted."""
        return DriverHealth(
            errors=self._errors,
            last_error=self._last_error,
            devices_online=sum(self._online.values()),
            devices_total=len(self.devices),
            extra={**self._counts, "outputs_on": sum(self._outputs.values())},
        )


def _describe(rule: EventRule) -> str:
    if rule.every_s is None:
        when = f"at {rule.first_s:g} s"
    else:
        when = f"every {rule.every_s:g} s from {rule.first_s:g} s"
        if rule.jitter_s:
            when += f" ± {rule.jitter_s:g} s"
    if rule.then is not None:
        when += f", then {rule.then} {rule.then_after_s:g} s later"
    return when


async def read_once(spec: DeviceSpec) -> ReadResult:
    """What `gateway read` shows: a meter's readings now, and the device's scenario."""
    s = spec.settings_as(SimulatedSettings)
    points: list[PointValue] = []
    meter = meter_of(spec)
    if meter is not None:
        for r in meter.readings(datetime.now(UTC)):
            points.append(PointValue(r.name, r.value, str(r.unit), note=str(r.type)))
    for i, rule in enumerate(s.events):
        points.append(PointValue(f"events[{i}]", str(rule.type), note=_describe(rule)))
    for i, w in enumerate(s.offline):
        points.append(
            PointValue(f"offline[{i}]", f"{w.at_s:g}-{w.end_s:g}", "s", note="unreachable")
        )
    if not points:
        points.append(PointValue("scenario", "idle", note="no scripted events; only online"))
    return ReadResult(spec.id, tuple(points))
