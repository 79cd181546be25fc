"""The resident kiosk's routes: the home page, filing a request, a request's progress by code.

The kiosk has no session: its form carries a double-submit CSRF cookie.  Requests are
limited per client and per kiosk, and unknown request codes per client (so codes
cannot be guessed).
"""

from __future__ import annotations

import logging
import secrets

from aiohttp import web

from gateway.web.auth import WindowLimiter, tokens_match
from gateway.web.guard import RefusalLog
from gateway.web.i18n import t
from gateway.web.kiosk_pages import (
    banner_lines,
    kiosk_filed_page,
    kiosk_form_page,
    kiosk_home_page,
    kiosk_status_page,
)
from gateway.web.live import LiveState
from gateway.web.page import message_page
from gateway.web.requests import (
    Category,
    RequestError,
    RequestStore,
    ServiceRequest,
    StatusEntry,
    normalise_code,
)
from gateway.web.responses import csrf_refused, html_response, read_form, set_cookie
from gateway.web.settings import Lang, WebConfig
from gateway.web.streams import EventStreams

__all__ = ["KIOSK_COOKIE", "KioskRoutes"]

log = logging.getLogger(__name__)

KIOSK_COOKIE = "gw_kiosk_csrf"


class KioskRoutes:
    """The kiosk's request handlers over the live state and the request store."""

    def __init__(
        self, cfg: WebConfig, *, live: LiveState, store: RequestStore, streams: EventStreams
    ) -> None:
        self.cfg = cfg
        self.live = live
        self.store = store
        self.streams = streams
        self.kiosk_limit = WindowLimiter(cfg.kiosk.max_requests, cfg.kiosk.window_s)
        self.kiosk_client_limit = WindowLimiter(
            cfg.kiosk.max_requests_per_client, cfg.kiosk.window_s
        )
        self.kiosk_refusals = RefusalLog("kiosk requests", cfg.limits.log_every_s)
        self.code_limit = WindowLimiter(
            cfg.limits.wrong_codes_per_client, cfg.limits.wrong_codes_window_s
        )
        self.code_refusals = RefusalLog("request-code lookups", cfg.limits.log_every_s)
        self.secure_cookies = cfg.tls is not None
        self.zone = live.zone

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
        return html_response(kiosk_home_page(kiosk, self._lang(request), self.live.banner()))

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
        resp = html_response(
            kiosk_form_page(
                kiosk, lang, category, token, self.live.banner(), error=error, values=values
            ),
            status=status,
        )
        set_cookie(resp, KIOSK_COOKIE, token, secure=self.secure_cookies, path="/kiosk/")
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
        form = await read_form(request)
        cookie = request.cookies.get(KIOSK_COOKIE)
        if cookie is None or not tokens_match(form.get("csrf"), cookie):
            return csrf_refused("kiosk request")
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
                text=message_page(
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
        return html_response(
            kiosk_filed_page(kiosk, lang, req, history, self.live.banner(), self.zone)
        )

    async def kiosk_status(self, request: web.Request) -> web.StreamResponse:
        kiosk = self._kiosk_id(request)
        lang = self._lang(request)
        typed = request.query.get("code", "")[:32]
        found = await self._look_up(request, kiosk, lang, normalise_code(typed))
        return html_response(
            kiosk_status_page(
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
        return await self.streams.open(
            request,
            "kiosk",
            self.live.kiosk,
            "banner",
            self.live.banner,
            lambda banner: banner_lines(banner, lang),
        )
