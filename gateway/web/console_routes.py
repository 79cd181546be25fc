"""The staff console's routes: sign-in and sign-out, the overview, one place, acknowledgements.

Every console route needs a session cookie; every POST the session's CSRF token (the
sign-in form, which has no session, a double-submit cookie).  Sign-in failures are
rate-limited per client address and per staff id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import UTC, datetime

from aiohttp import web

from gateway.sdk.model import Identity
from gateway.web.auth import DeviceTrust, FailureLimiter, Session, SessionStore, tokens_match
from gateway.web.building import Place, at_place
from gateway.web.console_pages import console_page, place_page, signin_page
from gateway.web.guard import RefusalLog
from gateway.web.i18n import t
from gateway.web.live import LiveState
from gateway.web.page import message_page
from gateway.web.responses import (
    ERROR_CODES,
    csrf_refused,
    html_response,
    read_form,
    set_cookie,
)
from gateway.web.settings import Lang, WebConfig
from gateway.web.staff import StaffCache, verify_secret
from gateway.web.streams import HEARTBEAT_S, SSE_HEADERS, EventStreams, session_ended

__all__ = ["DEVICE_COOKIE", "LANG_COOKIE", "SESSION_COOKIE", "SIGNIN_COOKIE", "ConsoleRoutes"]

log = logging.getLogger(__name__)

SESSION_COOKIE = "gw_session"
SIGNIN_COOKIE = "gw_signin_csrf"
LANG_COOKIE = "gw_console_lang"
DEVICE_COOKIE = "gw_device"
_FAILURE_DELAY_S = 1.0
# A hash to check against when the staff id is unknown, so that an unknown id takes as
# long to refuse as a wrong PIN and does not reveal which ids exist.
_DUMMY_HASH = (
    "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
)


class ConsoleRoutes:
    """The console's request handlers over the live state, the staff file and the sessions."""

    def __init__(
        self,
        cfg: WebConfig,
        *,
        identity: Identity,
        live: LiveState,
        staff: StaffCache,
        sessions: SessionStore,
        devices: DeviceTrust,
        streams: EventStreams,
    ) -> None:
        self.cfg = cfg
        self.identity = identity
        self.live = live
        self.staff = staff
        self.sessions = sessions
        self.devices = devices
        self.streams = streams
        lim = cfg.signin
        self.signin_limit = FailureLimiter(lim.max_failures, lim.window_s, lim.lockout_s)
        self.signin_refusals = RefusalLog("sign-ins (locked out)", cfg.limits.log_every_s)
        self.secure_cookies = cfg.tls is not None
        self.zone = live.zone

    def _cookie(
        self,
        resp: web.StreamResponse,
        name: str,
        value: str,
        path: str = "/",
        max_age: int | None = None,
    ) -> None:
        set_cookie(resp, name, value, secure=self.secure_cookies, path=path, max_age=max_age)

    def _session(self, request: web.Request) -> Session | None:
        s = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if s is not None and s.staff_id not in self.staff.get():
            # Account removed with `gateway staff remove`: its sessions end now.
            self.sessions.drop_staff(s.staff_id)
            return None
        return s

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

    def _require_session(self, request: web.Request) -> Session:
        s = self._session(request)
        if s is None:
            accept = request.headers.get("Accept", "")
            if request.method == "GET" and "text/html" in accept:
                raise web.HTTPSeeOther("/signin")
            raise web.HTTPUnauthorized(text="401: sign in first")
        return s

    async def signin_form(self, request: web.Request) -> web.StreamResponse:
        if self._session(request) is not None:
            raise web.HTTPSeeOther("/console")
        lang = self._console_lang(request)
        token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
        resp = html_response(signin_page(token, lang))
        self._cookie(resp, SIGNIN_COOKIE, token, path="/signin")
        self._keep_lang(request, resp, lang)
        return resp

    async def signin(self, request: web.Request) -> web.StreamResponse:
        form = await read_form(request)
        cookie = request.cookies.get(SIGNIN_COOKIE)
        if cookie is None or not tokens_match(form.get("csrf"), cookie):
            return csrf_refused("sign-in")
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
            resp = html_response(
                signin_page(
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
            return html_response(
                signin_page(cookie, lang, error=t("c_wrong", lang), staff_id=staff_id),
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
        form = await read_form(request)
        if not tokens_match(form.get("csrf") or request.headers.get("X-CSRF-Token"), s.csrf):
            return csrf_refused("sign-out")
        self.sessions.drop(s.key)
        # Wake the event streams so that this session's ends now, not at the heartbeat.
        self.live.console.publish("recheck", {})
        log.info("staff %s signed out", s.staff_id)
        resp = web.HTTPSeeOther("/signin")
        resp.del_cookie(SESSION_COOKIE, path="/")
        raise resp

    async def console(self, request: web.Request) -> web.StreamResponse:
        s = self._require_session(request)
        lang = self._console_lang(request)
        resp = html_response(
            console_page(
                staff_name=s.name,
                csrf=s.csrf,
                alarms=self.live.alarm_snapshot(),
                devices=self.live.devices.values(),
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
        page = place_page(
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
        resp = html_response(page, status=200 if devices else 404)
        self._keep_lang(request, resp, lang)
        return resp

    async def console_state(self, request: web.Request) -> web.StreamResponse:
        self._require_session(request)
        return web.json_response(self.live.console_snapshot())

    async def console_events(self, request: web.Request) -> web.StreamResponse:
        s = self._session(request)
        if s is None and "text/event-stream" in request.headers.get("Accept", ""):
            # An EventSource cannot read a 401: tell the page in its own terms to sign in,
            # and keep a page that does not listen from reconnecting in a tight loop.
            resp = web.StreamResponse(headers=SSE_HEADERS)
            await resp.prepare(request)
            await resp.write(b"retry: 60000\n\n" + session_ended("no-session"))
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
        beat = min(HEARTBEAT_S, self.cfg.session_idle_s / 4)
        return await self.streams.open(
            request,
            "console",
            self.live.console,
            "snapshot",
            self.live.console_snapshot,
            ended=ended,
            heartbeat_s=beat,
        )

    async def ack(self, request: web.Request) -> web.StreamResponse:
        s = self._require_session(request)
        form = await read_form(request)
        if not tokens_match(form.get("csrf") or request.headers.get("X-CSRF-Token"), s.csrf):
            return csrf_refused("acknowledgement")
        wants_json = "application/json" in request.headers.get("Accept", "")
        alarm_id = request.match_info["alarm_id"]
        try:
            outcome = await self.live.alarms.acknowledge(
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
            return web.json_response({"error": text, "code": ERROR_CODES[status]}, status=status)
        lang = self._console_lang(request)
        return html_response(
            message_page(t("c_not_acked", lang), text, "/console", lang), status=status
        )
