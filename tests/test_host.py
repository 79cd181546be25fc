"""Features on a `Host` without a `Gateway`: the alarm engine and the web plug in alone.

The host here is the smallest real one: a real outbox in the test's folder, the real
command router, topic tree and clock.  Only the device drivers are absent: the device
commands the alarm engine sends (the office buzzer) are recorded where a driver would
switch a relay.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from community_protocol.topics import Topics
from gateway.alarms.wiring import attach as attach_alarms
from gateway.config import GatewayConfig, LoadedConfig, load_config
from gateway.host import Hooks, Host
from gateway.mqtt.commands import CommandRouter
from gateway.sdk.clock import Clock
from gateway.sdk.driver import DeviceSpec
from gateway.sdk.model import Event, EventType, Message
from gateway.storage.outbox import Consumer, Outbox, OutboxItem
from gateway.web.service import attach as attach_web
from tests.harness import write_config
from tests.peers import free_port
from tests.web_harness import SMOKE, HttpClient

BUZZER = {
    "id": "buzzer-office",
    "kind": "elderly_alarm",
    "location": {"building": "2", "floor": 0, "unit": "office"},
    "driver": {"type": "simulated"},
}


class LocalHost(Hooks):
    """A host of features with a real outbox and router, and no drivers."""

    def __init__(self, loaded: LoadedConfig, outbox: Outbox) -> None:
        super().__init__(CommandRouter(now=lambda: None))
        self.loaded = loaded
        self.topics = Topics(loaded.config.broker.topic_prefix, loaded.config.identity)
        self.clock = Clock(loaded.config.clock.check)
        self.outbox = outbox
        self.switched: list[tuple[str, str]] = []

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.config

    @property
    def devices(self) -> Sequence[DeviceSpec]:
        return self.loaded.devices

    def device(self, device_id: str) -> DeviceSpec:
        return self.loaded.device(device_id)

    async def emit(self, message: Message, *, source: str = "") -> None:
        payload = json.dumps({"msg_id": message.msg_id, "device": message.device.id})
        await self.outbox.aput(
            OutboxItem(
                priority=message.priority,
                channel=message.channel,
                device_kind=str(message.device.kind),
                topic=self.topics.device(message.device.id, message.channel),
                build_payload=lambda seq: payload.encode(),
            )
        )
        self.tell_observers(message)

    @property
    def config_path(self) -> Path:
        return self.loaded.path

    def health_doc(self) -> dict[str, Any]:
        return self.health_parts_doc()

    async def restart_driver(self, name: str) -> None:
        raise KeyError(f"no driver {name!r} is running")  # this host runs no drivers

    driver_failures: dict[str, str] = {}  # noqa: RUF012 - never written: no drivers

    async def apply_devices(self, loaded: LoadedConfig, drivers: set[str]) -> None:
        self.loaded = loaded  # no drivers to restart

    async def command_device(self, device_id: str, command: str, args: Mapping[str, Any]) -> Any:
        self.device(device_id)  # KeyError for a device not configured, as a Gateway
        self.switched.append((device_id, command))
        return {"output": command}


def _host(tmp_path: Path, port: int) -> LocalHost:
    loaded = load_config(
        write_config(
            tmp_path / "gw.yaml",
            "mqtt://127.0.0.1:1",  # never connected: this host has no uplink
            [SMOKE, BUZZER],
            web={"enabled": True, "port": port},
            alarms={"escalation": {"critical": 0.3, "output": {"device": "buzzer-office"}}},
        )
    )
    cfg = loaded.config.outbox
    outbox = Outbox(
        cfg.path,
        max_messages=cfg.max_messages,
        commit_interval_ms=cfg.commit_interval_ms,
        sync=cfg.sync,
        consumers=[Consumer("platform")],
    )
    return LocalHost(loaded, outbox)


def test_alarms_and_web_run_on_a_host_without_a_gateway(tmp_path: Path) -> None:
    port = free_port()
    host = _host(tmp_path, port)
    _: Host = host  # the test's host is a Host to mypy, as the Gateway is
    engine = attach_alarms(host)
    attach_web(host, engine)
    assert set(host.services) == {"alarms", "web"}

    async def kiosk_page() -> str:
        resp = await asyncio.to_thread(partial(HttpClient(port).get, "/kiosk/lobby", timeout=2))
        return resp.body

    async def until(check: Any, timeout_s: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await check():
            assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
            await asyncio.sleep(0.05)

    async def scenario() -> None:
        host.outbox.open()
        tasks = [asyncio.create_task(run(), name=name) for name, run in host.services.items()]
        try:

            async def serving() -> bool:
                try:
                    return bool(await kiosk_page())
                except OSError:
                    return False

            await until(serving)
            quiet = await kiosk_page()
            smoke = host.device("smoke-b2-stair-2").ref
            await host.emit(Event(smoke, datetime.now(UTC), EventType.SMOKE_ALARM))

            async def raised() -> bool:
                return any(a["state"] == "active" for a in engine.snapshot())

            await until(raised)
            [alarm] = engine.snapshot()
            # The web shows the engine it was given: the kiosk's fire banner appears.
            assert await kiosk_page() != quiet

            async def escalated() -> bool:
                return ("buzzer-office", "on") in host.switched

            await until(escalated)
            # The route the engine registered answers an acknowledgement.
            reply = await host.router.handle(
                f"alarms/{alarm['alarm_id']}/ack", json.dumps({"by": "staff-li"}).encode()
            )
            assert reply["ok"], reply

            async def silenced() -> bool:
                return ("buzzer-office", "off") in host.switched

            await until(silenced)
            assert engine.snapshot()[0]["state"] == "acknowledged"

            # The engine published its states through the host's outbox (the last one
            # once the alarm database has it: waited for, not assumed).
            async def three_states() -> bool:
                return host.outbox.stats().depth_events >= 3

            await until(three_states)
            reply = await host.router.handle("requests/none", b"{}")
            assert "unknown command" not in str(reply.get("error")), "web's route is there"
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            host.outbox.close()

    asyncio.run(scenario())


def test_a_feature_registered_twice_is_refused(tmp_path: Path) -> None:
    host = _host(tmp_path, free_port())
    attach_alarms(host)
    try:
        attach_alarms(host)
    except ValueError as exc:
        assert "'alarms'" in str(exc)
    else:
        raise AssertionError("a second alarm engine was accepted")
