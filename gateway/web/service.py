"""Wires the local web into its host: observers, the `requests` commands, the service.

`attach(host, alarms)` is called by the runtime when `web.enabled` is set, after the
alarm engine is built.  The web server is a host service, so it starts after the
uplink, stops before it, and is restarted by the runtime's supervisor if it ever crashes.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

from aiohttp import web

from community_protocol.topics import CommandPath
from gateway.alarms.engine import AlarmEngine
from gateway.host import Host
from gateway.web.guard import (
    Caps,
    GuardedServer,
    QuietHandler,
    RefusalLog,
    connection_budget,
    quiet_resource_errors,
)
from gateway.web.live import LiveState
from gateway.web.meters import MeterHistory
from gateway.web.requests import RequestStore
from gateway.web.server import WebApp
from gateway.web.staff import staff_file_of
from gateway.web.timefmt import load_zone

__all__ = ["WebService", "attach"]

log = logging.getLogger(__name__)

_PURGE_EVERY_S = 3600.0
# Requests the outbox refused (full disk) are handed over again this often.
_REPUBLISH_EVERY_S = 60.0


class WebService:
    """The web server of one gateway; `run` serves until cancelled."""

    def __init__(self, host: Host, alarms: AlarmEngine) -> None:
        config = host.config
        self.cfg = config.web
        devices = list(host.devices)
        # The building view's 24-hour meter charts, kept next to the other web state.
        self.meters = MeterHistory(
            config.gateway.state_dir / "web-meters.json",
            {d.id for d in devices if str(d.ref.kind) == "meter"},
        )
        self.live = LiveState(
            devices,
            alarms=alarms,
            zone=load_zone(self.cfg.timezone),
            site_name=config.site.name,
            meters=self.meters,
        )
        self.store = RequestStore(
            self.cfg.db_path or config.gateway.state_dir / "web.db",
            host.outbox,
            host.topics,
            clock=host.clock.state,
        )
        self.web = WebApp(
            self.cfg,
            identity=config.identity,
            live=self.live,
            store=self.store,
            staff=staff_file_of(self.cfg, config.gateway.state_dir),
            sessions_file=config.gateway.state_dir / "web-sessions.json",
        )

    def _ssl(self) -> ssl.SSLContext | None:
        tls = self.cfg.tls
        if tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise RuntimeError(
                f"web.tls: cannot load {tls.cert_file} / {tls.key_file}: {exc}"
            ) from exc
        return ctx

    async def _purge(self) -> None:
        keep = self.cfg.kiosk.keep_days
        try:
            n = await asyncio.to_thread(self.store.purge, keep)
        except Exception:
            log.exception("web: could not delete old service requests")
            return
        if n:
            log.info("web: deleted %d service requests older than %d days", n, keep)

    async def _publish_pending(self) -> None:
        try:
            await self.store.publish_pending()
        except Exception:
            log.exception("web: stored service requests not yet in the outbox; retrying later")

    async def run(self) -> None:
        self.live.start()
        await asyncio.to_thread(self.meters.load)
        # Before the kiosk takes new requests: those stored but not in the outbox when the
        # gateway last stopped (a crash between the two) go to the platform now.
        await self._publish_pending()
        self.web.load_sessions()
        keeper = asyncio.create_task(self.web.keep_sessions())
        runner = web.AppRunner(self.web.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        lim = self.cfg.limits
        server = runner.server
        assert server is not None
        bad = RefusalLog("malformed requests", lim.log_every_s)
        crashes = RefusalLog("requests: internal errors", lim.log_every_s)
        listener = GuardedServer(
            lambda: QuietHandler(server, bad=bad, crashes=crashes),
            Caps(lim.connections_per_client, connection_budget(lim.connections_total)),
            RefusalLog("web connections", lim.log_every_s),
        )
        quiet_resource_errors(asyncio.get_running_loop(), lim.log_every_s)
        try:
            try:
                await listener.start(self.cfg.bind, self.cfg.port, self._ssl())
            except OSError as exc:
                raise RuntimeError(
                    f"web: cannot listen on {self.cfg.bind}:{self.cfg.port}: {exc.strerror}"
                ) from exc
            scheme = "https" if self.cfg.tls else "http"
            log.info("web: console and kiosk on %s://%s:%d", scheme, self.cfg.bind, self.cfg.port)
            loop = asyncio.get_running_loop()
            purged_at = -_PURGE_EVERY_S
            while True:
                if loop.time() - purged_at >= _PURGE_EVERY_S:
                    await self._purge()
                    purged_at = loop.time()
                await asyncio.sleep(_REPUBLISH_EVERY_S)
                await self._publish_pending()
                if self.meters.due():
                    await asyncio.to_thread(self.meters.save)
        finally:
            # End the event streams first so the runner need not wait for them.
            listener.close()
            self.live.stop()
            keeper.cancel()
            await self.web.save_sessions()
            await runner.cleanup()
            self.meters.save()
            self.store.close()


def attach(host: Host, alarms: AlarmEngine) -> WebService:
    """Register the web, showing `alarms`, with a host that has not started yet."""
    svc = WebService(host, alarms)
    host.add_message_observer(svc.live.on_message)
    host.add_availability_observer(svc.live.on_availability)
    host.add_devices_observer(svc.live.set_devices)
    host.add_command_route(CommandPath.REQUESTS, svc.store.command)
    host.add_service("web", svc.run)
    return svc
