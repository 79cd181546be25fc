"""The aiohttp application: routes of the staff console and the kiosk, and their guards.

Every console route needs a session cookie; every POST needs a CSRF token (the
session's for the console, a double-submit cookie for the sign-in form and the kiosk,
which have no session).  Sign-in failures are rate-limited per client address and
per staff id, kiosk requests per kiosk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from aiohttp import web

from gateway.sdk.files import write_private
from gateway.sdk.model import Identity, format_ts
from gateway.web import pages
from gateway.web.auth import (
    DeviceTrust,
    FailureLimiter,
    Session,
    SessionStore,
    WindowLimiter,
    tokens_match,
)
from gateway.web.building import Place, at_place
from gateway.web.guard import SECURITY_HEADERS, SERVER_NAME, Caps, RefusalLog
from gateway.web.i18n import t
from gateway.web.live import LiveState
from gateway.web.requests import (
    Category,
    RequestError,
    RequestStore,
    ServiceRequest,
    StatusEntry,
    normalise_code,
)
from gateway.web.settings import Lang, WebConfig
from gateway.web.staff import StaffError, StaffFile, StaffMember, verify_secret

__all__ = ["SESSION_COOKIE", "WebApp"]

log = logging.getLogger(__name__)

SESSION_COOKIE = "gw_session"
SIGNIN_COOKIE = "gw_signin_csrf"
LANG_COOKIE = "gw_console_lang"
KIOSK_COOKIE = "gw_kiosk_csrf"
DEVICE_COOKIE = "gw_device"
STATIC = Path(__file__).parent / "static"
_HEARTBEAT_S = 15.0
_FAILURE_DELAY_S = 1.0
_GONE_CHECK_S = 1.0
_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
}
# Sessions are saved within a second of a sign-in or sign-out, and their idle times
# every minute (a restart may give a session back up to a minute of idle time).
_SESSIONS_CHECK_S = 1.0
_SESSIONS_SAVE_S = 60.0
# A hash to check against when the staff id is unknown, so that an unknown id takes as
# long to refuse as a wrong PIN and does not reveal which ids exist.
_DUMMY_HASH = (
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _StaffCache:
    """The staff file, re-read when it changes, so `gateway staff add` needs no restart."""

    file: StaffFile
    mtime: float | None = None
    members: dict[str, StaffMember] | None = None

    def get(self) -> dict[str, StaffMember]:
        try:
            mtime = self.file.path.stat().st_mtime
        except FileNotFoundError:
            mtime = None
        if self.members is None or mtime != self.mtime:
            try:
                self.members = self.file.load()
            except StaffError as exc:
                log.error("staff file unusable, nobody can sign in: %s", exc)
                self.members = {}
            self.mtime = mtime
        return self.members


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def _security_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """Headers every response carries, set as it is prepared: so also redirects, 401/404/413
    raised as exceptions (inside aiohttp too) and refusals, which a middleware never sees."""
    for name, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)
    resp.headers["Server"] = SERVER_NAME
    if request.path.startswith(("/console", "/signin", "/kiosk")):
        resp.headers.setdefault("Cache-Control", "no-store")


_ERROR_CODES = {
    400: "bad-request",
    401: "session-ended",
    403: "csrf",
    404: "not-found",
    405: "bad-request",
    413: "too-large",
    429: "rate-limited",
    503: "unavailable",
}


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors of the console as JSON for a client that asks for JSON (the page's fetch).

    Whatever raised them (a guard here or aiohttp, e.g. a body over the size limit), so
    the page can always parse the answer and show its own words for `code`.
    """
    wants = request.path.startswith("/console") and "application/json" in request.headers.get(
        "Accept", ""
    )
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        if not wants or exc.status < 400:
            raise
        resp = exc
    if not wants or resp.status < 400 or not isinstance(resp, web.Response):
        return resp
    if resp.content_type == "application/json":
        return resp
    text = re.sub(r"^\d{3}: ", "", (resp.text or resp.reason or "").strip())
    doc = {"error": text, "code": _ERROR_CODES.get(resp.status, "error")}
    if resp.status == 401:
        doc["signin"] = "/signin"
    out = web.json_response(doc, status=resp.status)
    for name in ("Retry-After", "Connection"):
        if name in resp.headers:
            out.headers[name] = resp.headers[name]
    return out


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
        self.identity = identity
        self.live = live
        self.store = store
        self.staff = _StaffCache(staff)
        self.sessions = SessionStore(cfg.session_idle_s)
        self.sessions_file = sessions_file
        self._saved = self.sessions.version
        lim = cfg.signin
        self.signin_limit = FailureLimiter(lim.max_failures, lim.window_s, lim.lockout_s)
        self.signin_refusals = RefusalLog("sign-ins (locked out)", cfg.limits.log_every_s)
        self.devices = DeviceTrust()
        self.kiosk_limit = WindowLimiter(cfg.kiosk.max_requests, cfg.kiosk.window_s)
        self.kiosk_client_limit = WindowLimiter(
            cfg.kiosk.max_requests_per_client, cfg.kiosk.window_s
        )
        self.kiosk_refusals = RefusalLog("kiosk requests", cfg.limits.log_every_s)
        self.code_limit = WindowLimiter(
            cfg.limits.wrong_codes_per_client, cfg.limits.wrong_codes_window_s
        )
        self.code_refusals = RefusalLog("request-code lookups", cfg.limits.log_every_s)
        caps = cfg.limits
        self.stream_caps = {
            "console": Caps(caps.streams_per_client, caps.streams_total),
            "kiosk": Caps(caps.streams_per_client, caps.streams_total),
        }
        self.stream_refusals = RefusalLog("event streams", caps.log_every_s)
        self.secure_cookies = cfg.tls is not None
        self.zone = live.zone

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_json_errors], client_max_size=64 * 1024)
        app.on_response_prepare.append(_security_headers)
        r = app.router
        r.add_get("/", self.root)
        r.add_get("/favicon.ico", self.no_content)
        r.add_static("/static/", STATIC, append_version=False)
        r.add_get("/signin", self.signin_form)
        r.add_post("/signin", self.signin)
        r.add_post("/signout", self.signout)
        r.add_get("/console", self.console)
        r.add_get("/console/state", self.console_state)
        r.add_get("/console/events", self.console_events)
        r.add_get("/console/place", self.console_place)
        r.add_post("/console/alarms/{alarm_id}/ack", self.ack)
        r.add_get("/kiosk/{kiosk}", self.kiosk_home)
        r.add_get("/kiosk/{kiosk}/new/{category}", self.kiosk_form)
        r.add_post("/kiosk/{kiosk}/requests", self.kiosk_file)
        r.add_get("/kiosk/{kiosk}/filed/{code}", self.kiosk_filed)
        r.add_get("/kiosk/{kiosk}/status", self.kiosk_status)
        r.add_get("/kiosk/{kiosk}/events", self.kiosk_events)
        return app

    # ---- helpers ---------------------------------------------------------------------

    def _cookie(
        self,
        resp: web.StreamResponse,
        name: str,
        value: str,
        path: str = "/",
        max_age: int | None = None,
    ) -> None:
        resp.set_cookie(
            name,
            value,
            path=path,
            max_age=max_age,
            httponly=True,
            samesite="Strict",
            secure=self.secure_cookies,
        )

    def _session(self, request: web.Request) -> Session | None:
        s = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if s is not None and s.staff_id not in self.staff.get():
            # Account removed with `gateway staff remove`: its sessions end now.
            self.sessions.drop_staff(s.staff_id)
            return None
        return s

    async def _form(self, request: web.Request) -> dict[str, str]:
        try:
            data = await request.post()
        except ValueError as exc:  # malformed body
            # Not the parser's message: it may quote what the client sent.
            raise web.HTTPBadRequest(text="400: malformed form") from exc
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def _console_lang(self, request: web.Request) -> Lang:
        """The console's language: `?lang=` (the switch), else the cookie, else the config."""
        for raw in (request.query.get("lang"), request.cookies.get(LANG_COOKIE)):
            try:
                return Lang(raw or "")
            except ValueError:
                continue
        return self.cfg.console_lang

    def _keep_lang(self, request: web.Request, resp: web.StreamResponse, lang: Lang) -> None:
        # Remembered when switched, so the redirects after a form post keep the language.
        if "lang" in request.query and request.cookies.get(LANG_COOKIE) != lang:
            self._cookie(resp, LANG_COOKIE, str(lang))

    @staticmethod
    def _csrf_refused(what: str) -> web.Response:
        log.warning("refused a %s without a valid CSRF token", what)
        return web.Response(status=403, text="403: missing or wrong CSRF token")

    def _require_session(self, request: web.Request) -> Session:
        s = self._session(request)
        if s is None:
            accept = request.headers.get("Accept", "")
            if request.method == "GET" and "text/html" in accept:
                raise web.HTTPSeeOther("/signin")
            raise web.HTTPUnauthorized(text="401: sign in first")
        return s

    # ---- sessions across restarts ----------------------------------------------------

    def load_sessions(self) -> None:
        """Take back the sessions saved before a restart; a bad file only signs staff out."""
        path = self.sessions_file
        if path is None:
            return
        try:
            doc = json.loads(path.read_text("utf-8"))
            n = self.sessions.restore(doc)
            self.devices.restore(doc.get("devices", []))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.warning("web: sessions in %s not restored, staff sign in again: %s", path, exc)
            return
        self._saved = self.sessions.version
        log.info("web: %d console sessions restored", n)

    async def save_sessions(self) -> None:
        """Write the live sessions (keys, never tokens) to the sessions file."""
        path = self.sessions_file
        if path is None:
            return
        version = self.sessions.version
        doc = {**self.sessions.dump(), "devices": self.devices.dump()}
        data = json.dumps(doc, separators=(",", ":")).encode()
        try:
            await asyncio.to_thread(_write_private_in, path, data)
        except OSError as exc:
            log.warning(
                "web: cannot save sessions to %s (a restart signs staff out): %s", path, exc
            )
            return
        self._saved = version

    async def keep_sessions(self) -> None:
        """Save the sessions soon after a sign-in or sign-out, and their idle times now and then."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(_SESSIONS_CHECK_S)
            now = time.monotonic()
            # Idle times only while there are sessions: no writes to the card for nothing.
            stale = len(self.sessions) > 0 and now - last >= _SESSIONS_SAVE_S
            if self.sessions.version != self._saved or stale:
                await self.save_sessions()
                last = now

    async def no_content(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=204)

    async def root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPSeeOther(f"/kiosk/{self.cfg.kiosk.ids[0]}")

    # ---- sign in / out ---------------------------------------------------------------

    async def signin_form(self, request: web.Request) -> web.StreamResponse:
        if self._session(request) is not None:
            raise web.HTTPSeeOther("/console")
        lang = self._console_lang(request)
        token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
        resp = _html(pages.signin_page(token, lang))
        self._cookie(resp, SIGNIN_COOKIE, token, path="/signin")
        self._keep_lang(request, resp, lang)
        return resp

    async def signin(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request)
        cookie = request.cookies.get(SIGNIN_COOKIE)
        if cookie is None or not tokens_match(form.get("csrf"), cookie):
            return self._csrf_refused("sign-in")
        lang = self._console_lang(request)
        staff_id = form.get("staff_id", "").strip()[:64]
        secret = form.get("secret", "")
        ip = request.remote or "?"
        device_token = request.cookies.get(DEVICE_COOKIE)
        device = self.devices.trusted(staff_id, device_token)
        # A device this staff member signed in on before answers only for its own wrong
        # PINs; anyone else is limited per address and per staff id, so a stranger's
        # guesses lock out strangers and new devices, never the staff member's own.
        keys = [f"dev:{device}"] if device is not None else [f"ip:{ip}", f"id:{staff_id}"]
        locked = max(self.signin_limit.locked_for(k) for k in keys)
        if locked > 0:
            self.signin_refusals.refused(ip, f"locked for {locked:.0f} s")
            resp = _html(
                pages.signin_page(
                    cookie,
                    lang,
                    error=t("c_locked", lang).format(n=int(locked) + 1),
                    staff_id=staff_id,
                ),
                status=429,
            )
            resp.headers["Retry-After"] = str(int(locked) + 1)
            return resp
        # Counted as a failure before the (slow) check, so that parallel attempts cannot
        # all slip past the lockout while their hashes are being computed.
        for k in keys:
            self.signin_limit.failure(k)
        member = self.staff.get().get(staff_id)
        ok = await asyncio.to_thread(
            verify_secret, secret, member.hash if member is not None else _DUMMY_HASH
        )
        if member is None or not ok:
            log.warning("failed sign-in of %r from %s", staff_id, ip)
            if device is not None and self.signin_limit.locked_for(keys[0]) > 0:
                self.devices.forget(device)  # too many wrong PINs: a device like any other
            # Slows a guesser down; parallel guesses are stopped by the count above.
            await asyncio.sleep(_FAILURE_DELAY_S)
            return _html(
                pages.signin_page(cookie, lang, error=t("c_wrong", lang), staff_id=staff_id),
                status=401,
            )
        for k in keys:
            self.signin_limit.success(k)
        session = self.sessions.create(member.id, member.name or member.id)
        log.info("staff %s signed in from %s", member.id, ip)
        resp = web.HTTPSeeOther("/console")
        self._cookie(resp, SESSION_COOKIE, session.token)
        self._cookie(
            resp,
            DEVICE_COOKIE,
            self.devices.trust(member.id, device_token),
            path="/signin",
            max_age=int(self.devices.ttl_s),
        )
        resp.del_cookie(SIGNIN_COOKIE, path="/signin")
        raise resp

    async def signout(self, request: web.Request) -> web.StreamResponse:
        s = self._require_session(request)
        form = await self._form(request)
        if not tokens_match(form.get("csrf") or request.headers.get("X-CSRF-Token"), s.csrf):
            return self._csrf_refused("sign-out")
        self.sessions.drop(s.key)
        # Wake the event streams so that this session's ends now, not at the heartbeat.
        self.live.console.publish("recheck", {})
        log.info("staff %s signed out", s.staff_id)
        resp = web.HTTPSeeOther("/signin")
        resp.del_cookie(SESSION_COOKIE, path="/")
        raise resp

    # ---- console ---------------------------------------------------------------------

    async def console(self, request: web.Request) -> web.StreamResponse:
        s = self._require_session(request)
        lang = self._console_lang(request)
        resp = _html(
            pages.console_page(
                staff_name=s.name,
                csrf=s.csrf,
                alarms=self.live.alarm_snapshot(),
                devices=self.live.devices.values(),
                engine_running=self.live.alarms is not None,
                site=self.live.site_name or self.identity.site,
                lang=lang,
                zone=self.zone,
            )
        )
        self._keep_lang(request, resp, lang)
        return resp

    async def console_place(self, request: web.Request) -> web.StreamResponse:
        """One cell of the building view (`?b=&f=&u=`): devices, alarms, meters' 24 h."""
        s = self._require_session(request)
        lang = self._console_lang(request)
        q = request.query
        where = Place(q.get("b", "")[:64], q.get("f", "")[:16], q.get("u", "")[:64])
        now = datetime.now(UTC)
        devices, alarms, usage = at_place(self.live, where, now)
        page = pages.place_page(
            staff_name=s.name,
            csrf=s.csrf,
            where=where,
            alarms=alarms,
            devices=devices,
            usage=usage,
            site=self.live.site_name or self.identity.site,
            lang=lang,
            zone=self.zone,
            now=now,
        )
        resp = _html(page, status=200 if devices else 404)
        self._keep_lang(request, resp, lang)
        return resp

    def _state(self) -> dict[str, Any]:
        # `now` lets the page's script reckon ages by the gateway's clock, not the tablet's.
        return {
            "now": format_ts(datetime.now(UTC)),
            "alarms": self.live.console_alarms(),
            "devices": [self.live.console_device(d) for d in self.live.devices.values()],
        }

    async def console_state(self, request: web.Request) -> web.StreamResponse:
        self._require_session(request)
        return web.json_response(self._state())

    async def console_events(self, request: web.Request) -> web.StreamResponse:
        s = self._session(request)
        if s is None and "text/event-stream" in request.headers.get("Accept", ""):
            # An EventSource cannot read a 401: tell the page in its own terms to sign in,
            # and keep a page that does not listen from reconnecting in a tight loop.
            resp = web.StreamResponse(headers=_SSE_HEADERS)
            await resp.prepare(request)
            await resp.write(b"retry: 60000\n\n" + _session_ended("no-session"))
            await resp.write_eof()
            return resp
        if s is None:
            s = self._require_session(request)
        key, staff_id = s.key, s.staff_id

        def ended() -> str | None:
            # An open stream is use of the session: every write refreshes it, so a console
            # left open stays signed in; it still ends at once with a sign-out or removal.
            if staff_id not in self.staff.get():
                self.sessions.drop_staff(staff_id)
                return "removed"
            return None if self.sessions.touch(key) else "signed-out"

        # Heartbeats often enough that an open stream keeps even a short session alive.
        beat = min(_HEARTBEAT_S, self.cfg.session_idle_s / 4)
        return await self._stream(
            request,
            "console",
            self.live.console,
            "snapshot",
            self._state,
            ended=ended,
            heartbeat_s=beat,
        )

    async def ack(self, request: web.Request) -> web.StreamResponse:
        s = self._require_session(request)
        form = await self._form(request)
        if not tokens_match(form.get("csrf") or request.headers.get("X-CSRF-Token"), s.csrf):
            return self._csrf_refused("acknowledgement")
        wants_json = "application/json" in request.headers.get("Accept", "")
        alarm_id = request.match_info["alarm_id"]
        engine = self.live.alarms
        if engine is None:
            return web.Response(status=503, text="503: the alarm engine is not running")
        try:
            outcome = await engine.acknowledge(
                alarm_id, by=s.staff_id, note=form.get("note", ""), via="web"
            )
        except LookupError:
            return self._ack_error(request, wants_json, 404, f"no alarm {alarm_id!r}")
        except ValueError as exc:
            return self._ack_error(request, wants_json, 400, str(exc))
        log.info("staff %s acknowledged alarm %s (%s)", s.staff_id, alarm_id, outcome.status)
        if wants_json:
            return web.json_response(
                {"status": outcome.status, "alarm": self.live.console_alarm(outcome.alarm)}
            )
        raise web.HTTPSeeOther("/console")

    def _ack_error(
        self, request: web.Request, wants_json: bool, status: int, text: str
    ) -> web.Response:
        if wants_json:
            return web.json_response({"error": text, "code": _ERROR_CODES[status]}, status=status)
        lang = self._console_lang(request)
        return _html(
            pages.message_page(t("c_not_acked", lang), text, "/console", lang), status=status
        )

    async def _stream(
        self,
        request: web.Request,
        screen: str,
        hub: Any,
        first_event: str,
        first: Callable[[], Any],
        transform: Callable[[Any], Any] = lambda data: data,
        ended: Callable[[], str | None] = lambda: None,
        heartbeat_s: float = _HEARTBEAT_S,
    ) -> web.StreamResponse:
        """Server-sent events: a snapshot first, then each change, and a heartbeat.

        `ended` is asked before each write; a reason it gives is sent as the last event
        (`session-ended`), so the page knows to sign in instead of reconnecting.
        """
        caps = self.stream_caps[screen]
        client = request.remote or "?"
        why = caps.acquire(client)
        if why is not None:
            # Before anything is prepared or subscribed: the refusal costs one short reply,
            # and the connection closes so its file descriptor is free at once.
            self.stream_refusals.refused(client, f"{why} cap of {screen} streams reached")
            cls = web.HTTPTooManyRequests if why == "client" else web.HTTPServiceUnavailable
            raise cls(
                text=f"{cls.status_code}: too many open event streams; retry later",
                headers={"Retry-After": "30", "Connection": "close"},
            )
        try:
            return await self._stream_held(
                request, hub, first_event, first, transform, ended, heartbeat_s
            )
        finally:
            caps.release(client)

    async def _stream_held(
        self,
        request: web.Request,
        hub: Any,
        first_event: str,
        first: Callable[[], Any],
        transform: Callable[[Any], Any],
        ended: Callable[[], str | None],
        heartbeat_s: float,
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        q = hub.subscribe()
        try:
            await resp.write(b"retry: 5000\n\n" + _sse(first_event, transform(first())))
            while True:
                reason = ended()
                if reason is not None:
                    await resp.write(_session_ended(reason))
                    break
                item = await _next_or_gone(request, q, heartbeat_s)
                if item is _Tick.GONE:  # the client went away: give its place back now
                    break
                if item is _Tick.BEAT:
                    # An event, not a comment: the page can see it and know it is live.
                    await resp.write(_sse("ping", {"now": format_ts(datetime.now(UTC))}))
                    continue
                if item is None:  # gateway stopping, or the client fell behind
                    break
                event, data = item
                if event != "recheck":  # only wakes the streams to ask `ended` again
                    await resp.write(_sse(event, transform(data)))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            hub.unsubscribe(q)
        return resp

    # ---- kiosk -----------------------------------------------------------------------

    def _kiosk_id(self, request: web.Request) -> str:
        kiosk = request.match_info["kiosk"]
        if kiosk not in self.cfg.kiosk.ids:
            raise web.HTTPNotFound(text="404: no such kiosk")
        return kiosk

    def _lang(self, request: web.Request, form: dict[str, str] | None = None) -> Lang:
        raw = (form or {}).get("lang") or request.query.get("lang", "")
        try:
            return Lang(raw)
        except ValueError:
            return self.cfg.kiosk.default_lang

    async def kiosk_home(self, request: web.Request) -> web.StreamResponse:
        kiosk = self._kiosk_id(request)
        return _html(pages.kiosk_home_page(kiosk, self._lang(request), self.live.banner()))

    def _kiosk_form(
        self,
        request: web.Request,
        kiosk: str,
        lang: Lang,
        category: Category,
        *,
        error: str = "",
        values: dict[str, str] | None = None,
        status: int = 200,
    ) -> web.Response:
        token = request.cookies.get(KIOSK_COOKIE) or secrets.token_urlsafe(24)
        resp = _html(
            pages.kiosk_form_page(
                kiosk, lang, category, token, self.live.banner(), error=error, values=values
            ),
            status=status,
        )
        self._cookie(resp, KIOSK_COOKIE, token, path="/kiosk/")
        return resp

    async def kiosk_form(self, request: web.Request) -> web.StreamResponse:
        kiosk = self._kiosk_id(request)
        try:
            category = Category(request.match_info["category"])
        except ValueError as exc:
            raise web.HTTPNotFound(text="404: no such kind of request") from exc
        return self._kiosk_form(request, kiosk, self._lang(request), category)

    async def kiosk_file(self, request: web.Request) -> web.StreamResponse:
        kiosk = self._kiosk_id(request)
        form = await self._form(request)
        cookie = request.cookies.get(KIOSK_COOKIE)
        if cookie is None or not tokens_match(form.get("csrf"), cookie):
            return self._csrf_refused("kiosk request")
        lang = self._lang(request, form)
        try:
            req = ServiceRequest.validate(
                kiosk=kiosk,
                category=form.get("category", ""),
                flat=form.get("flat", ""),
                phone=form.get("phone", ""),
                text=form.get("text", ""),
                lang=str(lang),
            )
        except RequestError as exc:
            if exc.field == "category":
                raise web.HTTPSeeOther(f"/kiosk/{kiosk}?lang={lang}") from exc
            return self._kiosk_form(
                request,
                kiosk,
                lang,
                Category(form["category"]),
                error=f"{t('bad_input', lang)}: {exc}",
                values=form,
                status=400,
            )
        client = request.remote or "?"
        # Per client first, so that one client's posts use up its own budget and never
        # the kiosk's ceiling for everybody.
        wait = self.kiosk_client_limit.retry_after(f"{kiosk}:{client}") or (
            self.kiosk_limit.retry_after(kiosk)
        )
        if wait > 0:
            self.kiosk_refusals.refused(client, f"kiosk {kiosk}: request limit reached")
            resp = self._kiosk_form(
                request,
                kiosk,
                lang,
                req.category,
                error=self._call_office(t("too_many", lang), lang),
                values=form,
                status=429,
            )
            resp.headers["Retry-After"] = str(int(wait) + 1)
            return resp
        req = await self.store.file(req)
        log.info("kiosk %s: %s request %s filed", kiosk, req.category, req.code)
        raise web.HTTPSeeOther(f"/kiosk/{kiosk}/filed/{req.code}?lang={lang}")

    def _call_office(self, text: str, lang: Lang) -> str:
        phone = self.cfg.kiosk.office_phone
        return f"{text} {t('call_office', lang).format(phone=phone)}" if phone else text

    async def _look_up(
        self, request: web.Request, kiosk: str, lang: Lang, code: str | None
    ) -> tuple[ServiceRequest, list[StatusEntry]] | None:
        """A request by its code; a client that tried too many unknown codes gets 429."""
        if code is None:
            return None
        client = request.remote or "?"
        wait = self.code_limit.blocked_for(client)
        if wait > 0:
            self.code_refusals.refused(client, "too many unknown request codes")
            raise web.HTTPTooManyRequests(
                text=pages.message_page(
                    t("too_many_codes", lang),
                    self._call_office("", lang).strip(),
                    f"/kiosk/{kiosk}?lang={lang}",
                    lang,
                ),
                content_type="text/html",
                headers={"Retry-After": str(int(wait) + 1)},
            )
        found = await self.store.history(code)
        if found is None:
            # Only unknown codes count: a resident's page re-reading its own code's
            # progress never runs into the limit, a guesser does.
            self.code_limit.retry_after(client)
        return found

    async def kiosk_filed(self, request: web.Request) -> web.StreamResponse:
        kiosk = self._kiosk_id(request)
        lang = self._lang(request)
        code = normalise_code(request.match_info["code"])
        found = await self._look_up(request, kiosk, lang, code)
        if found is None:
            raise web.HTTPSeeOther(f"/kiosk/{kiosk}/status?lang={lang}")
        req, history = found
        return _html(
            pages.kiosk_filed_page(kiosk, lang, req, history, self.live.banner(), self.zone)
        )

    async def kiosk_status(self, request: web.Request) -> web.StreamResponse:
        kiosk = self._kiosk_id(request)
        lang = self._lang(request)
        typed = request.query.get("code", "")[:32]
        found = await self._look_up(request, kiosk, lang, normalise_code(typed))
        return _html(
            pages.kiosk_status_page(
                kiosk,
                lang,
                self.live.banner(),
                self.zone,
                code=typed,
                found=found,
                not_found=bool(typed) and found is None,
            )
        )

    async def kiosk_events(self, request: web.Request) -> web.StreamResponse:
        self._kiosk_id(request)
        lang = self._lang(request)
        return await self._stream(
            request,
            "kiosk",
            self.live.kiosk,
            "banner",
            self.live.banner,
            lambda banner: pages.banner_lines(banner, lang),
        )


class _Tick(Enum):
    BEAT = "beat"
    GONE = "gone"


async def _next_or_gone(
    request: web.Request, q: asyncio.Queue[tuple[str, Any] | None], heartbeat_s: float
) -> tuple[str, Any] | _Tick | None:
    """The hub's next item; BEAT when a heartbeat is due; GONE when the client left.

    A closed connection is seen only when written to, so it is looked at every second:
    a stream's place under the caps is free a second after its client left, not at the
    next heartbeat.
    """
    loop = asyncio.get_running_loop()
    due = loop.time() + heartbeat_s
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return _Tick.GONE
        left = due - loop.time()
        if left <= 0:
            return _Tick.BEAT
        try:
            return await asyncio.wait_for(q.get(), min(left, _GONE_CHECK_S))
        except TimeoutError:
            continue


def _write_private_in(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, data)


def _session_ended(reason: str) -> bytes:
    return _sse("session-ended", {"reason": reason, "signin": "/signin"})


def _sse(event: str, data: Any) -> bytes:
    # json.dumps never emits a raw newline, so one data: line carries the whole document.
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {text}\n\n".encode()
