"""The aiohttp application: the console's and the kiosk's routes, and what guards them all.

The routes live with their screen (`console_routes`, `kiosk_routes`); this module
builds them over the shared state (sessions, trusted devices, event-stream caps) and
mounts them with the guards every response passes: security headers, JSON errors for
the console's scripts, a 64 KiB body limit.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from gateway.sdk.model import Identity
from gateway.web.auth import DeviceTrust, SessionStore
from gateway.web.console_routes import SESSION_COOKIE, ConsoleRoutes
from gateway.web.kiosk_routes import KioskRoutes
from gateway.web.live import LiveState
from gateway.web.requests import RequestStore
from gateway.web.responses import json_errors, security_headers
from gateway.web.sessionfile import SessionKeeper
from gateway.web.settings import WebConfig
from gateway.web.staff import StaffCache, StaffFile
from gateway.web.streams import EventStreams

__all__ = ["SESSION_COOKIE", "WebApp"]

STATIC = Path(__file__).parent / "static"


class WebApp:
    """The console and kiosk routes over the gateway's live state and request store."""

    def __init__(
        self,
        cfg: WebConfig,
        *,
        identity: Identity,
        live: LiveState,
        store: RequestStore,
        staff: StaffFile,
        sessions_file: Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.sessions = SessionStore(cfg.session_idle_s)
        self.devices = DeviceTrust()
        self.keeper = SessionKeeper(self.sessions, self.devices, sessions_file)
        streams = EventStreams(cfg)
        self.console = ConsoleRoutes(
            cfg,
            identity=identity,
            live=live,
            staff=StaffCache(staff),
            sessions=self.sessions,
            devices=self.devices,
            streams=streams,
        )
        self.kiosk = KioskRoutes(cfg, live=live, store=store, streams=streams)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[json_errors], client_max_size=64 * 1024)
        app.on_response_prepare.append(security_headers)
        c, k = self.console, self.kiosk
        r = app.router
        r.add_get("/", self.root)
        r.add_get("/favicon.ico", self.no_content)
        r.add_static("/static/", STATIC, append_version=False)
        r.add_get("/signin", c.signin_form)
        r.add_post("/signin", c.signin)
        r.add_post("/signout", c.signout)
        r.add_get("/console", c.console)
        r.add_get("/console/state", c.console_state)
        r.add_get("/console/events", c.console_events)
        r.add_get("/console/place", c.console_place)
        r.add_post("/console/alarms/{alarm_id}/ack", c.ack)
        r.add_get("/kiosk/{kiosk}", k.kiosk_home)
        r.add_get("/kiosk/{kiosk}/new/{category}", k.kiosk_form)
        r.add_post("/kiosk/{kiosk}/requests", k.kiosk_file)
        r.add_get("/kiosk/{kiosk}/filed/{code}", k.kiosk_filed)
        r.add_get("/kiosk/{kiosk}/status", k.kiosk_status)
        r.add_get("/kiosk/{kiosk}/events", k.kiosk_events)
        return app

    # ---- sessions across restarts (see sessionfile) ----------------------------------

    def load_sessions(self) -> None:
        """Take back the sessions saved before a restart; a bad file only signs staff out."""
        self.keeper.load()

    async def save_sessions(self) -> None:
        """Write the live sessions (keys, never tokens) to the sessions file."""
        await self.keeper.save()

    async def keep_sessions(self) -> None:
        """Save the sessions soon after a sign-in or sign-out, and their idle times now and then."""
        await self.keeper.keep()

    async def no_content(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(f"/kiosk/{self.cfg.kiosk.ids[0]}")
