"""What every response of the web shares: HTML replies, security headers, JSON errors, forms.

Every POST needs a CSRF token (the session's for the console, a double-submit cookie
for the sign-in form and the kiosk, which have no session); `csrf_refused` is the one
answer to a missing or wrong one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.web.guard import SECURITY_HEADERS, SERVER_NAME

__all__ = [
    "ERROR_CODES",
    "Handler",
    "csrf_refused",
    "html_response",
    "json_errors",
    "read_form",
    "security_headers",
    "set_cookie",
]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def html_response(text: str, status: int = 200) -> web.Response:
    """An HTML page as a response."""
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def security_headers(request: web.Request, resp: web.StreamResponse) -> None:
    """Headers every response carries, set as it is prepared: so also redirects, 401/404/413
    raised as exceptions (inside aiohttp too) and refusals, which a middleware never sees."""
    for name, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)
    resp.headers["Server"] = SERVER_NAME
    if request.path.startswith(("/console", "/signin", "/kiosk")):
        resp.headers.setdefault("Cache-Control", "no-store")


ERROR_CODES = {
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
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
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
    doc = {"error": text, "code": ERROR_CODES.get(resp.status, "error")}
    if resp.status == 401:
        doc["signin"] = "/signin"
    out = web.json_response(doc, status=resp.status)
    for name in ("Retry-After", "Connection"):
        if name in resp.headers:
            out.headers[name] = resp.headers[name]
    return out


async def read_form(request: web.Request) -> dict[str, str]:
    """The posted form's text fields; 400 for a malformed body."""
    try:
        data = await request.post()
    except ValueError as exc:  # malformed body
        # Not the parser's message: it may quote what the client sent.
        raise web.HTTPBadRequest(text="400: malformed form") from exc
    return {k: v for k, v in data.items() if isinstance(v, str)}


def csrf_refused(what: str) -> web.Response:
    """The refusal of a POST without a valid CSRF token (logged: it is an attack or a bug)."""
    log.warning("refused a %s without a valid CSRF token", what)
    return web.Response(status=403, text="403: missing or wrong CSRF token")


def set_cookie(
    resp: web.StreamResponse,
    name: str,
    value: str,
    *,
    secure: bool,
    path: str = "/",
    max_age: int | None = None,
) -> None:
    """Set a cookie the page's scripts cannot read and other sites never send."""
    resp.set_cookie(
        name,
        value,
        path=path,
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=secure,
    )
