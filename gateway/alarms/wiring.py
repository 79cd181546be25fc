"""Builds a gateway's alarm engine and plugs it into its host's extension points."""

from __future__ import annotations

from community_protocol.topics import CommandPath
from gateway.host import Host

from .commands import alarms_handler
from .engine import AlarmEngine, OutputSwitch
from .model import Devices
from .settings import AlarmsConfig

__all__ = ["attach"]


def _output(host: Host, cfg: AlarmsConfig) -> OutputSwitch | None:
    out = cfg.escalation.output
    if out is None:
        return None
    device_id = host.device(out.device).id  # checked by `gateway validate`

    async def switch(on: bool) -> None:
        await host.command_device(device_id, out.on if on else out.off, {})

    return switch


def attach(host: Host) -> AlarmEngine:
    """The engine of `host`, registered as observer, service and `alarms` command family."""
    config = host.config
    cfg: AlarmsConfig = config.alarms
    engine = AlarmEngine(
        cfg,
        path=cfg.store_path(config.outbox.path),
        topics=host.topics,
        devices=Devices(host.devices),
        outbox=host.outbox,
        output=_output(host, cfg),
        clock=host.clock,
    )
    host.add_message_observer(engine.observe)
    host.add_availability_observer(engine.observe_availability)
    host.add_service("alarms", engine.run)
    host.add_command_route(CommandPath.ALARMS, alarms_handler(engine))
    return engine
