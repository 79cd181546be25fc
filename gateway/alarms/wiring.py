"""Builds a gateway's alarm engine and plugs it into the runtime's extension points."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .commands import alarms_handler
from .engine import AlarmEngine, OutputSwitch
from .model import DeviceInfo
from .settings import AlarmsConfig

if TYPE_CHECKING:
    from gateway.process.runtime import Gateway

__all__ = ["attach"]


def _output(gw: Gateway, cfg: AlarmsConfig) -> OutputSwitch | None:
    out = cfg.escalation.output
    if out is None:
        return None
    spec = gw.loaded.device(out.device)  # checked by `gateway validate`

    async def switch(on: bool) -> None:
        driver = gw.drivers.get(spec.driver)
        if driver is None:
            raise RuntimeError(f"driver {spec.driver} of {spec.id} is not running")
        await driver.command(spec.id, out.on if on else out.off, {})

    return switch


def attach(gw: Gateway) -> AlarmEngine:
    """The engine of `gw`, registered as observer, service and `alarms` command family."""
    config = gw.loaded.config
    cfg: AlarmsConfig = config.alarms
    engine = AlarmEngine(
        cfg,
        path=cfg.store_path(config.outbox.path),
        topics=gw.topics,
        devices={s.id: DeviceInfo.of(s.ref, s.name) for s in gw.loaded.devices},
        outbox=gw.outbox,
        output=_output(gw, cfg),
        clock=gw.clock,
    )
    gw.message_observers.append(engine.observe)
    gw.availability_observers.append(engine.observe_availability)
    gw.services["alarms"] = engine.run
    gw.router.register("alarms", alarms_handler(engine))
    return engine
