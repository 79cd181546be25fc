"""The gateway process: outbox, uplink, drivers and health, started and stopped in order.

Start: open the outbox (so nothing a driver emits can be lost), start the uplink and
the sinks, then the drivers.  Stop: cancel the drivers, let the outbox commit what they
handed it, let the uplink and the sinks deliver what they can for a moment, close the
outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from community_protocol.topics import CommandPath, Topics
from gateway import __version__
from gateway.alarms.engine import AlarmEngine
from gateway.alarms.model import Devices
from gateway.alarms.wiring import attach as attach_alarms
from gateway.config import GatewayConfig, LoadedConfig, conflicting_devices
from gateway.fleet.diag import attach as attach_diag
from gateway.fleet.service import attach as attach_fleet
from gateway.host import Hooks, TopicWatcher
from gateway.mqtt.commands import Command, CommandFailed, CommandRouter
from gateway.mqtt.uplink import Reply, Uplink
from gateway.process.drivers import DriverSeat
from gateway.process.health import build_health
from gateway.process.outboxes import StorageEvents, build_outbox
from gateway.process.supervision import ThreadDeath, ThreadDeaths
from gateway.process.tasks import cancel_all, supervise
from gateway.sdk.clock import Clock
from gateway.sdk.driver import DeviceSpec, Driver
from gateway.sdk.model import (
    ClockState,
    DeviceRef,
    Identity,
    Message,
    Priority,
    encode,
)
from gateway.sdk.registry import available_drivers
from gateway.security.guard import command_guard
from gateway.sinks.sink import build_sinks
from gateway.sinks.wiring import attach as attach_sinks
from gateway.storage.outbox import OutboxItem

__all__ = ["Gateway", "StorageEvents", "build_outbox"]

log = logging.getLogger(__name__)


class Gateway(Hooks):
    """One running gateway; `run()` returns when `stop` is set.

    It is the `Host` (gateway/host.py) of its features: they register with it through
    that interface only, before `run`.
    """

    def __init__(self, loaded: LoadedConfig, *, broker_url: str | None = None) -> None:
        cfg = loaded.config
        self.loaded = loaded
        self.identity: Identity = cfg.identity
        broker = (
            cfg.broker if broker_url is None else cfg.broker.model_copy(update={"url": broker_url})
        )
        self.topics = Topics(broker.topic_prefix, self.identity)
        self.clock = Clock(cfg.clock.check)
        self.started = datetime.now(UTC)
        self.sinks = build_sinks(cfg)
        self.outbox = build_outbox(loaded, self.sinks)
        super().__init__(CommandRouter(now=self._synced_now))
        self.router.guard = command_guard(cfg.security, self.identity, self._synced_now)
        self.uplink = Uplink(
            broker,
            self.identity,
            self.outbox,
            started=self.started,
            clock=self.clock.state,
            on_command=self._on_command,
        )
        self.drivers: dict[str, Driver] = {}
        # Each running driver's task and devices: `restart_driver` replaces one of them.
        self._driver_tasks: dict[str, asyncio.Task[None]] = {}
        self._driver_specs: dict[str, list[DeviceSpec]] = {}
        # Each driver's last failure (a crash, or its start refused), for a trial to judge.
        self.driver_failures: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_beat = time.monotonic()
        self.on_ready: Callable[[], None] | None = None
        self.restart_pause_s = 5.0  # after a driver or service crashed
        # Set when a worker thread died: `run` then stops and the process exits non-zero.
        self.failure: ThreadDeath | None = None
        # Set by a feature (remote configuration) that needs the process started afresh.
        self.restart_reason: str | None = None
        self._stop: asyncio.Event | None = None
        self._attach_features(cfg)

    def _attach_features(self, cfg: GatewayConfig) -> None:
        # The alarm engine first: the web console and the SMS notifier follow it.
        self.alarms: AlarmEngine = attach_alarms(self)
        if cfg.web.enabled:
            # Imported only when enabled: a gateway without screens never loads aiohttp.
            from gateway.web.service import attach as attach_web

            attach_web(self, self.alarms)
        attach_sinks(self, self.sinks)
        if cfg.notify.sms is not None:
            # Imported only when configured: a gateway without a modem never loads it.
            from gateway.notify.sms import attach as attach_sms

            attach_sms(self, cfg.notify.sms, listen=self.alarms.listen)
        if cfg.wellness.checks:
            # Imported only when configured, like the web console and the SMS notifier.
            from gateway.wellness.monitor import attach as attach_wellness

            attach_wellness(self)
        attach_fleet(self)
        # Software updates: the `update` command and the health gate of a new release.
        from gateway.fleet.update_front import attach as attach_update

        attach_update(self)
        # Always attached: without a trusted key it refuses every request, saying why.
        attach_diag(self)

    # ---- the Host interface, besides Hooks ---------------------------------------------

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.config

    @property
    def devices(self) -> tuple[DeviceSpec, ...]:
        return self.loaded.devices

    def device(self, device_id: str) -> DeviceSpec:
        return self.loaded.device(device_id)

    @property
    def config_path(self) -> Path:
        return self.loaded.path

    def watch(self, topic: str, watcher: TopicWatcher) -> None:
        self.uplink.documents.watches[topic] = watcher

    def publish_document(self, topic: str, payload: bytes) -> None:
        self.uplink.publish_document(topic, payload)

    def broker_problem(self) -> str:
        return self.uplink.last_error

    def request_restart(self, reason: str) -> None:
        log.warning("restarting: %s", reason)
        self.restart_reason = reason
        if self._stop is not None:
            self._stop.set()

    async def restart_driver(self, name: str) -> None:
        task = self._driver_tasks.get(name)
        if task is None or (self._stop is not None and self._stop.is_set()):
            # While stopping, a new task would outlive the drivers' cancellation.
            raise KeyError(f"no driver {name!r} is running")
        log.info("restarting driver %s", name)
        await cancel_all([task])
        self._launch_driver(name, self._driver_specs[name])

    async def apply_devices(self, loaded: LoadedConfig, drivers: set[str]) -> None:
        """Run `loaded`'s devices: the `drivers` named stop and start on their new lists.

        The caller (remote configuration) checked that only devices differ; the other
        drivers run on untouched.
        """
        self.loaded = loaded
        self.alarms.devices = Devices(loaded.devices)
        await cancel_all([t for n, t in self._driver_tasks.items() if n in drivers])
        plan = self._plan()
        for name in sorted(drivers):
            self._driver_tasks.pop(name, None)
            self._driver_specs.pop(name, None)
            self.drivers.pop(name, None)
            self.driver_failures.pop(name, None)
            if name in plan:
                try:
                    self._launch_driver(name, plan[name])
                except Exception as exc:  # a driver refusing its devices: the trial fails
                    log.error("driver %s did not start: %r", name, exc)
                    self.driver_failures[name] = f"driver {name} did not start: {exc!r}"
        # The web console and the wellness checks follow the new list.
        self.tell_devices(loaded.devices)
        log.info(
            "devices applied: %d devices, drivers %s restarted",
            len(loaded.devices),
            sorted(drivers),
        )

    async def command_device(self, device_id: str, command: str, args: Mapping[str, Any]) -> Any:
        spec = self.loaded.device(device_id)
        driver = self.drivers.get(spec.driver)
        if driver is None:
            raise RuntimeError(f"driver {spec.driver} of {device_id!r} is not running")
        return await driver.command(device_id, command, args)

    # ---- observers -------------------------------------------------------------------

    def _set_available(self, ref: DeviceRef, available: bool | None, reason: str) -> None:
        # A driver's report (or a device left unstarted): to the platform, then locally.
        self.uplink.set_availability(ref, available, reason)
        self.observe_availability(ref, available, reason)

    def observe(self, message: Message, *, source: str = "") -> None:
        """Tell the observers and the other drivers about a message now in the outbox."""
        self.tell_observers(message)
        for name, driver in self.drivers.items():
            if name == source:
                continue
            try:
                driver.observe(message)
            except Exception:
                log.exception(
                    "driver %s failed to observe a message of %s", name, message.device.id
                )

    # ---- messages --------------------------------------------------------------------

    async def emit(self, message: Message, *, source: str = "") -> None:
        """Hand a message to the outbox, then tell the observers and the other drivers.

        An event returns once committed (the alarm engine acts on durable events only).
        Telemetry returns at once: it is queued for the writer's next commit, or, with
        `Outbox.max_queued` readings already waiting, shed and counted as dropped with
        its seq, so a fast device neither waits on commits nor piles readings up in
        memory.  Drivers emit through their context; runtime services here.
        """
        item = self.item_for(message)
        if message.priority is Priority.EVENT:
            await self.outbox.aput(item)
        else:
            self.outbox.offer(item)
        self.observe(message, source=source)

    def item_for(self, message: Message) -> OutboxItem:
        return OutboxItem(
            priority=message.priority,
            channel=message.channel,
            device_kind=str(message.device.kind),
            topic=self.topics.device(message.device.id, message.channel),
            build_payload=partial(self._encode, message),
        )

    def _encode(self, message: Message, seq: int) -> bytes:
        # Runs in the outbox's writer thread when the seq is assigned.
        state = self.clock.state()
        return encode(
            message,
            self.identity,
            seq,
            state,
            uptime_ms=self.clock.uptime_ms(),
            boot_id=self.clock.boot_id,
        )

    # ---- commands --------------------------------------------------------------------

    def _synced_now(self) -> datetime | None:
        # A command's `expires` is judged only by a clock known to be right.
        return datetime.now(UTC) if self.clock.state() is ClockState.SYNCED else None

    def _on_command(self, path: str, payload: bytes, reply: Reply) -> None:
        # Called in the uplink thread; the work runs on the event loop.
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self.router.handle(path, payload), self._loop)
        fut.add_done_callback(lambda f: self.uplink.reply(reply, f.result()))

    async def _cmd_ping(self, cmd: Command) -> tuple[str, Any]:
        return "done", {"pong": True, "session": self.uplink.session, "version": __version__}

    async def _cmd_device(self, cmd: Command) -> tuple[str, Any]:
        if len(cmd.parts) != 3:
            raise CommandFailed(f"device commands are {CommandPath.DEVICE_FORM}")
        _, device_id, name = cmd.parts
        try:
            spec = self.loaded.device(device_id)
        except KeyError as exc:
            raise CommandFailed(f"unknown device {device_id!r}") from exc
        try:
            result = await self.command_device(spec.id, name, cmd.args)
        except Exception as exc:
            raise CommandFailed(str(exc)) from exc
        return "done", result

    # ---- health ----------------------------------------------------------------------

    def health_doc(self) -> dict[str, Any]:
        doc = build_health(self.identity, self.clock, self.outbox, self.uplink, self.drivers)
        doc.update(self.health_parts_doc())
        return doc

    async def _health_loop(self) -> None:
        interval = self.loaded.config.health.interval_s
        while True:
            await asyncio.sleep(interval)
            self.uplink.publish_health(self.health_doc())

    async def _beat(self) -> None:
        # Proves the event loop itself is not stuck (for the systemd watchdog).
        while True:
            self._last_beat = time.monotonic()
            await asyncio.sleep(1.0)

    def alive(self) -> bool:
        """True while the event loop and the uplink thread both make progress."""
        return time.monotonic() - self._last_beat < 10 and self.uplink.alive()

    # ---- lifecycle -------------------------------------------------------------------

    def _start_drivers(self) -> list[asyncio.Task[None]]:
        return [self._launch_driver(name, specs) for name, specs in self._plan().items()]

    def _plan(self) -> dict[str, list[DeviceSpec]]:
        """Each driver's devices to start; those in conflict are reported and left out."""
        infos = available_drivers()
        by_driver: dict[str, list[DeviceSpec]] = {}
        # Devices in conflict (validate refuses them) stay unstarted and are reported
        # unavailable with the reason; every other device runs (docs/config.md).
        unstarted = conflicting_devices(self.loaded.devices, infos)
        for spec in self.loaded.devices:
            reason = unstarted.get(spec.id)
            if reason is not None:
                log.error("device %s %s", spec.id, reason)
                self._set_available(spec.ref, False, reason)
                continue
            by_driver.setdefault(spec.driver, []).append(spec)
        return by_driver

    def _launch_driver(self, name: str, specs: list[DeviceSpec]) -> asyncio.Task[None]:
        """A new instance of driver `name` on `specs`, running in a supervised task."""
        seat = DriverSeat(name, specs, emit=self.emit, availability=self._set_available)
        driver = available_drivers()[name].factory(specs, seat)
        self.drivers[name] = driver
        task = asyncio.create_task(
            supervise(
                f"driver {name}", driver.run, self.restart_pause_s, partial(self._crashed, name)
            ),
            name=f"driver:{name}",
        )
        self._driver_tasks[name] = task
        self._driver_specs[name] = specs
        return task

    def _crashed(self, name: str, exc: Exception) -> None:
        self.driver_failures[name] = f"driver {name} crashed: {exc!r}"

    def _thread_died(self, stop: asyncio.Event, death: ThreadDeath) -> None:
        # Runs in the dying thread.  A drivers-only gateway would stay up publishing
        # nothing (or a sink stay silent for good): stop it all instead, in order, and let
        # the service manager start it afresh.
        self.failure = death
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: stopping anyway
                loop.call_soon_threadsafe(stop.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, or until a worker thread dies (then `failure` says which)."""
        self._loop = asyncio.get_running_loop()
        self.router.register(CommandPath.PING, self._cmd_ping)
        self.router.register(CommandPath.DEVICES, self._cmd_device)
        self._stop = stop
        with ThreadDeaths(partial(self._thread_died, stop), stopping=stop.is_set):
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        self.outbox.open()
        try:
            self.uplink.start()
            for sink in self.sinks:
                sink.start(self.outbox)
            tasks = [
                asyncio.create_task(supervise(name, service, self.restart_pause_s), name=name)
                for name, service in self.services.items()
            ]
            self._start_drivers()
            tasks.append(asyncio.create_task(self._health_loop(), name="health"))
            tasks.append(asyncio.create_task(self._beat(), name="beat"))
            log.info(
                "gateway %s/%s running: %d devices, %d drivers",
                self.identity.site,
                self.identity.gateway,
                len(self.loaded.devices),
                len(self.drivers),
            )
            if self.on_ready is not None:
                self.on_ready()
            await stop.wait()
            log.info("stopping: drivers first, then the uplink and sinks, then the outbox")
            # A restarted driver's task is not in `tasks`: take them as they are now.
            await cancel_all([*self._driver_tasks.values(), *tasks])
            await asyncio.gather(
                asyncio.to_thread(self.uplink.stop, 2.0),
                *(asyncio.to_thread(sink.stop, 2.0) for sink in self.sinks),
            )
        finally:
            self.outbox.close()
